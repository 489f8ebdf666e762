"""The timing child: ``python -m fusionforge.bench.timer REQUEST``. Times three contenders in one process.

Protocol (README, "How kernels are timed"):
* the timing functions (CUDA events, synchronize, the clock) are bound here before the candidate
  module is imported, so patching them from the candidate changes nothing; any patch is reported;
* inputs (two sets, alternated) are built before any timed region, at the bench shape; before each
  round, outside the timed region, the round's set is refilled with new values (``FreshInputs``):
  the same tensors, never the same values twice, so nothing keyed on the inputs can answer;
* each contender is warmed up until JIT compilation and autotuning are done (torch.compile's
  compile time is measured apart);
* before every timed call the L2 cache is flushed by writing a buffer of at least twice the L2
  size (read from the device), outside the timed region;
* a call is timed with CUDA events on the current stream; before the end event the stream waits
  on every stream a Triton kernel was launched on, so work on side streams is counted;
* contenders are interleaved in rounds (the order rotates) so drift hits all alike; rounds go on
  until every contender has at least MIN_CALLS calls and its median holds still (``Settling``: known to
  +-MEDIAN_PRECISION with 95% confidence at two checks 50 rounds apart, and within that of itself), or
  has MIN_SECONDS of measured time, or MAX_CALLS;
* PyTorch runs with TF32 off (``policy.full_float32``: a float32 baseline at the precision the checker holds a
  kernel to); its global settings (cuDNN, the attention backends, ...) are read before the file's import and
  after every timed call, and a change fails the bench as a cheat;
* the timer verifies what it times: the Triton outputs of the first round of each input set, the last
  of each, a few drawn at random from the first MIN_CALLS rounds and each later round with
  probability LATE_VERIFY_RATE are compared, outside the timed regions, with the float64 reference of
  that round's inputs under the checker's tolerance (eager's output of the same round is PyTorch's own
  error), and their Triton calls run under a dispatch mode that notes PyTorch compute in the wrapper
  (``ComputeOps``; those rounds are left out of the times); every timed Triton call's launches are counted,
  and the file's kernels launched here must be among those the checker saw;
* a wall-clock measure (device synchronize around single calls) is taken too, as a cross-check, with
  the host's own time in each call (until the call returns): wall minus host minus events is GPU work
  the events did not see. Its calls take the timed tensors, refilled as before a timed round, so the
  file cannot tell them from timed calls by their inputs.

The child gets ready first, beside other work on the GPU: imports, a task's inputs, torch.compile of the
trusted chain and its warm-up, nothing of the file. It says so on the ``ready_fd`` pipe and waits for
"go" on stdin (``fusionforge.verify.sandbox.Child``), which comes with the GPU alone; then it imports the
file and times.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import os
import random
import secrets
import sys
import time
from pathlib import Path

# torch.compile of one small chain: compile in this process, without a pool of compile workers to start
# and shut down on every bench (set before torch is imported).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from fusionforge.kernelfile import load_module  # noqa: E402
from fusionforge.verify.checker import compare, input_sensitivity, quantized_reference  # noqa: E402
from fusionforge.verify.hostguard import FileFrames, StackWatch, methods_of, tampered  # noqa: E402
from fusionforge.verify.launches import LaunchMonitor  # noqa: E402
from fusionforge.verify.policy import (  # noqa: E402
    changed_settings,
    computed_op,
    full_float32,
    subclasses,
    torch_settings,
)
from fusionforge.verify.sandbox import Seal, die_with_parent, exit_at_once, ready_and_wait  # noqa: E402

MIN_CALLS = 100
MEDIAN_PRECISION = 0.005
MIN_SECONDS = 1.0
MAX_CALLS = 2000
WALL_CALLS = 20
# Rounds verified besides the first and the last two: RANDOM_VERIFIED drawn from the first MIN_CALLS, and
# each later one with probability LATE_VERIFY_RATE. A timed call's median moves only if more than half the
# calls change, and each verified round then catches it with probability over 1/2: a file that times
# differently from round 3 on escapes 10 verified rounds with probability under 2^-10, however soon the
# rounds stop. On the H200 a verified call costs 1-8 ms (24 ms for an 8192^3 matmul's float64 reference).
RANDOM_VERIFIED = 8
LATE_VERIFY_RATE = 0.003

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


class ComputeOps(TorchDispatchMode):
    """The aten ops a verified timed call dispatches outside its Triton launches that the checker lets no wrapper
    run: compute (a matmul, a softmax), a dtype conversion. A file that runs them only when timed (it can tell
    the timer's process from the checker's: its call count, its clock) computes there what its kernels did when
    checked. Each round's mode is new, so what a file does to one is gone by the next."""

    def __init__(self, monitor: LaunchMonitor) -> None:
        super().__init__()
        self.monitor = monitor
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.monitor.inside:
            op = computed_op(func, args, out) or (
                f"{func} (on a tensor subclass, whose own __torch_dispatch__ is untraced)" if subclasses(types)
                else None)
            if op and op not in self.ops:
                self.ops.append(op)
        return out


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


