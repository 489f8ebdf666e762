"""The timing child: ``python -m fusionforge.bench.timer REQUEST``. Times three contenders in one process.

Protocol (README, "How kernels are timed"):
* the timing functions (CUDA events, synchronize, the clock) are bound here before the candidate
  module is imported, so patching them from the candidate changes nothing; any patch is reported;
* inputs (two sets, alternated) are built before any timed region, at the bench shape;
* each contender is warmed up until JIT compilation and autotuning are done (torch.compile's
  compile time is measured apart);
* before every timed call the L2 cache is flushed by writing a buffer of at least twice the L2
  size (read from the device), outside the timed region;
* a call is timed with CUDA events on the current stream; before the end event the stream waits
  on every stream a Triton kernel was launched on, so work on side streams is counted;
* contenders are interleaved in rounds (the order rotates) so drift hits all alike; rounds go on
  until every contender has at least MIN_CALLS calls and one second of measured time, or MAX_CALLS;
* a wall-clock measure (device synchronize around single calls) is taken too, as a cross-check, with
  the host's own time in each call (until the call returns): wall minus host minus events is GPU work
  the events did not see.

With ``"warm_only": true`` the child stops after the warm-up: compiled kernels and graphs are then in
the on-disk caches, and nothing is timed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

# torch.compile of one small chain: compile in this process, without a pool of compile workers to start
# and shut down on every bench (set before torch is imported).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

from fusionforge.verify.launches import LaunchMonitor  # noqa: E402

MIN_CALLS = 100
MIN_SECONDS = 1.0
MAX_CALLS = 2000
WALL_CALLS = 20

# Bound before any candidate code runs.
_Event = torch.cuda.Event
_record = torch.cuda.Event.record
_elapsed = torch.cuda.Event.elapsed_time
_synchronize = torch.cuda.synchronize
_perf_counter = time.perf_counter
_current_stream = torch.cuda.current_stream
_wait_stream = torch.cuda.Stream.wait_stream
PROTECTED = {"torch.cuda.Event.record": (torch.cuda.Event, "record", _record),
             "torch.cuda.Event.elapsed_time": (torch.cuda.Event, "elapsed_time", _elapsed),
             "torch.cuda.synchronize": (torch.cuda, "synchronize", _synchronize),
             "time.perf_counter": (time, "perf_counter", _perf_counter)}


def join_launch_streams(monitor: LaunchMonitor) -> None:
    """Make the current stream wait on every other stream a Triton kernel was launched on (side streams)."""
    current = monitor.stream_handle()  # a handle, not a Stream object: this runs inside the timed region
    for handle, stream in monitor.streams.items():
        if handle != current:
            _wait_stream(_current_stream(), stream)


STARTED = _perf_counter()
PHASES: dict[str, float] = {}  # phase -> when it began, in seconds after the imports above


def phase(name: str) -> None:
    PHASES[name] = round(_perf_counter() - STARTED, 3)
    print(f"[timer] {PHASES[name]:8.3f}s {name}", flush=True)


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 6) for t in times]


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    out_dir = Path(request["out_dir"])
    result: dict = {}
    monitor = LaunchMonitor()
    monitor.install()

    phase("import")
    spec = importlib.util.spec_from_file_location("candidate_kernels", request["file"])
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate_kernels"] = module
    spec.loader.exec_module(module)

    if request["task"] is not None:
        from fusionforge.tasks import FusionTask

        task = FusionTask.from_dict(request["task"])
        eager = task.function  # the trusted chain, not the file's own (which could be made slow)
        input_sets = [task.make_inputs(request["dims"], seed, "cuda") for seed in request["seeds"]]
    else:
        eager = module.fused_kernel_pytorch
        input_sets = []
        for seed in request["seeds"]:
            torch.manual_seed(seed)
            input_sets.append([v.to("cuda") if isinstance(v, torch.Tensor) else v for v in module.get_inputs()])
    triton_fn = module.fused_kernel_triton_wrapper

    with torch.no_grad():
        flops = None  # a task's cost model counts its FLOPs; a file without one is counted here
        if request["task"] is None:
            phase("count flops")
            flops = _count_flops(eager, input_sets[0])
        phase("torch.compile")
        start = _perf_counter()
        compiled = torch.compile(eager)
        compiled(*input_sets[0])
        _synchronize()
        result["compile_seconds"] = _perf_counter() - start
        contenders = {"eager": eager, "compile": compiled, "triton": triton_fn}
        phase("warm-up")
        for fn in contenders.values():
            warm_start = _perf_counter()
            for k in range(100):
                fn(*input_sets[k % len(input_sets)])
                _synchronize()
                if k >= 2 and _perf_counter() - warm_start > 0.05:
                    break
        if request.get("warm_only"):
            phase("done")
            (out_dir / "result.json").write_text(json.dumps({"warm_only": True, **result, "phases": PHASES}))
            return 0

        before = len(monitor.launches)
        out = triton_fn(*input_sets[0])
        _synchronize()
        result["launches_per_call"] = len(monitor.launches) - before
        tensors = [v for v in input_sets[0] if isinstance(v, torch.Tensor)]
        result["bytes_io"] = sum(v.numel() * v.element_size() for v in tensors) + out.numel() * out.element_size()
        result["dtype"] = str(next(v.dtype for v in tensors if v.is_floating_point())).replace("torch.", "")
        del out
        result["kernels"] = monitor.resources()

        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        flush_bytes = max(2 * l2, 256 * 1024**2)
        flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
        events: dict[str, list] = {name: [] for name in contenders}
        names = list(contenders)
        phase("timed rounds")
        rounds = 0
        while True:
            order = names[rounds % len(names):] + names[:rounds % len(names)]
            for name in order:
                inputs = input_sets[rounds % len(input_sets)]
                flush.zero_()
                begin, end = _Event(enable_timing=True), _Event(enable_timing=True)
                _record(begin)
                contenders[name](*inputs)
                join_launch_streams(monitor)
                _record(end)
                events[name].append((begin, end))
            rounds += 1
            if rounds >= MIN_CALLS and rounds % 50 == 0:
                _synchronize()
                totals = [sum(_elapsed(b, e) for b, e in pairs) / 1e3 for pairs in events.values()]
                if min(totals) >= MIN_SECONDS or rounds >= MAX_CALLS:
                    break
        _synchronize()
        times = {name: [_elapsed(b, e) for b, e in pairs] for name, pairs in events.items()}

        phase("wall-clock cross-check")
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        host: dict[str, list[float]] = {name: [] for name in contenders}
        for k in range(WALL_CALLS):
            for name, fn in contenders.items():
                flush.zero_()
                _synchronize()
                t0 = _perf_counter()
                fn(*input_sets[k % len(input_sets)])
                host[name].append((_perf_counter() - t0) * 1e3)
                _synchronize()
                wall[name].append((_perf_counter() - t0) * 1e3)

    result.update({
        "times_ms": {name: _rounded(t) for name, t in times.items()},
        "wall_ms": {name: _rounded(t) for name, t in wall.items()},
        "host_ms": {name: _rounded(t) for name, t in host.items()},
        "calls": rounds, "flush_bytes": flush_bytes, "l2_bytes": l2, "flops_counted": flops,
        "side_streams": max(0, len(monitor.streams) - 1),
        "tampered": [name for name, (owner, attr, original) in PROTECTED.items()
                     if getattr(owner, attr) is not original],
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": _triton_version(),
        "dims": request["dims"],
    })
    phase("done")
    result["phases"] = PHASES
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


def _triton_version() -> str:
    import triton

    return triton.__version__


def _count_flops(fn, inputs) -> int:
    """Matmul FLOPs of one call, counted by PyTorch's FlopCounterMode (pointwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*inputs)
    return int(counter.get_total_flops())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
