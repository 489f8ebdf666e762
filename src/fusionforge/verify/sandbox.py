"""Running candidate code in a child process: its own process group, a timeout, captured output, and a
sealed result.

The child's result is sealed (``Seal``): the parent hands the child a fresh key on its stdin, which the
child reads before any candidate code runs; the child writes ``result.json`` as its result and the
SHA-256 of each output file, under an HMAC with that key. The parent refuses a result whose MAC or files
do not match: one written by the candidate itself (a file that writes result.json and exits) or changed
after the child's own code wrote it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

from fusionforge.gpus import lane_environment

OUTPUT_CAP = 16 * 1024  # bytes of the candidate's stdout/stderr kept
SANITIZER_EXIT = 86  # compute-sanitizer's exit code when it found errors (the child itself ended normally)
ERROR_EXITS = (SANITIZER_EXIT,)

RESULT = "result.json"
OUTPUTS = "*.pt"  # the output files a child leaves for its parent, sealed with the result

_running: set[int] = set()  # process groups of the children alive now (several threads may run children)
_running_lock = threading.Lock()


def kill_running() -> int:
    """Kill every child process group started by ``run_child`` and still alive; how many were killed.

    For an interrupt while worker threads wait on children: their ``run_child`` calls then return at
    once (as a child killed by a signal), instead of when the children would have finished.
    """
    with _running_lock:
        groups = list(_running)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(groups)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Seal:
    """The child's side of the seal: the parent's key, read from stdin before any candidate code runs, and
    the C function that signs with it, both bound here (a file cannot swap them or reach this object without
    a stack walk or a gc scan, which the guard refuses)."""

    def __init__(self, key: bytes | None = None) -> None:
        import _hashlib

        if key is None:
            key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
            sys.stdin.close()
        self._key = key
        self._sign = _hashlib.hmac_digest

    def write(self, out_dir: Path, result: dict) -> None:
        """``result.json``: the result and the SHA-256 of every output file, under an HMAC."""
        body = json.dumps({"result": result, "files": {p.name: _digest(p) for p in sorted(out_dir.glob(OUTPUTS))}})
        mac = self._sign(self._key, body.encode(), "sha256").hex()
        (out_dir / RESULT).write_text(json.dumps({"body": body, "mac": mac}))


def unseal(out_dir: Path, key: bytes) -> tuple[dict | None, str | None]:
    """The parent's side: (the child's result, None), or (None, why the seal does not hold)."""
    try:
        sealed = json.loads((out_dir / RESULT).read_text())
        body, mac = sealed["body"], sealed["mac"]
    except (ValueError, KeyError, TypeError):
        return None, "the result file is not the one the checker's child writes"
    if not hmac.compare_digest(hmac.new(key, body.encode(), "sha256").hexdigest(), str(mac)):
        return None, "the result file was written by something other than the checker's child (its seal is wrong)"
    payload = json.loads(body)
    files = {p.name: p for p in out_dir.glob(OUTPUTS)}
    if set(files) != set(payload["files"]):
        return None, "output files were added or removed after the checker's child sealed its result"
    changed = [name for name, digest in payload["files"].items() if _digest(files[name]) != digest]
    if changed:
        return None, f"{changed[0]} was changed after the checker's child sealed its result"
    return payload["result"], None


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - OUTPUT_CAP))
        return f.read().decode("utf-8", errors="replace")


def run_child(module: str, request: dict, scratch: Path, device: str, timeout: float,
              prefix: list[str] | None = None, env_extra: dict | None = None) -> tuple[dict | None, int | None, str]:
    """Run ``python -m module REQUEST`` in a fresh process group; (result, returncode or None on timeout, tail).

    The child seals ``result.json`` in ``scratch`` with the key written to its stdin (``Seal``); a result
    whose seal does not hold comes back as ``{"forged": why}``. The whole group is killed when it ends or
    times out. ``prefix`` runs it under another program (compute-sanitizer), with ``env_extra`` set. In a
    lane (``fusionforge.gpus``) the child sees that lane's GPU only.
    """
    request_path = scratch / "request.json"
    request_path.write_text(json.dumps(request))
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    env.update(lane_environment())
    env.update(env_extra or {})
    log = scratch / "output.log"
    with open(log, "wb") as out:
        key = secrets.token_bytes(32)
        proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", module, str(request_path)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                cwd=scratch, start_new_session=True)
        with _running_lock:
            _running.add(proc.pid)
        try:
            try:
                proc.stdin.write(key.hex().encode() + b"\n")
                proc.stdin.close()
            except BrokenPipeError:  # the child is already gone; its exit code says why
                pass
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            with _running_lock:
                _running.discard(proc.pid)  # before the wait reaps it: its id may then be reused
            proc.wait()
    result = None
    if returncode in (0, *ERROR_EXITS) and (scratch / RESULT).exists():
        result, forged = unseal(scratch, key)
        if forged is not None:
            result = {"forged": forged}
    return result, returncode, _tail(log)
