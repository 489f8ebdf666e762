"""What one verification of a timed call costs on a GPU: the float64 reference and the comparison.

    PYTHONPATH=src python benchmarks/verify_cost.py [--calls 6] [--out cost.json] FILE ...

For each kernel file (one with `get_inputs`, such as benchmarks/anchors/*.py), the Triton wrapper's
output on the file's inputs is verified `--calls` times as the timing child does (``timer.verify_call``),
each call timed alone between device synchronizations: the reference in float64, then the comparison.
The first call pays for loading the float64 kernels once; the later ones are the cost per call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fusionforge.bench.timer import verify_call
from fusionforge.kernelfile import load_module
from fusionforge.verify.checker import compare


def seconds(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(path: Path, calls: int) -> dict:
    """One file's verification cost: ``calls`` verifications, then the reference and the comparison alone."""
    module = load_module(path)
    torch.manual_seed(0)
    inputs = [v.cuda() if isinstance(v, torch.Tensor) else v for v in module.get_inputs()]
    dtype = next(v.dtype for v in inputs if isinstance(v, torch.Tensor) and v.is_floating_point())

    def reference(values):
        return module.fused_kernel_pytorch(*[v.double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                                             else v for v in values])

    with torch.no_grad():
        out, eager_out = module.fused_kernel_triton_wrapper(*inputs), module.fused_kernel_pytorch(*inputs)
        call_s = seconds(lambda: module.fused_kernel_triton_wrapper(*inputs))
        verify_s = [seconds(lambda: verify_call(out, eager_out, inputs, reference, dtype)) for _ in range(calls)]
        ref = reference(inputs)
        reference_s = seconds(lambda: reference(inputs))
        compare_s = seconds(lambda: compare(out, ref, eager_out, dtype))
    return {"file": path.name, "triton_call_s": call_s, "verify_s": verify_s, "reference_s": reference_s,
            "compare_s": compare_s, "output_mb": out.numel() * 8 / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("verify_cost.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("a CUDA GPU is required", file=sys.stderr)
        return 2
    rows = []
    for path in args.files:
        row = measure(path, args.calls)
        rows.append(row)
        v = row["verify_s"]
        print(f"{path.name:<34} first {v[0] * 1e3:7.1f} ms, then {min(v[1:]) * 1e3:6.1f} ms (reference "
              f"{row['reference_s'] * 1e3:6.1f}, compare {row['compare_s'] * 1e3:6.1f}); a Triton call "
              f"{row['triton_call_s'] * 1e3:.2f} ms", flush=True)
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
