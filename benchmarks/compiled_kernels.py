"""The Triton kernels kernel files launch at their bench shapes, compiled for a Hopper GPU on a machine
without one, fingerprinted, and two folders' fingerprints compared.

    PYTHONPATH=src python benchmarks/compiled_kernels.py FOLDER --out A.json [--jobs 2]
    python benchmarks/compiled_kernels.py --compare A.json B.json

Each file's wrapper runs once on empty CPU tensors at its task's first bench shape, its launches compiled
instead of run: a stand-in driver reports an sm_90 target (an H100's or H200's), tensors report themselves
on a CUDA device of 132 SMs, and the autotuner tries each config once and keeps the first. Every launch is
recorded as its kernel's name, grid, num_warps, num_stages and a hash of its TTGIR with the source
locations stripped (its loops, tiles, loads and arithmetic, independent of names and comments). Two files
whose records agree launch the same compiled kernels on a GPU, however their text differs. Nothing is
timed: files with the same records run at the same speed; `ab_files.py` and `gpu_sweep.py` time them.
With --compare, each file name present in both is compared and the ones that differ are listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SMS = 132  # an H200's (and an H100 SXM's) streaming multiprocessors


def _strip_locations(ir: str) -> str:
    """TTGIR without its loc(...) annotations and #loc definitions, its values numbered in order of appearance
    (MLIR names them after the source's variables): what remains is the kernel itself."""
    ir = re.sub(r"\s*loc\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)", "", ir)
    ir = "\n".join(line for line in ir.splitlines() if not line.startswith("#loc"))
    names: dict[str, str] = {}
    return re.sub(r"%[\w.$-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), ir)


def _install(records: list[dict]) -> None:
    """Compile instead of launch, for sm_90, recording each launch in ``records``."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    class HopperStandIn:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            def run_once(kernel_call, quantiles=None, **kwargs):
                kernel_call()
                return [1.0] * len(quantiles) if quantiles else 1.0
            return run_once

    driver.set_active(HopperStandIn())
    torch.cuda.is_available = lambda: True
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=SMS)
    torch.Tensor.is_cuda = property(lambda self: True)
    compile_only = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        kernel = compile_only(self, *args, grid=grid, warmup=True, **kwargs)
        kernel = kernel.result() if hasattr(kernel, "result") else kernel
        meta = dict(zip(self.arg_names, args)) | kwargs
        ir = _strip_locations(kernel.asm["ttgir"])
        records.append({"kernel": self.fn.__name__, "grid": [int(v) for v in (grid(meta) if callable(grid) else grid)],
                        "num_warps": kernel.metadata.num_warps, "num_stages": kernel.metadata.num_stages,
                        "ttgir": hashlib.sha256(ir.encode()).hexdigest()[:16]})
        return kernel

    JITFunction.run = run


def fingerprint(path: str) -> dict:
    """One file's launches at its first bench shape (run in a fresh process: the patches stay there)."""
    import torch

    from fusionforge.kernelfile import load_module
    from fusionforge.tasks import SCALAR_DTYPE, FusionTask, concrete

    records: list[dict] = []
    _install(records)
    try:
        module = load_module(path, "kernels_" + hashlib.sha256(path.encode()).hexdigest()[:12])
        task = FusionTask.from_dict(module.TASK)
        dims = task.shapes["bench"][0]
        inputs = [1.5 if spec.dtype == SCALAR_DTYPE else
                  torch.empty(concrete(spec.shape, dims), dtype=getattr(torch, spec.dtype)) for spec in task.inputs]
        module.fused_kernel_triton_wrapper(*inputs)
    except Exception as exc:  # noqa: BLE001 - a file that cannot be compiled is a finding, not a stop
        return {"file": Path(path).name, "error": f"{type(exc).__name__}: {exc}"[:400], "launches": records}
    return {"file": Path(path).name, "launches": records}


def compare(a: dict, b: dict) -> dict:
    rows_a, rows_b = ({r["file"]: r for r in d["files"]} for d in (a, b))
    common = sorted(set(rows_a) & set(rows_b))
    differ = [name for name in common if rows_a[name]["launches"] != rows_b[name]["launches"]
              or "error" in rows_a[name] or "error" in rows_b[name]]
    return {"compared": len(common), "identical": len(common) - len(differ), "differ": differ,
            "only_in_first": sorted(set(rows_a) - set(rows_b)), "only_in_second": sorted(set(rows_b) - set(rows_a))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    args = parser.parse_args()
    if args.compare:
        result = compare(*(json.loads(p.read_text()) for p in args.compare))
        print(json.dumps(result, indent=1))
        return 0 if not result["differ"] else 1
    paths = sorted(str(p) for p in args.folder.glob("*.py"))
    with ProcessPoolExecutor(args.jobs, max_tasks_per_child=1) as pool:
        files = list(pool.map(fingerprint, paths))
    result = {"folder": str(args.folder), "target": "cuda:90", "sms": SMS, "files": files}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    errors = [f["file"] for f in files if "error" in f]
    print(f"{len(files)} files, {sum(len(f['launches']) for f in files)} launches compiled, errors: {errors}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