def median_is_stable(times: list[float]) -> bool:
    """Whether the median is known to within +-MEDIAN_PRECISION of itself: the distribution-free 95%
    confidence interval of a median of n calls runs between the order statistics n/2 -+ 0.98 sqrt(n)."""
    ordered = sorted(times)
    n = len(ordered)
    half = 0.98 * math.sqrt(n)
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    median = ordered[n // 2]
    return median > 0 and ordered[high] - ordered[low] <= 2 * MEDIAN_PRECISION * median


class Settling:
    """When the timed rounds may stop early: at two stop checks in a row, every contender's median stable
    (``median_is_stable``) and within MEDIAN_PRECISION of where it was at the check before (a fluke of one
    check, or a drift, does not end the rounds)."""

    def __init__(self) -> None:
        self.previous: list[float] | None = None

    def settled(self, times: list[list[float]]) -> bool:
        if not all(median_is_stable(t) for t in times):
            self.previous = None
            return False
        medians = [sorted(t)[len(t) // 2] for t in times]
        held = self.previous is not None and all(abs(m - p) <= MEDIAN_PRECISION * p
                                                 for m, p in zip(medians, self.previous))
        self.previous = medians
        return held


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 6) for t in times]


class FreshInputs:
    """The timed input sets, refilled with new values before each round, outside the timed region.

    Two pools of values (the request's two seeds) and two timed sets of tensors, cloned from them.
    Before round r, set r % 2 takes its pool's values, each floating tensor's rolled by its own random
    offset: every input's values keep their distribution (a task's inputs are drawn i.i.d.), no two
    rounds see the same values, and the tensors (and their addresses) stay the same.
    """

    def __init__(self, pools: list[list], rng: random.Random) -> None:
        self.pools, self.rng = pools, rng
        self.timed = [[v.clone() if isinstance(v, torch.Tensor) else v for v in pool] for pool in pools]

    def refill(self, round_: int) -> list:
        k = round_ % len(self.pools)
        for source, target in zip(self.pools[k], self.timed[k]):
            if isinstance(source, torch.Tensor) and source.is_floating_point() and source.numel() > 1:
                _roll_into(target, source, self.rng.randrange(1, source.numel()))
        return self.timed[k]


def _roll_into(target: torch.Tensor, source: torch.Tensor, shift: int) -> None:
    """target (flattened) = source (flattened) rolled left by ``shift``: two copies, no temporary."""
    if target.is_contiguous() and source.is_contiguous():
        t, s = target.view(-1), source.view(-1)
        t[:s.numel() - shift].copy_(s[shift:])
        t[s.numel() - shift:].copy_(s[:shift])
    else:
        target.copy_(source.reshape(-1).roll(-shift).view(source.shape))


# what the timer's evidence relies on besides the clocks: the launch count, the stack watch, the refills, the seal
PROTECTED.update(methods_of(LaunchMonitor, StackWatch, FileFrames, FreshInputs, Seal, Settling),
                 median_is_stable=(sys.modules[__name__], "median_is_stable", median_is_stable),
                 compare=(sys.modules[__name__], "compare", compare),
                 input_sensitivity=(sys.modules[__name__], "input_sensitivity", input_sensitivity),
                 quantized_reference=(sys.modules[__name__], "quantized_reference", quantized_reference))


def output_dtype(pytorch_fn, inputs: list) -> torch.dtype:
    """The dtype a file without a task must return: its PyTorch function's (as the checker expects), which
    need not be its inputs' (a float32 statistic of float16 rows)."""
    with torch.no_grad():
        return pytorch_fn(*inputs).dtype


def verify_call(out, eager_out, inputs: list, reference, dtype, accumulates: bool = False,
                picked_from=None) -> dict:
    """A timed call's output against the float64 reference of its inputs, under the checker's tolerance;
    ``picked_from`` gives an arg reduction's values (``FusionTask.picked_from``) for its index rule."""
    several = isinstance(dtype, tuple)  # a quantizer's values and scales: a tuple of plain tensors
    if type(out) is not (tuple if several else torch.Tensor):  # noqa: E721 - as the checker
        return {"passed": False, "kind": "type", "type": type(out).__name__}
    ref = reference(inputs)
    if several:  # a quantizer's: ``reference`` gives its Quantized reference
        stats = compare(out, ref, None, dtype)
    else:
        stats = compare(out, ref, eager_out, dtype,
                        lambda: input_sensitivity(reference, inputs, ref, accumulates=accumulates),
                        picked_from and picked_from(inputs))
    keep = ("passed", "kind", "rule", "rel_err", "tolerance", "max_abs_err", "max_abs_tolerance", "max_abs_index",
            "value", "expected", "bad_fraction", "rounding_bound", "shape", "dtype", "output", "unexplained_fraction")
    return {k: stats[k] for k in keep if k in stats}


def compile_chain(eager, inputs: list, result: dict):
    """torch.compile of the chain, compiled by a first call (its seconds in ``result["compile_seconds"]``)."""
    phase("torch.compile")
    start = _perf_counter()
    compiled = torch.compile(eager)
    compiled(*inputs)
    _synchronize()
    result["compile_seconds"] = _perf_counter() - start
    return compiled


def warm_up(contenders: dict, input_sets: list) -> None:
    """Call each contender until JIT compilation and autotuning are done: at least 3 calls, then until 50 ms
    have passed (at most 100 calls)."""
    for fn in contenders.values():
        warm_start = _perf_counter()
        for k in range(100):
            fn(*input_sets[k % len(input_sets)])
            _synchronize()
            if k >= 2 and _perf_counter() - warm_start > 0.05:
                break


# the steps between the file's import and the timed rounds
PROTECTED.update({name: (sys.modules[__name__], name, globals()[name])
                  for name in ("output_dtype", "verify_call", "compile_chain", "warm_up", "changed_settings",
                               "torch_settings")})


def main(request_path: str) -> int:
    die_with_parent()
    seal = Seal(keep_stdin=True)
    request = json.loads(Path(request_path).read_text())
    if request.get("ready_fd") is not None:  # for this process only: no compiler it starts may hold it open
        os.set_inheritable(request["ready_fd"], False)
    out_dir = Path(request["out_dir"])
    result: dict = {}
    monitor = LaunchMonitor()
    monitor.install()
    from triton.runtime import autotuner, jit

    PROTECTED.update({f"{cls.__name__}.run": (cls, "run", cls.run)  # the launch count's hooks
                      for cls in (jit.JITFunction, autotuner.Autotuner, autotuner.Heuristics)})
    PROTECTED["Autotuner._bench"] = (autotuner.Autotuner, "_bench", autotuner.Autotuner._bench)
    stack = StackWatch(monitor, request["file"])  # the timer's state is on this process's stack: not the file's to read
    stack.install()
    phase("inputs")

    # Ready: everything that runs no code of the file (a task's inputs, torch.compile of the trusted chain)
    # is done beside other work on the GPU; the rest waits for "go", given with the GPU alone.
    task = None
    if request["task"] is not None:
        from fusionforge.tasks import FusionTask

        task = FusionTask.from_dict(request["task"])
        eager = task.function  # the trusted chain, not the file's own (which could be made slow)
        reference = functools.partial(quantized_reference, task) if task.quantizer else task.reference
        dtype = task.output_dtypes if task.quantizer else task.output_dtypes[0]
        input_sets = [task.make_inputs(request["dims"], seed, "cuda") for seed in request["seeds"]]
        with torch.no_grad():
            compiled = compile_chain(eager, input_sets[0], result)
            warm_up({"eager": eager, "compile": compiled}, input_sets)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    flush_bytes = max(2 * l2, 256 * 1024**2)
    flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
    phase("waiting for the GPU")
    if not ready_and_wait(request.get("ready_fd")):
        return 0
    phase("import the file")

    settings = torch_settings()  # what eager and torch.compile run with: the file's to leave as it is
    with stack.watching():
        module = load_module(request["file"], "candidate_kernels")
    settings_changed = changed_settings(settings)
    if task is None:
        eager = module.fused_kernel_pytorch
        input_sets = []
        for seed in request["seeds"]:
            torch.manual_seed(seed)
            input_sets.append([v.to("cuda") if isinstance(v, torch.Tensor) else v for v in module.get_inputs()])
        dtype = output_dtype(eager, input_sets[0])

        def reference(inputs):
            return eager(*[v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                           for v in inputs])
    accumulates = task is not None and task.accumulates
    picked_from = task.picked_from if task is not None and task.arg_reduction is not None else None
    triton_fn = stack.watched(module.fused_kernel_triton_wrapper)
    rng = random.Random(secrets.randbits(64))
    fresh = FreshInputs(input_sets, rng)

    with torch.no_grad():
        flops = None  # a task's cost model counts its FLOPs; a file without one is counted here
        if task is None:
            phase("count flops")
            flops = _count_flops(eager, input_sets[0])
            compiled = compile_chain(eager, input_sets[0], result)
        contenders = {"eager": eager, "compile": compiled, "triton": triton_fn}
        phase("warm-up")
        warm_up(contenders, input_sets)

        before = len(monitor.launches)
        out = triton_fn(*input_sets[0])
        _synchronize()
        result["launches_per_call"] = len(monitor.launches) - before
        tensors = [v for v in input_sets[0] if isinstance(v, torch.Tensor)]
        returned = [v for v in (out if type(out) is tuple else (out,)) if isinstance(v, torch.Tensor)]  # noqa: E721
        result["bytes_io"] = sum(v.numel() * v.element_size() for v in tensors + returned)
        result["dtype"] = str(next(v.dtype for v in tensors if v.is_floating_point())).replace("torch.", "")
        del out
        result["kernels"] = monitor.resources()

        events: dict[str, list] = {name: [] for name in contenders}
        refills: list[tuple] = []
        launch_counts: collections.Counter = collections.Counter()
        verified: list[dict] = []
        compute_ops: list[str] = []  # what verified calls computed with PyTorch (ComputeOps)
        verify_seconds = 0.0
        drawn = set(rng.sample(range(2, MIN_CALLS - 2), RANDOM_VERIFIED))
        settling = Settling()
        names = list(contenders)
        phase("timed rounds")
        rounds, last = 0, None  # last: the round after which the loop ends, once known
        while last is None or rounds <= last:
            why = ("first" if rounds < 2 else "last" if last is not None else "random" if rounds in drawn
                   or (rounds >= MIN_CALLS and rng.random() < LATE_VERIFY_RATE) else None)
            order = names[rounds % len(names):] + names[:rounds % len(names)]
            refill_begin, refill_end = _Event(enable_timing=True), _Event(enable_timing=True)
            _record(refill_begin)
            inputs = fresh.refill(rounds)
            _record(refill_end)
            refills.append((refill_begin, refill_end))
            outputs = {}
            for name in order:
                flush.zero_()
                begin, end = _Event(enable_timing=True), _Event(enable_timing=True)
                before = len(monitor.launches)
                watch = ComputeOps(monitor) if why is not None and name == "triton" else contextlib.nullcontext()
                _record(begin)
                with watch:
                    out = contenders[name](*inputs)
                join_launch_streams(monitor)
                _record(end)
                if isinstance(watch, ComputeOps):
                    compute_ops.extend(op for op in watch.ops if op not in compute_ops)
                events[name].append((begin, end))
                if name == "triton":
                    launches = len(monitor.launches) - before
                    launch_counts[launches] += 1
                settings_changed = settings_changed or changed_settings(settings)
                if why is not None and name != "compile":
                    outputs[name] = out
                del out
            if why is not None:
                _synchronize()  # the round's own GPU work is not verification's cost
                start = _perf_counter()
                verified.append({"round": rounds, "why": why, "launches": launches,
                                 **verify_call(outputs["triton"], outputs["eager"], inputs, reference, dtype,
                                               accumulates, picked_from)})
                verify_seconds += _perf_counter() - start
            del outputs
            rounds += 1
            if last is None and rounds >= MIN_CALLS - 2 and rounds % 50 == 48:
                _synchronize()
                so_far = [[_elapsed(b, e) for b, e in pairs] for pairs in events.values()]
                if settling.settled(so_far) or min(sum(t) for t in so_far) >= 1e3 * MIN_SECONDS \
                        or rounds >= MAX_CALLS - 2:
                    last = rounds + 1  # two more rounds, one of each input set, both verified
        _synchronize()
        # the verified rounds' Triton calls ran under ComputeOps, whose dispatch costs host time: their rounds
        # are left out of every contender's times
        watched = {v["round"] for v in verified}
        times = {name: [_elapsed(b, e) for k, (b, e) in enumerate(pairs) if k not in watched]
                 for name, pairs in events.items()}
        refill_ms = sum(_elapsed(b, e) for b, e in refills)

        phase("wall-clock cross-check")
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        host: dict[str, list[float]] = {name: [] for name in contenders}
        for k in range(WALL_CALLS):  # on the timed tensors, refilled: to the file, inputs like a timed round's
            inputs = fresh.refill(rounds + k)
            for name, fn in contenders.items():
                flush.zero_()
                _synchronize()
                t0 = _perf_counter()
                fn(*inputs)
                host[name].append((_perf_counter() - t0) * 1e3)
                _synchronize()
                wall[name].append((_perf_counter() - t0) * 1e3)

    result.update({
        "times_ms": {name: _rounded(t) for name, t in times.items()},
        "wall_ms": {name: _rounded(t) for name, t in wall.items()},
        "host_ms": {name: _rounded(t) for name, t in host.items()},
        "calls": rounds, "flush_bytes": flush_bytes, "l2_bytes": l2, "flops_counted": flops,
        "verified": verified, "launch_counts": {str(k): n for k, n in sorted(launch_counts.items())},
        "verify_seconds": round(verify_seconds, 4), "refill_gpu_seconds": round(refill_ms / 1e3, 4),
        "side_streams": max(0, len(monitor.streams) - 1), "stack_access": stack.events,
        "file_kernels": sorted({name for name, file in monitor.launches if file == request["file"]}),
        "compute_ops": compute_ops,
        "tampered": tampered(PROTECTED), "settings_changed": settings_changed or changed_settings(settings),
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": _triton_version(),
        "dims": request["dims"],
    })
    phase("done")
    result["phases"] = PHASES
    seal.write(out_dir, result)
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
    with full_float32():  # eager and torch.compile at the precision the checker holds a float32 kernel to
        exit_at_once(main(sys.argv[1]))
