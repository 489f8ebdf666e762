"""A/B timing of kernel files while the generator is tuned: each file's Triton wrapper at its task's
bench shape, eager beside it, in one process.

    PYTHONPATH=src python benchmarks/ab_files.py FILE... [--device cuda|cpu]

Each file carries its TASK; its inputs are drawn at the first bench shape (seed 0). A call is timed
with CUDA events after a 256 MiB write flushes L2; the median of 200 calls is printed with the
fraction of the copy-bandwidth floor (3,018 GB/s, the H100's measured rate) and the speedup over
eager. No torch.compile, no check and no rounds: a quick comparison of variants of one task, not a
verdict (that is `fusionforge bench`). With --device cpu (Triton's interpreter) the outputs are only
compared with eager at the first test shape.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch

from fusionforge.tasks import FusionTask

COPY_GBS = 3018.7
CALLS = 200


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(fn, inputs: list, flush: torch.Tensor) -> float:
    for _ in range(5):
        fn(*inputs)
    torch.cuda.synchronize()
    pairs = []
    for _ in range(CALLS):
        flush.zero_()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn(*inputs)
        end.record()
        pairs.append((begin, end))
    torch.cuda.synchronize()
    return statistics.median(b.elapsed_time(e) for b, e in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=args.device) if args.device == "cuda" else None
    eager_ms: dict[str, float] = {}
    for path in args.files:
        module = load(path)
        task = FusionTask.from_dict(module.TASK)
        dims = task.shapes["bench" if args.device == "cuda" else "test"][0]
        inputs = task.make_inputs(dims, 0, args.device)
        with torch.no_grad():
            ref = task.function(*inputs).float()
            out = module.fused_kernel_triton_wrapper(*inputs).float()
            err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
            line = f"{path.name:<34} err {err:.1e}"
            if args.device == "cuda":
                floor = task.cost(dims)["bytes"] / COPY_GBS / 1e6
                if task.id not in eager_ms:
                    eager_ms[task.id] = median_ms(task.function, inputs, flush)
                ms = median_ms(module.fused_kernel_triton_wrapper, inputs, flush)
                line += (f"  triton {ms:.4f} ms ({floor / ms:.0%} of floor)  eager {eager_ms[task.id]:.4f} ms  "
                         f"x{eager_ms[task.id] / ms:.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
