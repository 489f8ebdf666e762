"""``fusionforge bench``: check a kernel file, then time it against PyTorch eager and torch.compile.

The verdict: speedup = eager median / Triton median. Triton is "faster" only when the speedup
exceeds 1 by more than the measured spread (the mean relative width of the two 20-80 percentile
bands); the ratio to torch.compile is judged the same way and reported beside it. Correct but not
faster is the failure ``slower``. A figure past physics (Triton under the roofline floor, or work
the wall clock sees and the events do not) or over 10x eager is ``suspicious``: over 10x is
accepted only when the wall-clock re-check confirms it.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from fusionforge import kernelfile
from fusionforge.bench import roofline
from fusionforge.gpus import DeviceGate, Lane, Lanes, current_lane, stop_workers
from fusionforge.kernelbench import KIND as KERNELBENCH
from fusionforge.tasks import FusionTask
from fusionforge.verify import Failure, Verdict, analysis, check_file
from fusionforge.verify.checker import default_device, input_sets
from fusionforge.verify.sandbox import start_child
from fusionforge.verify.verdict import (
    RULE,
    attempt_title,
    integer_error,
    render_failure,
    render_input_sets,
    symbol,
    use_symbols,
)

SUSPICIOUS_SPEEDUP = 10.0
CONTENDERS = ("eager", "compile", "triton")


def summarize(times: list[float]) -> dict:
    """Median and 20th/80th percentiles (ms), raw precision."""
    ordered = sorted(times)

    def pct(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"median_ms": pct(0.5), "p20_ms": pct(0.2), "p80_ms": pct(0.8), "calls": len(ordered)}


def spread(a: dict, b: dict) -> float:
    return ((a["p80_ms"] - a["p20_ms"]) / a["median_ms"] + (b["p80_ms"] - b["p20_ms"]) / b["median_ms"]) / 2


@dataclass
class BenchResult:
    check: Verdict
    timed: bool = False
    note: str = ""
    timings: dict = field(default_factory=dict)
    speedup: float | None = None
    speedup_vs_compile: float | None = None
    faster: bool = False
    faster_than_compile: bool = False
    roofline: dict = field(default_factory=dict)
    suspicious: list[str] = field(default_factory=list)
    failure: Failure | None = None
    context: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if not self.check.passed or self.failure is not None:
            return "fail"
        return "suspicious" if self.suspicious else "pass"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        failure = self.check.failure or self.failure
        return {"status": self.status, "timed": self.timed, "note": self.note,
                "failure": failure.to_dict() if failure else None, "check": self.check.to_dict(),
                "timings": self.timings, "speedup": self.speedup, "speedup_vs_compile": self.speedup_vs_compile,
                "faster": self.faster, "faster_than_compile": self.faster_than_compile, "roofline": self.roofline,
                "suspicious": self.suspicious, "context": self.context}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict) -> BenchResult:
        """A result back from ``to_dict`` (a dataset record's, or one sent back by a Ray worker)."""
        check = Verdict.from_dict(raw["check"])
        failure = Failure.from_dict(raw["failure"]) if raw["failure"] and check.passed else None
        return cls(check=check, timed=raw["timed"], note=raw["note"], timings=raw["timings"], speedup=raw["speedup"],
                   speedup_vs_compile=raw["speedup_vs_compile"], faster=raw["faster"],
                   faster_than_compile=raw["faster_than_compile"], roofline=raw["roofline"],
                   suspicious=raw["suspicious"], failure=failure, context=raw["context"])


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def bench_file(path: str | Path, task: FusionTask | None = None, timeout: float = 300.0,
               device: str | None = None, gate: DeviceGate | None = None,
               phases: dict[str, float] | None = None) -> BenchResult:
    """Check, then (on a GPU) time eager, torch.compile and the Triton wrapper at the bench shape.

    Through a ``gate`` shared by several threads (default: a gate of its own), the check and the timing
    child's preparation run beside the other threads' checks, and the timing has the GPU alone: it waits
    for the checks' own GPU work in this process and pauses their children (``DeviceGate``).
    ``phases`` gets the seconds spent in each step: check, prepare, timing, and waiting at the gate
    (wait_check, wait_timing).
    """
    device = device or default_device()
    phases = {} if phases is None else phases
    gate = gate or DeviceGate()
    clock = time.perf_counter
    timing: TimingChild | None = None
    try:
        started = clock()
        with gate.pausable():
            phases["wait_check"] = clock() - started
            verdict, timing = check_and_prepare(path, task, device, timeout, phases)
        if not verdict.passed:  # nothing to time: no pause of the other checks
            return time_checked(verdict, path, task=task, timeout=timeout, device=device)
        started = clock()
        with gate.alone() as woken:
            phases["wait_timing"] = clock() - started
            started = clock()
            result = time_checked(verdict, path, task=task, timeout=timeout, device=device, timing=timing)
            phases["timing"] = clock() - started
        if woken and result.timed:
            result.suspicious.append(f"{len(woken)} of the processes paused for the timing ran during it: the "
                                     "timing did not have the GPU alone (something woke them)")
    finally:
        if timing is not None:
            timing.close()
    return result


def bench_in_lane(lane: Lane | None, path: str | Path, task: FusionTask | None, timeout: float, device: str,
                  phases: dict[str, float] | None = None) -> BenchResult:
    """``bench_file`` in ``lane``: on its worker when it has one (a GPU of a Ray cluster), else here through
    its gate; without a lane, here with a gate of its own."""
    phases = {} if phases is None else phases
    if lane is not None and lane.worker is not None:
        return lane.worker.bench(path, task, timeout, device, phases)
    return bench_file(path, task, timeout=timeout, device=device, gate=lane.gate if lane is not None else None,
                      phases=phases)


def bench_files(paths: list[Path], tasks: list[FusionTask | None] | None = None, jobs: int = 1,
                timeout: float = 300.0, device: str | None = None,
                done: Callable[[int, BenchResult], None] | None = None,
                lanes: Lanes | None = None) -> list[BenchResult]:
    """``bench_file`` over several files (``tasks[k]`` for file k, default each file's own TASK), spread over
    ``lanes`` (the GPUs, here or a Ray cluster's; default one lane): in each lane the checks (and, on a GPU,
    the timing children's preparation) run ``jobs`` at a time and each timing has the GPU alone.
    ``done(k, result)`` is called in this thread as each result is final; the results come back in file
    order."""
    device = device or default_device()
    tasks = tasks or [None] * len(paths)
    lanes = lanes or Lanes.single()

    def one(k: int) -> BenchResult:
        with lanes.take() as lane:
            return bench_in_lane(lane, paths[k], tasks[k], timeout, device)

    results: list[BenchResult | None] = [None] * len(paths)
    with ThreadPoolExecutor(jobs * len(lanes)) as pool:  # threads suffice: the work runs in child processes
        futures = {pool.submit(one, k): k for k in range(len(paths))}
        try:
            for future in as_completed(futures):
                k = futures[future]
                results[k] = future.result()
                if done:
                    done(k, results[k])
        except BaseException:
            stop_workers(lanes, pool, futures)
            raise
    return results


class TimingChild:
    """The timing child of one file (``fusionforge.bench.timer``), started and made ready beside other work
    on the GPU (imports, inputs, torch.compile of the chain); ``time`` lets it time, with the GPU alone."""

    def __init__(self, path: str | Path, task: FusionTask | None, timeout: float) -> None:
        self.timeout = timeout
        sets = input_sets(task, "cuda", seeds=2)
        bench_sets = [s for s in sets if s["label"].startswith("bench")] or sets
        self._request = {"file": str(Path(path).resolve()), "task": task.to_dict() if task else None,
                         "dims": bench_sets[0].get("dims"),
                         "seeds": [bench_sets[0]["seed"], bench_sets[0]["seed"] + 1]}
        self._child = self._scratch = None
        self.ready = self._start()

    def _start(self) -> bool:
        """Start the child and wait until it is ready (or ended, or the time ran out)."""
        self._scratch = tempfile.TemporaryDirectory(prefix="fusionforge-bench-")
        try:
            self._child = start_child("fusionforge.bench.timer", {**self._request, "out_dir": self._scratch.name},
                                      Path(self._scratch.name), "cuda", ready=True)
            ready = self._child.wait_ready(self.timeout)
        except BaseException:
            self.close()
            raise
        if not ready:  # still preparing, it would share the GPU with the next timing: stopped now
            self._child.close()
        return ready

    def time(self) -> tuple[dict | None, int | None, str]:
        """(the raw result or None, returncode, the output's tail); the child is gone after it. A child that
        did not get ready beside the other work (out of memory, too slow under load) is started again here."""
        if not self.ready:
            self.close()
            self.ready = self._start()
        if self.ready:
            self._child.go()
        return self._child.finish(self.timeout if self.ready else 1.0)

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
        if self._scratch is not None:
            self._scratch.cleanup()


def check_and_prepare(path: str | Path, task: FusionTask | None, device: str, timeout: float,
                      phases: dict[str, float] | None = None) -> tuple[Verdict, TimingChild | None]:
    """The part of ``bench_file`` that may share the GPU: the check, then on a GPU (if it passed) the
    timing child, made ready; their seconds in ``phases``."""
    phases = {} if phases is None else phases
    started = time.perf_counter()
    verdict = check_file(path, task=task, device=device, timeout=timeout)
    phases["check"] = time.perf_counter() - started
    timing = None
    if verdict.passed and device == "cuda":
        started = time.perf_counter()
        timing = TimingChild(path, task or _task_of(path), timeout)
        phases["prepare"] = time.perf_counter() - started
    return verdict, timing


def time_checked(verdict: Verdict, path: str | Path, task: FusionTask | None = None, timeout: float = 300.0,
                 device: str | None = None, timing: TimingChild | None = None) -> BenchResult:
    """The timing half of ``bench_file``, for a file whose check already ran (``verdict`` is its result),
    with its ``timing`` child when it was made ready beforehand.

    Checks may run several at a time; timing never should: give this the GPU alone.
    """
    device = device or default_device()
    result = BenchResult(check=verdict)
    if not verdict.passed:
        return result
    if device != "cuda":
        result.note = "not timed: timing needs a CUDA GPU (the check ran on the CPU through Triton's interpreter)"
        return result
    task = task or _task_of(path)
    started = time.perf_counter()
    own = timing is None
    timing = timing or TimingChild(path, task, timeout)
    try:
        raw, returncode, tail = timing.time()
    finally:
        if own:
            timing.close()
    child_seconds = time.perf_counter() - started
    if raw is None:
        result.failure = Failure("runtime", "Harness", f"the timing run failed (exit {returncode}): "
                                 f"{tail.strip().splitlines()[-1] if tail.strip() else 'no output'}",
                                 "The benchmark process could not time the file.",
                                 "Run `fusionforge bench` again; if it fails again, report it with the file.")
        return result
    if "forged" in raw:
        result.failure = analysis.provenance_failure({"kind": "forged", "detail": raw["forged"]}, "timing")
        return result
    lane = current_lane()
    result = judge(result, raw, task, roofline.device_rates(lane.index if lane is not None else 0))
    result.context["timing_child_seconds"] = round(child_seconds, 3)
    if result.roofline.get("floor_wrong"):
        roofline.forget(result.context["rates"])
    return result


def _task_of(path: str | Path) -> FusionTask | None:
    """The file's own TASK; None for a KernelBench task, whose problem code only a given task may bring (the
    check then says so)."""
    kf = kernelfile.parse(path)
    if kf.task is None or kf.task.get("kind") == KERNELBENCH:
        return None
    return FusionTask.from_dict(kf.task)


def judge(result: BenchResult, raw: dict, task: FusionTask | None, rates: dict) -> BenchResult:
    """Turn raw timings into the speed verdict, roofline fractions and analysis (pure: testable on CPU)."""
    result.timed = True
    stats = {name: summarize(raw["times_ms"][name]) for name in CONTENDERS}
    wall = {name: summarize(raw["wall_ms"][name])["median_ms"] for name in CONTENDERS}
    host = {name: summarize(raw["host_ms"][name])["median_ms"] for name in CONTENDERS}
    result.timings = {name: {**stats[name], "wall_median_ms": wall[name], "host_median_ms": host[name]}
                      for name in CONTENDERS}
    eager, compiled, triton_ = stats["eager"], stats["compile"], stats["triton"]
    result.speedup = eager["median_ms"] / triton_["median_ms"]
    result.speedup_vs_compile = compiled["median_ms"] / triton_["median_ms"]
    result.faster = result.speedup - 1 > spread(eager, triton_)
    result.faster_than_compile = result.speedup_vs_compile - 1 > spread(compiled, triton_)

    if task is not None:
        dims = raw.get("dims") or task.shapes["bench"][0]
        cost = task.cost(dims)
        nbytes, flops, dtype = cost["bytes"], cost["flops"], task.dtype
    else:
        nbytes, flops, dtype = raw["bytes_io"], raw["flops_counted"], raw["dtype"]
    floor = roofline.floor_ms(nbytes, flops, dtype, rates)
    physics = roofline.floor_ms(nbytes, flops, dtype, rates, roofline.MATMUL_HEADROOM)
    result.roofline = {"bytes": nbytes, "flops": flops, "floor_ms": floor, "dtype": dtype,
                       "copy_GBs": rates["copy_GBs"], "matmul_TFLOPs": roofline.matmul_TFLOPs(dtype, rates),
                       **{f"{n}_fraction_of_floor": floor / stats[n]["median_ms"] for n in CONTENDERS},
                       "triton_GBs": nbytes / triton_["median_ms"] / 1e6,
                       "triton_TFLOPs": flops / triton_["median_ms"] / 1e9}
    # A floor that PyTorch's own calls beat is a wrong floor (ceilings measured too low), not a cheat's mark.
    beaten = [n for n in ("eager", "compile") if stats[n]["median_ms"] < 0.95 * physics]
    if beaten or rates.get("contended"):
        result.roofline["floor_wrong"] = True
        result.note = (f"the roofline floor {floor:.4f} ms is wrong: {' and '.join(beaten)} ran under the least "
                       f"time it allows ({physics:.4f} ms); the device ceilings are measured again on the next "
                       "timing" if beaten else
                       f"the roofline floor is uncertain: the device ceilings were measured while {rates['contended']}")

    if raw.get("tampered"):
        result.suspicious.append(f"the candidate replaced functions the timer relies on: {', '.join(raw['tampered'])}")
    if triton_["median_ms"] < 0.95 * physics and not result.roofline.get("floor_wrong"):
        result.suspicious.append(f"Triton's median {triton_['median_ms']:.4f} ms is under the roofline floor "
                                 f"{floor:.4f} ms" + (f" (its matmul part at {roofline.MATMUL_HEADROOM:g}x the "
                                 f"measured ceiling: {physics:.4f} ms)" if physics < floor else "") + ": past physics")
    # A call's wall clock is its host time (until it returns: launches, Python, any wait) plus the GPU work
    # still running after that; the events see all the GPU work on the timed stream. What is left over,
    # wall - host - events, is GPU work the events missed (kernels on a stream never joined), beyond the
    # synchronize latency every contender shows. A contender whose GPU work runs while its host is still busy
    # (eager's launches after the first) has a negative gap, so the baseline is never taken below zero.
    gaps = {n: wall[n] - host[n] - stats[n]["median_ms"] for n in CONTENDERS}
    if gaps["triton"] > max(gaps["eager"], gaps["compile"], 0.0) + max(0.05, 0.5 * triton_["median_ms"]):
        result.suspicious.append(f"the wall clock sees {wall['triton']:.4f} ms per call ({host['triton']:.4f} ms "
                                 f"of it on the host) against {triton_['median_ms']:.4f} ms by events, a gap "
                                 "PyTorch's calls do not have: work escapes the timed stream")
    if result.speedup > SUSPICIOUS_SPEEDUP and not result.suspicious and not result.note:
        result.note = (f"speedup {result.speedup:.1f}x is over {SUSPICIOUS_SPEEDUP:g}x; the wall-clock re-check "
                       f"({wall['eager']:.4f} vs {wall['triton']:.4f} ms) and the floor confirm it")
    result.context = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": raw.get("device"), "driver": _driver(), "torch": raw.get("torch"), "triton": raw.get("triton"),
        "timer": "CUDA events on the current stream, joined with the candidate's streams; L2 flushed before "
                 "each call; contenders interleaved in rounds, new input values each round; timed outputs verified",
        "flush_bytes": raw["flush_bytes"], "l2_bytes": raw["l2_bytes"], "calls": raw["calls"],
        "compile_seconds": raw["compile_seconds"], "launches_per_call": raw["launches_per_call"],
        "kernels": raw["kernels"], "side_streams": raw["side_streams"], "rates": rates["device_key"],
        "phase_seconds": raw.get("phases"), "verified_calls": len(raw.get("verified", [])),
        "verify_seconds": raw.get("verify_seconds"), "refill_gpu_seconds": raw.get("refill_gpu_seconds"),
    }
    result.failure = timed_work_failure(raw, result.check.kernels)
    if result.failure is None and not result.faster and not result.suspicious:
        result.failure = slower_failure(result, raw)
    return result


