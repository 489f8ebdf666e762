"""Running candidate code in a child process: its own process group, a timeout, captured output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

OUTPUT_CAP = 16 * 1024  # bytes of the candidate's stdout/stderr kept
SANITIZER_EXIT = 86  # compute-sanitizer's exit code when it found errors (the child itself ended normally)
ERROR_EXITS = (SANITIZER_EXIT,)

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


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - OUTPUT_CAP))
        return f.read().decode("utf-8", errors="replace")


def run_child(module: str, request: dict, scratch: Path, device: str, timeout: float,
              prefix: list[str] | None = None, env_extra: dict | None = None) -> tuple[dict | None, int | None, str]:
    """Run ``python -m module REQUEST`` in a fresh process group; (result, returncode or None on timeout, tail).

    The child writes ``result.json`` into ``scratch``; the whole group is killed when it ends or times out.
    ``prefix`` runs it under another program (compute-sanitizer), with ``env_extra`` set.
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
    env.update(env_extra or {})
    log = scratch / "output.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", module, str(request_path)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=scratch, start_new_session=True)
        with _running_lock:
            _running.add(proc.pid)
        try:
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
    result_path = scratch / "result.json"
    result = json.loads(result_path.read_text()) if returncode in (0, *ERROR_EXITS) and result_path.exists() else None
    return result, returncode, _tail(log)
