"""What a wrapper must not do on the host, noticed as it happens in the checker's child.

A fair wrapper starts no thread or process, calls nothing through ctypes, scans no garbage-collector
lists, walks no frames of the interpreter's stack (where the checker's own objects are), reads no
tensor values into Python (``.item()``, ``.tolist()``, ``.numpy()``, NumPy's array protocol, DLPack)
and never steps outside the dispatch trace the checker keeps. The guard notes these while it watches:
during a wrapper call outside its launches, and, for threads, processes, gc scans and stack walks,
while the candidate file is imported (a thread started there can do a wrapper's work unseen; a scan or
a walk there can find the checker's objects).

Processes, ctypes, gc scans and stack walks are reported by Python's audit hooks (PEP 578), which
code cannot remove once added. Threads, host reads and disabled dispatch modes are seen at the Python
entry points patched here; a file that calls the C functions beneath them goes unnamed, and is then
caught by what it did: bytes no traced op or launch wrote (``ledger.py``).
"""

from __future__ import annotations

import os
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

PROCESS_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                  "subprocess.Popen", "pty.spawn")
GC_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents")
# The interpreter's stack holds the checker's (and the timer's) own objects, one f_back away from any frame.
STACK_EVENTS = ("sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile")
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})  # audited as object.__getattr__


def stack_access(event: str, args: tuple) -> str | None:
    """What an audit event says of a walk of the interpreter's stack (a frame taken, a tracer set), or None."""
    if event in STACK_EVENTS:
        return event
    if event == "object.__getattr__" and len(args) > 1 and args[1] in FRAME_ATTRIBUTES:
        return f"{type(args[0]).__name__}.{args[1]}"
    return None


PACKAGE = str(Path(__file__).resolve().parents[1])  # fusionforge itself: its frames are the checker's
TRITON = str(Path(__import__("triton").__file__).resolve().parent)  # inside a launch, Triton's frames are the launch's
LIBRARIES = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})  # where the installed modules live
STARTED = time.time()


def _library_import(frame) -> bool:
    """A frame running the body of an installed module (a lazy import inside torch, typing and the like),
    from a file that was there before this process started."""
    name = frame.f_code.co_filename
    if frame.f_code.co_name != "<module>" or not name.startswith(LIBRARIES):
        return False
    try:
        return os.stat(name).st_mtime < STARTED
    except OSError:
        return False


class FileFrames:
    """Whether the code that raised an audit event is the candidate file's: the nearest frame above the event
    that is the file's, fusionforge's or the body of an installed module being imported decides (a library
    such as inspect or typing walking the stack for its caller counts as whoever called it; a lazy import
    inside torch is torch's). Inside a launch, Triton's frames decide too: what Triton does is the launch's,
    what the file's code does there (a kernel body the interpreter runs, a function a kernel calls, which a
    GPU calls at compile time, an allocator) is the file's."""

    def __init__(self) -> None:
        self.file: str | None = None  # the candidate's path, as its code objects name it
        self._walking = False
        self._own_event = False

    def candidate_called(self, skip: int = 2, in_launch: bool = False) -> bool:
        """Whether the code ``skip`` frames above this call (default: its caller's caller) is the file's;
        ``in_launch``: a launch is running. A stack event raised while this walks is the file's unless it is the
        walk's own (the one ``sys._getframe`` below raises): any other comes from an audit hook run for that
        event, reaching for the frames being walked."""
        if self.file is None:
            return False
        if self._walking:
            own, self._own_event = self._own_event, False
            return not own
        self._walking = self._own_event = True
        try:
            frame = sys._getframe(skip)
            while frame is not None:
                name = frame.f_code.co_filename
                if name == self.file:
                    return True
                if name.startswith(PACKAGE) or (in_launch and name.startswith(TRITON)) or _library_import(frame):
                    return False
                frame = frame.f_back
            return False
        finally:
            self._walking = self._own_event = False


CODE_ATTRIBUTES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})  # set: audited as object.__setattr__


def rewritten_function(event: str, args: tuple, file: str | None) -> str | None:
    """The qualified name of a function not defined in ``file`` whose code or defaults an audit event says are
    being replaced (the function stays the same object, so an identity check would not see it), or None."""
    if event != "object.__setattr__" or len(args) < 2 or args[1] not in CODE_ATTRIBUTES:
        return None
    function = args[0]
    if not isinstance(function, types.FunctionType) or function.__code__.co_filename == file:
        return None
    return f"{function.__module__}.{function.__qualname__}"


def reach(event: str, args: tuple, file: str | None = None) -> tuple[str, str] | None:
    """(kind, detail) when an audit event is a way to the process's other objects (a gc scan, a stack walk) or
    rewrites a function that is not the file's (``file``: the candidate's path)."""
    if event in GC_EVENTS:
        return "gc", f"scans the garbage collector's objects ({event})"
    what = stack_access(event, args)
    if what is not None:
        return "stack", f"walks the interpreter's stack ({what})"
    name = rewritten_function(event, args, file)
    return ("tampered", f"rewrites the code of {name} in place, a function it did not define") if name else None


