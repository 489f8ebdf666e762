"""A/B timing of kernel files while the generator is tuned: the Triton wrappers of several files of one
task at its bench shape, eager (and with --compile torch.compile) beside them, in one process.

    PYTHONPATH=src python benchmarks/ab_files.py FILE... [--compile] [--rounds 200] [--device cuda|cpu]

Files are grouped by the task they carry (their TASK); a group's inputs are drawn at its first bench
shape (seed 0). The contenders of a group (eager, torch.compile, each file) are timed in rounds, the
order rotating each round, every call timed with CUDA events after a 256 MiB write flushes L2. Printed
per contender: the median, 20th and 80th percentiles, the fraction of the copy-bandwidth floor (this
GPU's measured copy rate, `fusionforge.bench.roofline`) and the speedup over eager and torch.compile. No check and no
wall-clock cross-check: a quick comparison of variants of one task, not a verdict (that is
`fusionforge bench`). With --device cpu (Triton's interpreter) the outputs are only compared with
eager at the first test shape.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from fusionforge.bench.roofline import device_rates
from fusionforge.kernelfile import load_module
from fusionforge.tasks import FusionTask


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()


def time_rounds(contenders: dict, inputs: list, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call of each contender, ``rounds`` calls each, interleaved, L2 flushed before each."""
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    for fn in contenders.values():  # compiled, autotuned and warm
        for _ in range(5):
            fn(*inputs)
    torch.cuda.synchronize()
    names = list(contenders)
    events: dict[str, list] = {name: [] for name in names}
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            flush.zero_()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            contenders[name](*inputs)
            end.record()
            events[name].append((begin, end))
    torch.cuda.synchronize()
    return {name: sorted(b.elapsed_time(e) for b, e in pairs) for name, pairs in events.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--compile", action="store_true", help="time torch.compile of the task too")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    copy_GBs = device_rates()["copy_GBs"] if args.device == "cuda" else None
    groups: dict[str, list[tuple[str, object]]] = {}
    for path in args.files:
        module = load_module(path)
        groups.setdefault(module.TASK["id"], []).append((path.name, module))
    for members in groups.values():
        task = FusionTask.from_dict(members[0][1].TASK)
        dims = task.shapes["bench" if args.device == "cuda" else "test"][0]
        inputs = task.make_inputs(dims, 0, args.device)
        with torch.no_grad():
            ref = task.function(*inputs)
            errors = {name: rel_err(module.fused_kernel_triton_wrapper(*inputs), ref) for name, module in members}
            if args.device == "cpu":
                for name, err in errors.items():
                    print(f"{name:<40} err {err:.1e}", flush=True)
                continue
            contenders = {"eager": task.function}
            if args.compile:
                torch._dynamo.reset()  # a fresh compile per task, clear of dynamo's recompile limit
                contenders["compile"] = torch.compile(task.function)
            contenders.update((name, module.fused_kernel_triton_wrapper) for name, module in members)
            times = time_rounds(contenders, inputs, args.rounds)
        floor = task.cost(dims)["bytes"] / copy_GBs / 1e6
        medians = {name: statistics.median(t) for name, t in times.items()}
        print(f"== {task.id} {task.description} {dims}: floor {floor:.4f} ms", flush=True)
        for name, t in times.items():
            line = (f"{name:<40} {medians[name]:.4f} ms  p20 {t[len(t) // 5]:.4f}  p80 {t[4 * len(t) // 5]:.4f}  "
                    f"{floor / medians[name]:6.1%} of floor  x{medians['eager'] / medians[name]:.3f} eager")
            if args.compile:
                line += f"  x{medians['compile'] / medians[name]:.3f} compile"
            if name in errors:
                line += f"  err {errors[name]:.1e}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
