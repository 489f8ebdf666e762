"""The Ray engine: the GPUs of a Ray cluster as lanes (``fusionforge run --engine ray``, ``bench --engine ray``).

The driver runs the attempt loops as the local engine does, in threads, and stays the only writer of
data/ and runs/. Each GPU of the cluster gets a ``GpuWorker`` actor that lives for the whole run: it is
handed a file's source and task, benches a copy in a scratch folder on its node (checks side by side,
each timing with the GPU alone, behind its own ``DeviceGate``), and sends back the result as plain data.
The worker's node keeps its compile caches (Triton's, torch.compile's) and its measured ceilings warm
from one file to the next.

Every check and timing runs in a child process of the worker, so a kernel's crash or CUDA fault ends
with that child. A worker that dies itself (a node lost, a kill) is restarted by Ray, and the calls it
was running are sent again to the new one; a call still lost after ``RETRIES`` comes back as a Harness
failure of that attempt, never as the kernel's.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from fusionforge.bench.benchmark import BenchResult, bench_file
from fusionforge.gpus import DeviceGate, Lane, Lanes
from fusionforge.tasks import FusionTask
from fusionforge.verify.checker import default_device
from fusionforge.verify.sandbox import kill_running
from fusionforge.verify.verdict import Failure, Verdict

RETRIES = 2  # times a call lost with its worker is sent again
POLL_SECONDS = 0.5  # how often a waiting driver thread looks for an interrupt
START_SECONDS = 300.0  # for the workers to start (a busy cluster may be slow to place them)
STOP_SECONDS = 60.0  # for the workers to kill their children after an interrupt


@ray.remote(concurrency_groups={"control": 1})
class GpuWorker:
    """One GPU of the cluster (its ``CUDA_VISIBLE_DEVICES`` set by Ray), or one CPU slot when it has none."""

    def __init__(self) -> None:
        self.gate = DeviceGate()
        self.running = 0  # bench calls in progress
        self.lock = threading.Lock()

    @ray.method(concurrency_group="control")
    def where(self) -> tuple[str, str]:
        """The worker's name in reports (its GPU and node), and the device it can check on."""
        gpus = ",".join(str(gpu) for gpu in ray.get_gpu_ids())
        return f"{'GPU ' + gpus if gpus else 'CPU'} on {ray.util.get_node_ip_address()}", default_device()

    def bench(self, path: str, source: str, task: dict | None, timeout: float,
              device: str) -> tuple[dict, dict] | None:
        """``bench_file`` of ``source`` written as the driver's ``path``: (the result's dict, the phases), or
        None when ``stop`` cut it short."""
        with self.lock:
            self.running += 1
        try:
            with tempfile.TemporaryDirectory(prefix="fusionforge-ray-") as scratch:
                copy = Path(scratch) / Path(path).name
                copy.write_text(source)
                phases: dict[str, float] = {}
                try:
                    result = bench_file(copy, FusionTask.from_dict(task) if task else None, timeout=timeout,
                                        device=device, gate=self.gate, phases=phases)
                except KeyboardInterrupt:
                    return None
                # the report names the driver's file, as a local run's would
                text = json.dumps(result.to_dict()).replace(json.dumps(str(copy))[1:-1], json.dumps(path)[1:-1])
                return json.loads(text), phases
        finally:
            with self.lock:
                self.running -= 1

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        """End every wait at the gate and kill the running children until no bench call is left."""
        self.gate.stop()
        while True:
            kill_running()
            with self.lock:
                if not self.running:
                    return
            time.sleep(0.1)


class RayWorker:
    """The driver's side of one ``GpuWorker``: ``bench`` as ``bench_file`` does, on the worker."""

    def __init__(self, actor, name: str, retries: int) -> None:
        self.actor = actor
        self.name = name
        self.retries = retries  # how often Ray sends a call again after the worker died under it
        self.stopped = threading.Event()

    def bench(self, path: str | Path, task: FusionTask | None, timeout: float, device: str,
              phases: dict[str, float]) -> BenchResult:
        """The worker's verdict on the file at ``path``; KeyboardInterrupt once the lanes are stopped."""
        call = self.actor.bench.remote(str(path), Path(path).read_text(), task.to_dict() if task else None,
                                       timeout, device)
        try:
            while not ray.wait([call], timeout=POLL_SECONDS)[0]:
                if self.stopped.is_set():
                    ray.cancel(call)
                    raise KeyboardInterrupt
            reply = ray.get(call)
        except RayActorError as e:
            if self.stopped.is_set():
                raise KeyboardInterrupt from None
            return self.lost(path, device, e)
        if reply is None or self.stopped.is_set():
            raise KeyboardInterrupt
        result, seconds = reply
        phases.update(seconds)
        return BenchResult.from_dict(result)

    def lost(self, path: str | Path, device: str, error: Exception) -> BenchResult:
        """The verdict when the worker died under every try of the call: the harness failed, not the file."""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return BenchResult(check=Verdict(file=str(path), device=device, failure=Failure(
            "crash", "Harness", f"the Ray worker on {self.name} was lost {self.retries + 1} times: {reason}",
            "The worker process (or its node) died while it checked or timed the file; the file was not judged.",
            "Nothing in the file: judge it again (`fusionforge bench`), and look at the Ray cluster's health.")))


