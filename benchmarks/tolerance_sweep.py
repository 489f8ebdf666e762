"""The checker's tolerance over many input sets of one kernel file: the max abs rule alone, and with the
input-sensitivity bound (``fusionforge.verify.checker.input_sensitivity``).

    PYTHONPATH=src python benchmarks/tolerance_sweep.py FILE [--sets 200] [--bench] [--json out.json]

For each of ``--sets`` seeds at every test shape of the file's task (and its bench shape with ``--bench``),
the wrapper's output is compared with the float64 reference twice: without the sensitivity (every element
within the max abs bound) and with it (the checker's rule). Three corrupted copies of each output must
fail under the checker's rule: a 16x16 corner tile rounded to bfloat16, the same tile scaled by 1 + 2^-10,
and the whole output rounded to bfloat16 (each only where it changes the values: a float32 task).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

from fusionforge.kernelfile import load_module
from fusionforge.tasks import FusionTask
from fusionforge.verify.checker import compare, input_sensitivity


def corruptions(out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs a localized or precision bug would give (2-D outputs: the bottom-right tile)."""
    tile = (slice(-16, None),) * min(out.dim(), 2)
    bf16_tile, scaled_tile = out.clone(), out.clone()
    bf16_tile[tile] = out[tile].bfloat16().to(out.dtype)
    scaled_tile[tile] = out[tile] * (1 + 2**-10)
    return {"tile_bf16": bf16_tile, "tile_scaled": scaled_tile, "all_bf16": out.bfloat16().to(out.dtype)}


def sweep(path: Path, sets: int, bench: bool) -> dict:
    module = load_module(str(path), "swept_kernels")
    task = FusionTask.from_dict(module.TASK)
    dtype = getattr(torch, task.dtype)
    shapes = task.shapes["test"] + (task.shapes["bench"] if bench else [])
    rows = []
    for dims in shapes:
        row = {"dims": dims, "sets": 0, "fail_max_abs_rule": 0, "fail_checker": 0,
               "corrupted_passing": {name: 0 for name in ("tile_bf16", "tile_scaled", "all_bf16")}}
        for seed in range(sets):
            inputs = task.make_inputs(dims, seed, "cuda" if torch.cuda.is_available() else "cpu")
            with torch.no_grad():
                ref = task.reference(inputs)
                own = task.function(*inputs)
                out = module.fused_kernel_triton_wrapper(*inputs)
                moved = functools.partial(input_sensitivity, task.reference, inputs, ref, seed)
                row["sets"] += 1
                row["fail_max_abs_rule"] += not compare(out, ref, own, dtype)["passed"]
                row["fail_checker"] += not compare(out, ref, own, dtype, moved)["passed"]
                for name, bad in corruptions(out).items():
                    if not torch.equal(bad, out):
                        row["corrupted_passing"][name] += compare(bad, ref, own, dtype, moved)["passed"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"file": path.name, "task": task.description, "device": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--bench", action="store_true", help="the bench shape too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = sweep(args.file, args.sets, args.bench)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