def methods_of(*classes) -> dict[str, tuple[object, str, object]]:
    """Every function of ``classes``, bound now: "Class.name" -> (class, name, function), for ``tampered``."""
    return {f"{cls.__name__}.{name}": (cls, name, getattr(cls, name)) for cls in classes
            for name, value in vars(cls).items() if callable(value)}


def tampered(protected: dict[str, tuple[object, str, object]]) -> list[str]:
    """The names in ``protected`` whose owner's attribute is no longer the function bound then."""
    return [name for name, (owner, attribute, function) in protected.items()
            if getattr(owner, attribute) is not function]


class Refused(RuntimeError):
    """Raised by an audit hook to stop a gc scan or a stack walk before it hands anything over: a note
    alone could be erased by a file holding the checker's objects."""


class StackWatch:
    """Stack walks and gc scans by the file's code outside its launches, for the timing child (an audit hook:
    the file cannot remove it, and reaching this object takes one of the walks it records)."""

    def __init__(self, monitor, file: str) -> None:
        self.monitor = monitor
        self.active = False
        self.events: list[str] = []
        self.frames = FileFrames()
        self.frames.file = file

    def install(self) -> None:
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        found = reach(event, args, self.frames.file)
        if found is not None and self.frames.candidate_called(in_launch=self.monitor.inside):
            if found[1] not in self.events:
                self.events.append(found[1])
            raise Refused(f"the timer refuses this: the file {found[1]}")

    @contextmanager
    def watching(self):
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def watched(self, fn):
        """``fn`` (the file's wrapper) with every call watched."""
        def call(*args, **kwargs):
            with self.watching():
                return fn(*args, **kwargs)

        return call
HOST_READ_METHODS = ("numpy", "tolist", "__array__", "__dlpack__")


class HostGuard:
    def __init__(self) -> None:
        self.events: list[dict] = []  # where notes go: the list given to watch() or import_of()
        self.watching = False  # a wrapper call is running
        self.importing = False  # the candidate file is being imported
        self.monitor = None
        self.frames = FileFrames()  # set frames.file to the candidate's path before importing it
        self.unwatched: list[dict] = []  # what the file's code did outside the wrapper's calls and its import

    def _active(self) -> bool:
        """A wrapper call is watched, and the code that called ``note`` is the wrapper's, not a launch's: inside
        a launch, the file's own code (a kernel body under the interpreter, a Python call a kernel makes at
        compile time, an allocator) still counts as the wrapper's. Call only from ``note``."""
        if not self.watching:
            return False
        if not (self.monitor is not None and self.monitor.inside):
            return True
        return self.frames.candidate_called(4, in_launch=True)  # frames: this, note, noted or _audit, the caller

    def note(self, kind: str, detail: str, at_import: bool = False) -> None:
        """``at_import``: the kind counts wherever the file's code does it (a thread, a process), not only in a
        wrapper call (a host read, which the PyTorch function may do)."""
        # outside a watched call: frames this, note, noted, then the file's code or not
        if self._active() or at_import and (self.importing or not self.watching and self.frames.candidate_called(3)):
            self._record(kind, detail)

    def _record(self, kind: str, detail: str) -> None:
        """Note what the file did: in the watched call's or the import's events, or, when the file's code ran
        outside both (its PyTorch function, a finalizer, a hook of its own), in ``unwatched``."""
        if self.watching or self.importing:
            event = {"kind": kind, "detail": detail + (" while the file was imported" if self.importing else "")}
            events = self.events
        else:
            event, events = {"kind": kind, "detail": detail + " outside its wrapper's calls"}, self.unwatched
        if event not in events:
            events.append(event)

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
        """Processes and ctypes calls are noted in a watched call or the import; anywhere else, when the file's
        code made them, they are refused too. A gc scan, a stack walk, a rewrite of another's function and an audit
        hook added (it would see the checker's own events, frames among them) are refused whenever the file's code
        makes them."""
        windowed = self.watching or self.importing
        if event.startswith(PROCESS_EVENTS):
            found = ("process", f"starts a process ({event})")
            if windowed:
                return self.note(*found, at_import=True)
        elif event.startswith("ctypes."):
            found = ("ctypes", f"calls into ctypes ({event})")
            if windowed:
                return self.note(*found)
        elif event == "sys.addaudithook":
            found = ("hook", "adds an audit hook, which would run on the checker's own events")
        else:
            found = reach(event, args, self.frames.file)
            if found is None:
                return None
        inside = self.monitor is not None and self.monitor.inside
        if self.frames.candidate_called(in_launch=inside):
            self._record(*found)
            raise Refused(f"fusionforge's checker refuses this: the file {found[1]}")
        return None