def timed_work_failure(raw: dict, checked_kernels: list[str]) -> Failure | None:
    """The timer verifies what it times: a verified timed call with a wrong output or PyTorch compute in it, timed
    calls that launch fewer kernels than the verified ones or kernels of the file the checker never saw launched
    (``checked_kernels``), or PyTorch's settings changed under the baselines, mean the timed work is not the
    verified work."""
    if raw.get("stack_access"):
        return Failure("cheat", "Triton", f"the file reaches into the timer: {'; '.join(raw['stack_access'])}",
                       "The wrapper (or the file at import) walked the timing process's frames, traced it, scanned "
                       "its objects or rewrote functions it did not define: the timer's state (which calls it "
                       "verifies, the loop's variables) is there, and a file that reads or bends it can do less "
                       "work on the calls no one checks.",
                       "Use no frames, tracers, profilers or gc scans (sys._getframe, inspect.currentframe, "
                       "tracebacks' frames, sys.settrace), rewrite no function's code; compute every call the same "
                       "way.")
    if raw.get("settings_changed"):
        return Failure("cheat", "Triton", f"the file changes PyTorch's settings while it is timed: "
                       f"{'; '.join(raw['settings_changed'])}",
                       "Eager PyTorch and torch.compile, the baselines, run with PyTorch's global settings; a file "
                       "that changes them (cuDNN or an attention backend off, TF32, deterministic algorithms) "
                       "changes the work its kernels are compared with.",
                       "Leave torch.backends and torch's global settings as they are.")
    if raw.get("compute_ops"):
        return Failure("cheat", "Triton",
                       f"verified timed calls computed with PyTorch: {', '.join(raw['compute_ops'])}",
                       "The file runs PyTorch compute (or a dtype conversion) in its wrapper when it is timed, which "
                       "its checked calls did not: the time measured is partly PyTorch's (cuBLAS, say), not its "
                       "kernels'.",
                       "Take one path whatever the process or caller: allocate, launch the kernels, return.")
    unchecked = [name for name in raw.get("file_kernels", []) if name not in checked_kernels]
    if unchecked:
        return Failure("cheat", "Triton", f"the timed calls launch kernels the checked calls never launched: "
                       f"{', '.join(unchecked)}",
                       "The file runs other code when it is timed than when it is checked (it can tell the timing "
                       "process from the checker's): the speed measured is not that of the verified kernels.",
                       "Take one path whatever the process or caller: the same kernels, launched the same way.")
    verified = raw.get("verified", [])
    wrong = [v for v in verified if not v["passed"]]
    cause_tail = ("The checker's calls passed, so the file computes differently when it is timed: it keeps results "
                  "between calls (every round's inputs are new values in the same tensors), skips work after many "
                  "calls, or detects the timer.")
    fix = "Compute every call fully from its current inputs, the same way whatever the call count or the caller."
    if wrong:
        v = wrong[0]
        if v.get("kind") == "mismatch" and integer_error(v):
            what = integer_error(v)
        elif v.get("kind") == "mismatch":
            what = (f"rel err {v['rel_err']:.3g} > tolerance {v['tolerance']:.3g}, max abs err "
                    f"{v['max_abs_err']:.3g} at {v['max_abs_index']} (got {v['value']:.6g}, "
                    f"expected {v['expected']:.6g})")
        else:
            what = f"{v.get('kind')} ({v.get('shape', v.get('type'))})"
        return Failure("cheat", "Triton", f"{len(wrong)} of {len(verified)} verified timed calls are wrong; the first, "
                       f"round {v['round']} ({v['why']}): {what}",
                       f"A timed call returned a wrong result: round {v['round']}'s output does not match the float64 "
                       f"reference of that round's inputs. {cause_tail}", fix)
    counts = {int(k): n for k, n in raw.get("launch_counts", {}).items()}
    if counts and verified:
        expected = max(v["launches"] for v in verified)
        fewer = sum(n for k, n in counts.items() if k < expected)
        if fewer:
            return Failure("cheat", "Triton", f"{fewer} timed calls launched fewer kernels ({min(counts)}) than the "
                           f"verified calls ({expected})",
                           f"Some timed calls did less work than the calls whose outputs were verified. {cause_tail}",
                           fix)
    return None


