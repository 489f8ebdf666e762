"""Sharing GPUs between threads: on each GPU checks side by side, each timing with the GPU alone.

Checks (and a timing child's preparation: imports, inputs, torch.compile) only need the answers to be
right, so several run at once; a timing needs the GPU to itself, or it would measure its neighbours.
``DeviceGate`` gives it that without waiting for the checks to end: their child processes are *paused*
(SIGSTOP to each child's process group) for the timing and go on after it (SIGCONT), their time limits
extended by the pause. A paused process launches nothing; what it had queued on the GPU (a call, an
autotuning trial's repeats) is given ``SETTLE_SECONDS`` to finish before the timing starts, and a paused
child seen running during the timing (woken by someone else) is reported. The parent's own GPU work
for a check (the reference and the comparison) cannot be paused: it runs in short *shared* sections,
and the gate is a readers-writer lock over those with the writer first: a timing waits for the shared
sections running, and new ones (and new children) wait while a timing waits or runs, so timings are
never starved.

Several GPUs are several lanes (``Lanes``), each with its own gate. A thread works in one lane at a
time (``Lanes.take``), and every child process it starts sees only that lane's GPU
(``lane_environment``, through ``CUDA_VISIBLE_DEVICES``). A lane may instead hand its files to a worker
elsewhere (``Lane.worker``: a GPU of a Ray cluster, ``fusionforge.ray_engine``), which has its own gate.

``stop()`` is the interrupt: every wait ends, and leaving either section raises ``KeyboardInterrupt``
in the worker, so a result produced while the run was being stopped is never recorded.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SETTLE_SECONDS = 0.2  # after pausing the children, for the GPU work they had queued to finish
WATCH_SECONDS = 0.02  # how often a timing makes sure its paused children stay paused

_pausing: ContextVar[DeviceGate | None] = ContextVar("fusionforge_pausing", default=None)
_paused: set[int] = set()  # process groups paused by a timing now, on any GPU
_parked: set[int] = set()  # process groups of ready children waiting for "go": nothing queued on the GPU
_idle_lock = threading.Lock()


class DeviceGate:
    def __init__(self) -> None:
        self._state = threading.Condition()
        self._sharing = 0  # shared sections running
        self._starting = 0  # children being started in pausable sections
        self._alone = False  # a timing running
        self._waiting_alone = 0  # timings waiting
        self._stopped = False
        self._children: set[int] = set()  # process groups a timing pauses
        self._paused_total = 0.0  # seconds the children have spent paused, before the current pause
        self._paused_since: float | None = None

    def stop(self) -> None:
        """End every wait; each section, on leaving, raises KeyboardInterrupt."""
        with self._state:
            self._stopped = True
            self._state.notify_all()

    def raise_if_stopped(self) -> None:
        """KeyboardInterrupt once ``stop()`` was called (for a worker about to start new work)."""
        if self._stopped:
            raise KeyboardInterrupt

    def _wait_for_no_timing(self) -> None:
        """With ``_state`` held: wait until no timing runs or waits (or the gate is stopped)."""
        self._state.wait_for(lambda: self._stopped or not (self._alone or self._waiting_alone))
        self.raise_if_stopped()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """A section that may run beside other shared sections (this process's GPU work for a check)."""
        with self._state:
            self._wait_for_no_timing()
            self._sharing += 1
        try:
            yield
        finally:
            with self._state:
                self._sharing -= 1
                self._state.notify_all()
        self.raise_if_stopped()

    @contextmanager
    def pausable(self) -> Iterator[None]:
        """A section whose child processes (``sandbox.Child``) a timing pauses rather than waits for (a check
        and the timing child's preparation); its own GPU work in this process goes in ``shared`` sections."""
        with self._state:
            self._wait_for_no_timing()
        token = _pausing.set(self)
        try:
            yield
        finally:
            _pausing.reset(token)
        self.raise_if_stopped()

    @contextmanager
    def starting_child(self) -> Iterator[Callable[[int], float]]:
        """Around a child's start in a pausable section: no timing begins until the child is registered
        (``register(process_group)``, which returns ``paused_seconds()`` then), so none runs beside it
        unpaused."""
        with self._state:
            self._wait_for_no_timing()
            self._starting += 1

        def register(group: int) -> float:
            with self._state:
                self._children.add(group)
                return self._paused_total

        try:
            yield register
        finally:
            with self._state:
                self._starting -= 1
                self._state.notify_all()

    def release_child(self, group: int) -> None:
        """The child ``group`` no longer works under this gate (it ended, or it is the timing's own): let it
        go on if paused."""
        with self._state:
            if group not in self._children:
                return
            self._children.discard(group)
            if self._paused_since is not None:
                with _idle_lock:  # first: a paused group seen running is a woken one
                    _paused.discard(group)
                _signal_group(group, signal.SIGCONT)

    def paused_seconds(self) -> float:
        """The seconds the children have spent paused so far (a child's time limit is extended by those
        that pass while it runs)."""
        with self._state:
            now = time.monotonic() - self._paused_since if self._paused_since is not None else 0.0
            return self._paused_total + now

    @contextmanager
    def alone(self) -> Iterator[set[int]]:
        """A section that runs with nothing else in the gate (a timing): it waits for the shared sections,
        pauses the children of the pausable ones and lets them go on when it ends. It yields the set of the
        paused process groups seen running meanwhile (woken by someone else: the timing is not alone),
        filled in as they are seen (every WATCH_SECONDS, where /proc tells)."""
        with self._state:
            self._waiting_alone += 1
            try:
                self._state.wait_for(lambda: self._stopped or not (self._alone or self._sharing or self._starting))
            finally:
                self._waiting_alone -= 1
            self.raise_if_stopped()
            self._alone = True
            paused, busy = list(self._children), set()
            if paused:
                self._paused_since = time.monotonic()
                with _idle_lock:
                    _paused.update(paused)
                    busy = set(paused) - _parked  # may have queued GPU work just before it stopped
                for group in paused:
                    _signal_group(group, signal.SIGSTOP)
        woken: set[int] = set()
        watching = threading.Event()
        watcher = threading.Thread(target=_watch_paused, args=(paused, watching, woken), daemon=True)
        try:
            if busy:
                time.sleep(SETTLE_SECONDS)
            if paused:
                watcher.start()
            yield woken
        finally:
            watching.set()
            if watcher.is_alive():
                watcher.join()
            with self._state:
                if self._paused_since is not None:
                    self._paused_total += time.monotonic() - self._paused_since
                    self._paused_since = None
                for group in self._children:
                    _signal_group(group, signal.SIGCONT)
                with _idle_lock:
                    _paused.difference_update(paused)
                self._alone = False
                self._state.notify_all()
        self.raise_if_stopped()


def _watch_paused(groups: list[int], done: threading.Event, woken: set[int]) -> None:
    """Until ``done``, note each of ``groups`` (process group ids, each its leader's pid) found running
    while still paused (not released, not ended)."""
    while not done.wait(WATCH_SECONDS):
        for group in groups:
            if group in woken or not paused_group(group):
                continue
            try:
                state = Path(f"/proc/{group}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("T", "t", "Z", "X") and paused_group(group):
                woken.add(group)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def paused_group(group: int) -> bool:
    """Whether the process group ``group`` is paused for a timing now."""
    with _idle_lock:
        return group in _paused


def park(group: int) -> None:
    """The child ``group`` is ready and waits for "go": it holds the GPU's memory but has nothing queued
    there (only trusted code has run in it so far)."""
    with _idle_lock:
        _parked.add(group)


def unpark(group: int) -> None:
    """The child ``group`` went on (or ended)."""
    with _idle_lock:
        _parked.discard(group)


def idle_group(group: int) -> bool:
    """Whether the process group ``group`` runs nothing on the GPU now: parked, or paused for a timing."""
    with _idle_lock:
        return group in _parked or group in _paused


def pausing_gate() -> DeviceGate | None:
    """The gate whose pausable section the calling thread is in (its children are paused for timings)."""
    return _pausing.get()


@contextmanager
def parent_gpu_work(device: str) -> Iterator[None]:
    """Around this process's own work on ``device`` for a check (the reference, a comparison): on the
    calling thread's lane's GPU, and in a pausable section a shared section of its gate, which a timing
    waits for, since it cannot pause it."""
    gate, lane = _pausing.get(), _current.get()
    with gate.shared() if gate is not None else nullcontext():
        if device != "cuda":
            yield
            return
        import torch

        index = lane.index if lane is not None and lane.gpu is not None else torch.cuda.current_device()
        with torch.cuda.device(index):
            try:
                yield
            finally:
                torch.cuda.synchronize()  # what it queued ends in the section


@dataclass
class Lane:
    """One GPU of the run: its gate, and the ``CUDA_VISIBLE_DEVICES`` its children get (None: the
    environment's own: the CPU, or whatever GPU the children find)."""

    gpu: str | None
    index: int = 0  # the GPU's torch index in this process
    gate: DeviceGate = field(default_factory=DeviceGate)
    busy: int = 0  # tasks or files working in this lane now
    worker: Any = None  # benches this lane's files in another process (``bench(path, task, timeout, device,
    # phases)``, as ``bench_file``), on the GPU it names; None: here, with ``gate``
    label: str | None = None  # the name of a worker's GPU

    @property
    def name(self) -> str:
        return self.label or ("default" if self.gpu is None else f"GPU {self.gpu}")


_current: ContextVar[Lane | None] = ContextVar("fusionforge_lane", default=None)


def current_lane() -> Lane | None:
    """The lane the calling thread works in (set by ``Lanes.take``), or None."""
    return _current.get()


def lane_environment() -> dict[str, str]:
    """What a child process started now must see: the calling thread's GPU only."""
    lane = _current.get()
    return {} if lane is None or lane.gpu is None else {"CUDA_VISIBLE_DEVICES": lane.gpu}


class Lanes:
    """Every GPU of a run as a lane: work goes to the least busy lane, and each lane's gate keeps its
    timings alone on its GPU while the other GPUs go on with their own checks and timings."""

    def __init__(self, lanes: list[Lane]) -> None:
        if not lanes:
            raise ValueError("no GPU to run on")
        self.lanes = lanes
        self._lock = threading.Lock()

    @classmethod
    def single(cls) -> Lanes:
        """One lane that leaves the environment as it is (the CPU, or the default GPU)."""
        return cls([Lane(None)])

    @classmethod
    def for_gpus(cls, spec: str | None) -> Lanes:
        """The lanes for ``--gpus``: "all" (the default), a count N (the first N), or ids "0,2,5" (one id alone:
        "5,"), as this process numbers the visible GPUs. ValueError when the spec does not fit them."""
        visible = visible_gpus()
        if not visible:
            raise ValueError("no CUDA GPU is visible")
        return cls([Lane(visible[i], i) for i in select_gpus(spec or "all", len(visible))])

    def __len__(self) -> int:
        return len(self.lanes)

    @contextmanager
    def take(self) -> Iterator[Lane]:
        """Work in the least busy lane (the first of equals) until the block ends."""
        with self._lock:
            lane = min(self.lanes, key=lambda lane: lane.busy)
            lane.busy += 1
        token = _current.set(lane)
        try:
            yield lane
        finally:
            _current.reset(token)
            with self._lock:
                lane.busy -= 1

    def stop(self) -> None:
        for lane in self.lanes:
            lane.gate.stop()

    def raise_if_stopped(self) -> None:
        for lane in self.lanes:
            lane.gate.raise_if_stopped()

    def close(self) -> None:
        """Release what the lanes hold once the run is over (nothing here; a Ray engine's workers)."""


RAY_JOBS = 8  # tasks at a time on each GPU of a Ray cluster when -j is not given


def default_jobs(device: str, gpus: int) -> int:
    """Tasks at a time on each GPU when ``-j`` is not given: on a GPU, the CPU cores per GPU less two (the
    checks compile on the CPU; the run and the timing child need a core each), from 1 to 14; without a GPU,
    1 (the checks run Triton's interpreter, a core each)."""
    if device != "cuda":
        return 1
    return max(1, min(14, (os.cpu_count() or 1) // max(gpus, 1) - 2))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices when it is unset)."""
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    if names is not None:
        return [name.strip() for name in names.split(",") if name.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def select_gpus(spec: str, visible: int) -> list[int]:
    """Indices (into the visible GPUs) that ``--gpus`` selects; ValueError with the reason when it cannot."""
    spec = spec.strip()
    if spec == "all":
        return list(range(visible))
    if spec.isdigit():
        count = int(spec)
        if not 1 <= count <= visible:
            raise ValueError(f"--gpus {spec}: {visible} GPU{'s are' if visible != 1 else ' is'} visible")
        return list(range(count))
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if "," not in spec or not ids or not all(part.isdigit() for part in ids):
        raise ValueError(f"--gpus {spec!r}: expected all, a count, or GPU ids such as 0,2,5")
    chosen = [int(part) for part in ids]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--gpus {spec}: a GPU is named twice")
    if max(chosen) >= visible:
        raise ValueError(f"--gpus {spec}: GPU {max(chosen)} is not visible (ids 0..{visible - 1})")
    return chosen


def stop_workers(lanes: Lanes, pool: ThreadPoolExecutor, futures) -> None:
    """After an exception or Ctrl-C in the thread collecting ``futures``: stop every gate, cancel the work
    not started, kill the running children, and wait for the workers (each leaves its gate with
    KeyboardInterrupt, so nothing cut short is recorded)."""
    from fusionforge.verify.sandbox import kill_running  # the sandbox reads the lanes: imported late

    lanes.stop()
    pool.shutdown(wait=False, cancel_futures=True)
    started = [future for future in futures if not future.cancelled()]  # wait() never counts a cancel done
    kill_running()
    while wait(started, timeout=0.5).not_done:
        kill_running()  # again: a worker may have started a child after the last call
