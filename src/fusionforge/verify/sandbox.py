"""Running candidate code in a child process: its own process group, a timeout, captured output, and a
sealed result.

The timeout is a watchdog: the child has ``timeout`` seconds from its start, and again from each output file it
saves (``*.pt``: a call of the wrapper done, in the checker's child an input set's), up to ``PROGRESS_CAP`` times
``timeout`` in all. A hang is killed ``timeout`` seconds after the last call that finished; a long check that keeps
finishing calls (many autotune configs run at every shape, on the CPU's interpreter) is not.

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
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NoReturn

from fusionforge.gpus import idle_group, lane_environment, park, pausing_gate, unpark

OUTPUT_CAP = 16 * 1024  # bytes of the candidate's stdout/stderr kept
PROGRESS_CAP = 4  # a child that keeps saving outputs runs at most this many timeouts in all
SANITIZER_EXIT = 86  # compute-sanitizer's exit code when it found errors (the child itself ended normally)
ERROR_EXITS = (SANITIZER_EXIT,)

RESULT = "result.json"
OUTPUTS = "*.pt"  # the output files a child leaves for its parent, sealed with the result

_running: set[int] = set()  # process groups of the children alive now (several threads may run children)
_running_lock = threading.Lock()


def idle_on_gpu(pid: int) -> bool:
    """Whether process ``pid`` belongs to a child that holds the GPU's memory but runs nothing there: a
    ready child waiting for "go" (only trusted code has run in it so far), or one paused for a timing."""
    try:
        return idle_group(os.getpgid(pid))
    except (ProcessLookupError, PermissionError):
        return False


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

    def __init__(self, key: bytes | None = None, keep_stdin: bool = False) -> None:
        import _hashlib

        if key is None:
            key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
            if not keep_stdin:  # a child that waits for "go" (``Child``) closes it after reading that
                sys.stdin.close()
        self._key = key
        self._sign = _hashlib.hmac_digest
        self._digests: dict[str, str] = {}

    def saved(self, path: Path) -> None:
        """Note an output file's SHA-256 as soon as it is written: the file's code runs again before the result
        is sealed (its PyTorch function, the next calls), and could rewrite a file hashed only then."""
        self._digests[path.name] = _digest(path)

    def write(self, out_dir: Path, result: dict) -> None:
        """``result.json``: the result and the SHA-256 of every output file as it was written, under an HMAC (an
        output file the child did not write is one too many for the parent)."""
        body = json.dumps({"result": result, "files": dict(sorted(self._digests.items()))})
        mac = self._sign(self._key, body.encode(), "sha256").hex()
        (out_dir / RESULT).write_text(json.dumps({"body": body, "mac": mac}))


def die_with_parent() -> None:
    """Have the kernel kill this child if the thread that started it ends (Linux; elsewhere nothing): a
    child paused for a timing would otherwise outlive a parent killed meanwhile, holding its GPU memory."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def exit_at_once(code: int) -> NoReturn:
    """End a child whose result is sealed without Python's and CUDA's teardown (a second or more in a
    process that used the GPU, while its parent waits, a timing with the GPU alone); the parent kills the
    child's process group once it has ended anyway."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def ready_and_wait(ready_fd: int | None) -> bool:
    """The child's side of ``Child.wait_ready`` and ``Child.go``: say it is ready, wait for "go" on stdin
    (then close it); False when the parent let it go without one (it is no longer wanted). A child run
    without a ready pipe (``run_child``) goes on at once."""
    if ready_fd is None:
        sys.stdin.close()
        return True
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    line = sys.stdin.buffer.readline()
    sys.stdin.close()
    return line.strip() == b"go"


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
        return None, "output files were added or removed after the checker's child wrote them"
    changed = [name for name, digest in payload["files"].items() if _digest(files[name]) != digest]
    if changed:
        return None, f"{changed[0]} was changed after the checker's child wrote it"
    return payload["result"], None


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - OUTPUT_CAP))
        return f.read().decode("utf-8", errors="replace")


class Child:
    """A child process started by ``start_child``, in its own process group, that may first get ready.

    A child started with ``ready=True`` prepares (whatever comes before the candidate's code), says so on a
    pipe (``wait_ready``), and waits for ``go`` on its stdin; ``finish`` then waits for it to end and
    unseals its result. ``close`` kills the whole group, whatever its state.
    """

    def __init__(self, module: str, request: dict, scratch: Path, device: str, ready: bool,
                 prefix: list[str] | None, env_extra: dict | None) -> None:
        self.scratch = scratch
        self._closed = False
        ready_read, ready_write = os.pipe() if ready else (None, None)
        request = {**request, "ready_fd": ready_write}
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
        self.key = secrets.token_bytes(32)
        self._gate = pausing_gate()  # a timing on this GPU pauses the child, and its time limits wait
        try:
            with open(scratch / "output.log", "wb") as out, \
                    self._gate.starting_child() if self._gate else nullcontext(None) as register:
                self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", module, str(request_path)],
                                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                             cwd=scratch, start_new_session=True,
                                             pass_fds=(ready_write,) if ready else ())
                self._paused_before = register(self.proc.pid) if register else 0.0
        except BaseException:
            for fd in (ready_read, ready_write):
                if fd is not None:
                    os.close(fd)
            raise
        with _running_lock:
            _running.add(self.proc.pid)
        self._ready = os.fdopen(ready_read, "rb", buffering=0) if ready else None
        if ready:
            os.close(ready_write)  # the child holds the only write end: its exit ends a wait for ready
        self._send(self.key.hex().encode() + b"\n", close=not ready)

    def _send(self, line: bytes, close: bool) -> None:
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
            if close:
                self.proc.stdin.close()
        except (BrokenPipeError, ValueError):  # the child is already gone; its exit code says why
            pass

    def _left(self, started: float, timeout: float) -> float:
        """Seconds left of ``timeout`` from ``started`` (monotonic), not counting the time spent paused."""
        paused = self._gate.paused_seconds() - self._paused_before if self._gate else 0.0
        return started + timeout + paused - time.monotonic()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the child says it is ready; False when it ended (or the time ran out) first."""
        poller = select.poll()
        poller.register(self._ready, select.POLLIN)
        started = time.monotonic()
        while not (said := bool(poller.poll(max(0.0, min(self._left(started, timeout), 1.0)) * 1000))):
            if self._left(started, timeout) <= 0:
                break
        ready = said and self._ready.read(1) == b"r"
        if ready:
            park(self.proc.pid)
        return ready

    def go(self) -> None:
        """Let a ready child go on (with the GPU alone: it leaves its gate's paused children)."""
        unpark(self.proc.pid)
        if self._gate is not None:
            self._gate.release_child(self.proc.pid)
            self._gate = None
        self._send(b"go\n", close=True)

    def finish(self, timeout: float) -> tuple[dict | None, int | None, str]:
        """Wait for the child to end; (sealed result, or ``{"forged": why}``; returncode or None on timeout;
        the output's tail). ``timeout`` counts again from each output the child saves, PROGRESS_CAP times it at
        most (the module docstring). The whole group is killed when the child ends or times out."""
        started = first = time.monotonic()
        saved = self._saved()
        returncode = None
        try:
            while returncode is None and (left := self._left(started, timeout)) > 0:
                try:
                    returncode = self.proc.wait(timeout=min(left, 1.0))
                except subprocess.TimeoutExpired:
                    if (now_saved := self._saved()) > saved:
                        saved = now_saved
                        started = min(time.monotonic(), first + (PROGRESS_CAP - 1) * timeout)
        finally:
            self.close()
        result = None
        if returncode in (0, *ERROR_EXITS) and (self.scratch / RESULT).exists():
            result, forged = unseal(self.scratch, self.key)
            if forged is not None:
                result = {"forged": forged}
        return result, returncode, _tail(self.scratch / "output.log")

    def _saved(self) -> int:
        """The outputs the child has saved so far."""
        return sum(1 for _ in self.scratch.glob("*.pt"))

    def close(self) -> None:
        """Kill the child's process group (if still there) and reap it; once only (its id may be reused)."""
        if self._closed:
            return
        self._closed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with _running_lock:
            _running.discard(self.proc.pid)  # before the wait reaps it: its id may then be reused
        unpark(self.proc.pid)
        if self._gate is not None:
            self._gate.release_child(self.proc.pid)
        self.proc.wait()
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass


def start_child(module: str, request: dict, scratch: Path, device: str, ready: bool = False,
                prefix: list[str] | None = None, env_extra: dict | None = None) -> Child:
    """Start ``python -m module REQUEST`` in a fresh process group (``Child``); with ``ready`` it first
    prepares, then waits for ``Child.go``. The request gets ``ready_fd``: the pipe to say it is ready on."""
    return Child(module, request, scratch, device, ready, prefix, env_extra)


def run_child(module: str, request: dict, scratch: Path, device: str, timeout: float,
              prefix: list[str] | None = None, env_extra: dict | None = None) -> tuple[dict | None, int | None, str]:
    """Run ``python -m module REQUEST`` in a fresh process group; (result, returncode or None on timeout, tail).

    The child seals ``result.json`` in ``scratch`` with the key written to its stdin (``Seal``); a result
    whose seal does not hold comes back as ``{"forged": why}``. The whole group is killed when it ends or
    times out. ``prefix`` runs it under another program (compute-sanitizer), with ``env_extra`` set. In a
    lane (``fusionforge.gpus``) the child sees that lane's GPU only.
    """
    return start_child(module, request, scratch, device, prefix=prefix, env_extra=env_extra).finish(timeout)
