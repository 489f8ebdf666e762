"""Sharing one GPU between threads: checks side by side, each timing with the GPU alone.

Checks (and the warm-up compiles before a timing) only need the answers to be right, so several run
at once; a timing needs the GPU to itself, or it would measure its neighbours. ``DeviceGate`` is a
readers-writer lock with the writer first: a timing waits for the running checks to end, and new
checks wait while a timing waits or runs, so timings are never starved.

``stop()`` is the interrupt: every wait ends, and leaving either section raises ``KeyboardInterrupt``
in the worker, so a result produced while the run was being stopped is never recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DeviceGate:
    def __init__(self) -> None:
        self._state = threading.Condition()
        self._sharing = 0  # checks running
        self._alone = False  # a timing running
        self._waiting_alone = 0  # timings waiting
        self._stopped = False

    def stop(self) -> None:
        """End every wait; each section, on leaving, raises KeyboardInterrupt."""
        with self._state:
            self._stopped = True
            self._state.notify_all()

    def raise_if_stopped(self) -> None:
        """KeyboardInterrupt once ``stop()`` was called (for a worker about to start new work)."""
        if self._stopped:
            raise KeyboardInterrupt

    @contextmanager
    def shared(self) -> Iterator[None]:
        """A section that may run beside other shared sections (a check)."""
        with self._state:
            self._state.wait_for(lambda: self._stopped or not (self._alone or self._waiting_alone))
            self.raise_if_stopped()
            self._sharing += 1
        try:
            yield
        finally:
            with self._state:
                self._sharing -= 1
                self._state.notify_all()
        self.raise_if_stopped()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """A section that runs with nothing else in the gate (a timing)."""
        with self._state:
            self._waiting_alone += 1
            try:
                self._state.wait_for(lambda: self._stopped or not (self._alone or self._sharing))
            finally:
                self._waiting_alone -= 1
            self.raise_if_stopped()
            self._alone = True
        try:
            yield
        finally:
            with self._state:
                self._alone = False
                self._state.notify_all()
        self.raise_if_stopped()