class RayLanes(Lanes):
    """One lane per worker; ``stop`` also stops the workers (their children killed), ``close`` ends them."""

    def __init__(self, lanes: list[Lane], device: str, shutdown: bool) -> None:
        super().__init__(lanes)
        self.device = device  # what the workers check and time on
        self._shutdown = shutdown  # the Ray instance was started for this run

    def stop(self) -> None:
        super().stop()
        for lane in self.lanes:
            lane.worker.stopped.set()
        try:
            ray.get([lane.worker.actor.stop.remote() for lane in self.lanes], timeout=STOP_SECONDS)
        except (RayActorError, GetTimeoutError):
            pass  # a dead worker's children die with it when its raylet reaps them

    def close(self) -> None:
        self.stop()  # a call cut short by an interrupt (one task at a time: no stop_workers) leaves no children
        for lane in self.lanes:
            ray.kill(lane.worker.actor)
        if self._shutdown:
            ray.shutdown()


def start(address: str | None, gpus: str | None, jobs: int, device: str | None,
          retries: int = RETRIES) -> RayLanes:
    """Join the Ray cluster at ``address`` (None: the one this process already uses, else a new local one)
    and start a worker on each of its GPUs (``gpus``: all, or a count), or one without a GPU when it has
    none, each benching ``jobs`` files at a time. ``device``: where the files run, by default cuda when
    every worker reaches its GPU. ValueError for options that do not fit the cluster, ConnectionError when there
    is no cluster at ``address``."""
    started = not ray.is_initialized()
    if started:
        # A local Ray reaps the children of a worker that died (checks and timings run in their own sessions).
        os.environ.setdefault("RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper", "true")
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        return _start_workers(gpus, jobs, device, retries, started)
    except BaseException:
        if started:
            ray.shutdown()
        raise


def _start_workers(gpus: str | None, jobs: int, device: str | None, retries: int, started: bool) -> RayLanes:
    available = int(ray.cluster_resources().get("GPU", 0))
    spec = (gpus or "all").strip()
    if spec != "all" and not spec.isdigit():
        raise ValueError(f"--gpus {spec}: with --engine ray, give all or a count (Ray picks the GPUs)")
    if not available and spec != "all":
        raise ValueError(f"--gpus {spec}: the Ray cluster has no GPU; without one the checks run on the CPU")
    if spec != "all" and not 1 <= int(spec) <= available:
        raise ValueError(f"--gpus {spec}: the Ray cluster has {available} GPU{'s' if available != 1 else ''}")
    count = int(spec) if spec != "all" else max(available, 1)
    worker = GpuWorker.options(num_gpus=1 if available else 0, max_concurrency=jobs, max_restarts=-1,
                               max_task_retries=retries)
    actors = [worker.remote() for _ in range(count)]
    try:
        found = ray.get([actor.where.remote() for actor in actors], timeout=START_SECONDS)
        if device == "cuda" and any(seen != "cuda" for _, seen in found):
            raise ValueError("--device cuda: a Ray worker sees no CUDA GPU (is its node's torch built with CUDA?)")
    except BaseException as e:
        for actor in actors:
            ray.kill(actor)
        if isinstance(e, GetTimeoutError):
            raise ValueError(f"the Ray cluster did not start {count} workers in {START_SECONDS:.0f} s (are its "
                             "GPUs taken by another job?)") from None
        raise
    # by default the workers' own device: cuda where every worker reaches its GPU
    device = device or ("cuda" if all(seen == "cuda" for _, seen in found) else "cpu")
    lanes = [Lane(None, worker=RayWorker(actor, name, retries), label=name) for actor, (name, _) in zip(actors, found)]
    return RayLanes(lanes, device, shutdown=started)