def slower_failure(result: BenchResult, raw: dict) -> Failure:
    """Correct but not faster: what bound the kernel, and what to change."""
    t, e, r = result.timings["triton"], result.timings["eager"], result.roofline
    kernels = "; ".join(f"{name}: {k['registers']} registers, {k['spills']} spills, {k['shared_bytes']} B shared, "
                        f"{k['num_warps']} warps, {k['num_stages']} stages" for name, k in raw["kernels"].items())
    bound = "compute" if r["flops"] and r["flops"] / r["matmul_TFLOPs"] / 1e9 >= r["bytes"] / r["copy_GBs"] / 1e6 \
        else "memory"
    cause = (f"Correct but not faster: Triton {t['median_ms']:.4f} ms vs eager {e['median_ms']:.4f} ms (speedup "
             f"{result.speedup:.3f}, inside the measured spread). The task is {bound}-bound: {r['bytes'] / 1e6:.1f} MB "
             f"and {r['flops'] / 1e9:.2f} GFLOP, floor {r['floor_ms']:.4f} ms; Triton reaches "
             f"{r['triton_fraction_of_floor']:.0%} of the floor, eager {r['eager_fraction_of_floor']:.0%}. "
             f"{raw['launches_per_call']} kernel launch(es) per call. {kernels or 'no resource data'}.")
    fixes = []
    if t["host_median_ms"] > t["median_ms"]:
        # the events start while the host is still in the wrapper: its latency lands in the GPU timings
        cause += (f" The call is host-bound: the wrapper spends {t['host_median_ms']:.4f} ms on the host per call, "
                  f"more than the {t['median_ms']:.4f} ms its kernels take, so launch latency shows in the timed "
                  f"calls (Triton's 20th-80th percentiles {t['p20_ms']:.4f}-{t['p80_ms']:.4f} ms).")
        fixes.append("cut the wrapper's host work: fewer launches, no per-call copies or extra allocations, "
                     "grid and block sizes from plain integer arithmetic")
    if raw["launches_per_call"] > 1:
        fixes.append(f"fuse the {raw['launches_per_call']} launches into one pass so intermediates stay on chip")
    if any((k.get("spills") or 0) > 0 for k in raw["kernels"].values()):
        fixes.append("cut register pressure (smaller tiles or more warps): the kernel spills to local memory")
    if bound == "memory":
        fixes.append("read each input once with wide contiguous blocks (BLOCK >= 1024 elements, 4-8 warps), "
                     "enough programs to fill every SM, fp32 math in registers and one store")
    else:
        fixes.append("use Hopper-sized tl.dot tiles (128x128x64 or 128x256x64, num_stages 3-4, 8 warps) with "
                     "grouped tile order, and keep the epilogue fused")
    if r["eager_fraction_of_floor"] > 0.8:
        fixes.append("eager already runs near the floor: only removing memory traffic (fusion) can win here")
    return Failure("slower", "Triton", f"Triton is not faster than PyTorch: {result.speedup:.3f}x "
                   f"({t['median_ms']:.4f} ms vs {e['median_ms']:.4f} ms)", cause, "; ".join(fixes).capitalize() + ".")


