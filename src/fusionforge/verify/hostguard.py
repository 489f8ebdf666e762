"""What a wrapper must not do on the host, noticed as it happens in the checker's child.

A fair wrapper starts no thread or process, calls nothing through ctypes, scans no garbage-collector
lists, reads no tensor values into Python (``.item()``, ``.tolist()``, ``.numpy()``, NumPy's array
protocol, DLPack) and never steps outside the dispatch trace the checker keeps. The guard notes
these while it watches: during a wrapper call outside its launches, and, for threads, processes and gc
scans, while the candidate file is imported (a thread started there can do a wrapper's work unseen; a
scan there can find the checker's objects).

Processes, ctypes and gc scans are reported by Python's audit hooks (PEP 578), which code cannot
remove once added. Threads, host reads and disabled dispatch modes are seen at the Python entry
points patched here; a file that calls the C functions beneath them goes unnamed, and is then
caught by what it did: bytes no traced op or launch wrote (``ledger.py``).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

PROCESS_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                  "subprocess.Popen", "pty.spawn")
GC_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents")
HOST_READ_METHODS = ("numpy", "tolist", "__array__", "__dlpack__")


class HostGuard:
    def __init__(self) -> None:
        self.events: list[dict] = []  # where notes go: the list given to watch() or import_of()
        self.watching = False  # a wrapper call is running
        self.importing = False  # the candidate file is being imported
        self.monitor = None

    def _active(self) -> bool:
        return self.watching and not (self.monitor is not None and self.monitor.inside)

    def note(self, kind: str, detail: str, at_import: bool = False) -> None:
        if self._active() or (at_import and self.importing):
            where = " while the file was imported" if self.importing else ""
            event = {"kind": kind, "detail": detail + where}
            if event not in self.events:
                self.events.append(event)

    @contextmanager
    def watch(self, events: list):
        """Watch one wrapper call, appending what it does to ``events`` (the call's ledger problems)."""
        self.events, self.watching = events, True
        try:
            yield
        finally:
            self.watching = False

    @contextmanager
    def import_of(self, events: list):
        """Watch the candidate's import (threads and processes only), appending to ``events``."""
        self.events, self.importing = events, True
        try:
            yield
        finally:
            self.importing = False

    def install(self, monitor) -> None:
        """Hook everything once, before the candidate is imported."""
        import _thread
        import threading

        import torch
        import torch.utils._python_dispatch as python_dispatch

        self.monitor = monitor
        sys.addaudithook(self._audit)

        for module in (_thread, threading):
            for name in ("start_new_thread", "_start_new_thread", "start_joinable_thread", "_start_joinable_thread"):
                original = getattr(module, name, None)
                if original is not None:
                    setattr(module, name, self._noting(original, "thread", "starts a thread", at_import=True))
        for name in HOST_READ_METHODS:
            setattr(torch.Tensor, name, self._noting(getattr(torch.Tensor, name), "host_read",
                                                     f"Tensor.{name}() reads tensor values into the host"))
        python_dispatch._disable_current_modes = self._noting(
            python_dispatch._disable_current_modes, "left_trace",
            "disables the dispatch modes (torch.utils._python_dispatch._disable_current_modes)")

    def _noting(self, original, kind: str, detail: str, at_import: bool = False):
        def noted(*args, **kwargs):
            self.note(kind, detail, at_import)
            return original(*args, **kwargs)

        noted.__name__ = getattr(original, "__name__", "noted")
        noted.__doc__ = getattr(original, "__doc__", None)
        return noted

    def _audit(self, event: str, args: tuple) -> None:
        if not (self.watching or self.importing):
            return
        if event.startswith(PROCESS_EVENTS):
            self.note("process", f"starts a process ({event})", at_import=True)
        elif event.startswith("ctypes."):
            self.note("ctypes", f"calls into ctypes ({event})")
        elif event in GC_EVENTS:
            self.note("gc", f"scans the garbage collector's objects ({event})", at_import=True)