def render_report(result: BenchResult, attempt: int | None = None, fancy: bool | None = None) -> str:
    """The seed's FINAL TEST REPORT (of attempt ``attempt``, when it is one): each input set's error against
    the reference, then the timings, torch.compile and the roofline; or the failure analysis."""
    fancy = use_symbols() if fancy is None else fancy
    ok, bad = symbol("ok", fancy), symbol("fail", fancy)
    failure = result.check.failure
    py_ok = failure is None or failure.implementation not in ("PyTorch", "Both")
    tr_ok = failure is None or failure.implementation not in ("Triton", "Both", "Harness")
    lines = [RULE, attempt_title("FINAL TEST REPORT", attempt), RULE,
             f"PyTorch Implementation: {ok + ' SUCCESS' if py_ok else bad + ' FAILED'}",
             f"Triton Implementation:  {ok + ' SUCCESS' if tr_ok else bad + ' FAILED'}", ""]
    if result.check.checks:
        lines += [f"Checked on {result.check.device} against the float64 reference:",
                  *render_input_sets(result.check, fancy), ""]
    if failure is not None:
        return "\n".join(lines + [render_failure(failure, attempt, fancy)])
    if result.failure is not None and not result.timed:
        return "\n".join(lines + [render_failure(result.failure, attempt, fancy)])
    if not result.timed:
        done = symbol("done", fancy)
        lines += ["PyTorch Time: not timed (timing needs a CUDA GPU)", "Triton Time:  not timed", "", result.note,
                  f"{done} SUCCESS: Both implementations completed successfully! (verified, not timed)"]
        return "\n".join(lines)
    t = result.timings
    for label, name in (("PyTorch Time:", "eager"), ("Triton Time: ", "triton")):
        total = t[name]["median_ms"] * t[name]["calls"] / 1e3
        lines.append(f"{label} {total:.4f}s ({t[name]['median_ms']:.2f}ms per run)")
    word = f"{result.speedup:.2f}x FASTER" if result.speedup >= 1 else f"{1 / result.speedup:.2f}x SLOWER"
    lines += ["", f"{symbol('win', fancy)} RESULT: Triton is {word} than PyTorch"]
    c, r = t["compile"], result.roofline
    lines += [f"torch.compile Time: {c['median_ms'] * c['calls'] / 1e3:.4f}s ({c['median_ms']:.2f}ms per run; "
              f"compiled in {result.context['compile_seconds']:.1f}s); Triton vs torch.compile: "
              f"{result.speedup_vs_compile:.2f}x",
              f"Roofline floor {r['floor_ms']:.3f}ms ({r['bytes'] / 1e6:.1f} MB, {r['flops'] / 1e9:.1f} GFLOP): "
              f"eager {r['eager_fraction_of_floor']:.0%}, torch.compile {r['compile_fraction_of_floor']:.0%}, "
              f"Triton {r['triton_fraction_of_floor']:.0%} of the floor", ""]
    if result.suspicious:
        lines += [f"{bad} SUSPICIOUS: " + "; ".join(result.suspicious), "Not counted as a success; re-check it."]
    elif result.failure:
        lines.append(render_failure(result.failure, attempt, fancy))
    else:
        if result.note:
            lines.append(result.note)
        lines.append(f"{symbol('done', fancy)} SUCCESS: Both implementations completed successfully!")
    return "\n".join(lines)
