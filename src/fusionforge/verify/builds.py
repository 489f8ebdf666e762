"""A file's kernels compiled for a GPU on any machine: does each launch fit the GPU's shared memory?

On a GPU, Triton compiles a kernel at its first launch and fails (OutOfResources) when the config needs more
shared memory than a block may have; an autotuned kernel fails when every config does. Triton's interpreter on the
CPU compiles nothing, so a file could pass the check there and fail on every GPU. Here the file's wrapper runs on
meta tensors at the bench shape (no data, no kernel runs): each launch is recorded, an autotuned launch once for
every config its pruning keeps, and compiled for the target with Triton's own specialization of the arguments
(pointers 16-byte aligned as the GPU's allocations are, sizes divisible by 16 where they are), and its shared memory
compared with the target's. A launch none of whose configs fits fails as it would on the GPU. This predicts; it is
not a defence: the file's code runs here without the check's guards and could fool it, and a GPU's own compile
decides there.

    python -m fusionforge.verify.builds REQUEST.json   (the child: ``run_child``; the parent: ``build_failure``)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from fusionforge.verify import analysis
from fusionforge.verify.sandbox import Seal, exit_at_once, run_child
from fusionforge.verify.verdict import Failure

# target: (compute capability, shared memory a block may have in bytes, what it is)
TARGETS = {"sm_90": (90, 232448, "Hopper: H100, H200")}
DEFAULT_TARGET = "sm_90"
MAX_BUILDS = 32  # distinct compilations a file gets (a wrapper that launches in a loop repeats its builds)


def target_for(name: str | None) -> str | None:
    """The build target asked for: ``name``, else $FUSIONFORGE_BUILD_TARGET, else sm_90; None for "none" (no
    builds). ValueError for a target not in TARGETS."""
    name = name or os.environ.get("FUSIONFORGE_BUILD_TARGET") or DEFAULT_TARGET
    if name == "none":
        return None
    if name not in TARGETS:
        raise ValueError(f"build target {name!r}: one of {', '.join(TARGETS)} or none")
    return name


def build_failure(path: str | Path, task, target: str = DEFAULT_TARGET, timeout: float = 300.0) -> Failure | None:
    """The compile failure the file's kernels would meet on ``target`` at the bench shape, or None (they fit, or
    there is nothing to predict: ``build_report``)."""
    report = build_report(path, task, target, timeout)
    return _judge(report, target) if report else None


def build_report(path: str | Path, task, target: str = DEFAULT_TARGET, timeout: float = 300.0) -> dict | None:
    """Each launch of the file's wrapper at the bench shape and its builds for ``target``: {"sites": [{"kernel",
    "line", "builds": [{"config", "shared", "error"}]}]}, or {"skipped": why} when the wrapper could not run on meta
    tensors; None when the child ran out of time or died (the GPU's own compile still decides)."""
    with tempfile.TemporaryDirectory(prefix="fusionforge-build-") as scratch:
        request = {"file": str(Path(path).resolve()), "task": task.to_dict() if task else None, "target": target,
                   "out_dir": scratch}
        result, _, _ = run_child("fusionforge.verify.builds", request, Path(scratch), "build", timeout)
    return None if result is None or "forged" in result else result


def _judge(result: dict, target: str) -> Failure | None:
    """A launch fails when every config it would be launched with asks for a grid past CUDA's limits
    (``GRID_LIMITS``), needs more shared memory than ``target`` has, or fails to compile for the kernel's own source
    (a call of a plain Python function runs under the CPU's interpreter only). A build that failed otherwise, or was
    not made, leaves its launch unjudged (the harness, not the file, may be at fault, and the config left out might
    have fitted)."""
    _, limit, gpus = TARGETS[target]
    for site in result.get("sites", []):
        over = site.get("over_grid", [])
        if over and all(over):  # every config's grid: a launch no GPU makes
            message = (f"the grid of {site['kernel']} asks for {over[0]} at the bench shape: CUDA cannot launch it "
                       "(axes y and z take at most 65535 programs)")
            return analysis.error_failure({"type": "ValueError", "message": message}, "Triton", site.get("line"),
                                          "bench", compile_error=False)
        if site["builds"] and all(b.get("kernel_error") for b in site["builds"]):
            error = site["builds"][0]["error"]
            kind, _, message = error.partition(": ")
            return analysis.error_failure({"type": kind, "message": f"{message} ({site['kernel']} compiled for "
                                                                    f"{target} ({gpus}) at the bench shape)"},
                                          "Triton", site.get("line"), "bench", compile_error=True)
        sizes = [b for b in site["builds"] if b.get("shared") is not None]
        if not sizes or any(b["shared"] <= limit for b in sizes) or len(sizes) < len(site["builds"]):
            continue
        smallest = min(sizes, key=lambda b: b["shared"])
        count = f"every one of its {len(sizes)} configs" if len(sizes) > 1 else "its config"
        message = (f"OutOfResources: out of resource: shared memory, Required: {smallest['shared']}, Hardware limit: "
                   f"{limit} ({site['kernel']} compiled for {target} ({gpus}) at the bench shape: {count} too "
                   f"large; the smallest: {smallest['config']})")
        return analysis.error_failure({"type": "OutOfResources", "message": message}, "Triton", site.get("line"),
                                      "bench", compile_error=True)
    return None


# -- the child -----------------------------------------------------------------------------------------------------

def meta_inputs(module, task) -> list:
    """The inputs at the bench shape as meta tensors (shapes and dtypes, no data); a file without a task: its own
    get_inputs(), moved to meta."""
    import torch

    from fusionforge.tasks import SCALAR_DTYPE, concrete

    if task is None:
        return [v.to("meta") if isinstance(v, torch.Tensor) else v for v in module.get_inputs()]
    dims = task.shapes["bench"][0]
    return [spec.init.get("value", 1.0) if spec.dtype == SCALAR_DTYPE else
            torch.empty(concrete(spec.shape, dims), dtype=getattr(torch, spec.dtype), device="meta")
            for spec in task.inputs]


# CUDA's limits on a grid's programs per axis (x, y, z): a launch past them fails on any GPU.
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def grid_size(grid, meta: dict) -> list[int] | None:
    """The programs a launch's grid asks for per axis, its meta-parameters ``meta`` given; None when the grid cannot
    be evaluated here (it reads something a meta tensor does not have)."""
    try:
        size = grid(meta) if callable(grid) else grid
        return [int(n) for n in size]
    except Exception:
        return None


def over_grid_limits(size: list[int] | None) -> str | None:
    """How ``size`` exceeds GRID_LIMITS, in words, or None."""
    axes = "xyz"
    over = [f"{n} programs on axis {axes[k]} (at most {limit})" for k, (n, limit) in
            enumerate(zip(size or [], GRID_LIMITS)) if n > limit]
    return "; ".join(over) or None


def record_launches(module, inputs: list, file: str) -> list[dict]:
    """Run the wrapper with Triton's launches recorded instead of run: one site a launch, its (kernel, args,
    kwargs) for each config it would be compiled with."""
    import torch
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    sites: list[dict] = []
    tuning: list[dict] = []  # the autotuned launch whose configs are being recorded

    def line_of_caller() -> int | None:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename != file:
            frame = frame.f_back
        return frame.f_lineno if frame is not None else None

    def jit_run(self, *args, grid, warmup, **kwargs):
        size = grid_size(grid, {**dict(zip(self.arg_names, args)), **kwargs})
        # as launched: a config's hook may set a descriptor's block shape, and the next config's hook reset it
        args = tuple(_as_launched(a) for a in args)
        kwargs = {k: _as_launched(v) for k, v in kwargs.items()}
        if tuning:
            tuning[-1]["launches"].append((self, args, kwargs))
            tuning[-1]["grids"].append(size)
        else:
            sites.append({"kernel": self.__name__, "line": line_of_caller(), "launches": [(self, args, kwargs)],
                          "grids": [size]})

    def tuner_run(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        site = {"kernel": getattr(self.fn, "__name__", "kernel"), "line": line_of_caller(), "launches": [],
                "grids": []}
        tuning.append(site)
        configs = self.prune_configs(kwargs)
        try:
            for config in configs:
                if config.pre_hook is not None:  # as Triton's autotuner runs it before each launch
                    config.pre_hook({**self.nargs, **kwargs, **config.all_kwargs()})
                self.fn.run(*args, **kwargs, **config.all_kwargs())
        finally:
            tuning.pop()
        self.best_config = configs[0]  # a wrapper may size what follows by the config the autotuner picked
        sites.append(site)

    JITFunction.run, Autotuner.run = jit_run, tuner_run
    with torch.no_grad():
        module.fused_kernel_triton_wrapper(*inputs)
    return sites


def _as_launched(arg):
    """A host tensor descriptor copied with its block shape (a config's hook sets it in place); anything else."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    if isinstance(arg, TensorDescriptor):
        return dataclasses.replace(arg, block_shape=list(arg.block_shape))
    return arg


def compile_launch(target: str, launch: tuple):
    """Compile one recorded launch (kernel, args, kwargs) for ``target`` with Triton's own specialization of its
    arguments: the CompiledKernel (``metadata.shared``: bytes of shared memory; ``asm["ptx"]``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    jit_fn, args, kwargs = launch
    gpu = GPUTarget("cuda", TARGETS[target][0], 64)
    backend = make_backend(gpu)
    kwargs = {"debug": False, **kwargs}
    binder = create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit_fn._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(jit_fn, signature, constexprs, attrs), target=gpu, options=options.__dict__)


def config_text(launch: tuple) -> str:
    """A recorded launch's constexprs, warps and stages in words."""
    return ", ".join(f"{k}={v}" for k, v in launch[2].items() if k.isupper() or k in ("num_warps", "num_stages"))


def source_errors(module) -> list[dict]:
    """A site for each of the module's kernels whose source Triton cannot walk (``JITFunction.cache_key``: the
    kernel and every function it calls; a plain Python function fails it, one only the CPU's interpreter runs),
    whether or not the wrapper runs on meta tensors."""
    from triton.runtime.jit import JITFunction

    sites = []
    for value in vars(module).values():
        for _ in range(8):  # an autotuner's, a heuristic's kernel
            if isinstance(value, JITFunction) or not hasattr(value, "fn"):
                break
            value = value.fn
        if not isinstance(value, JITFunction):
            continue
        try:
            _ = value.cache_key
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
            sites.append({"kernel": value.__name__, "line": value.fn.__code__.co_firstlineno,
                          "builds": [{"config": "", "shared": None, "error": error, "kernel_error": True}]})
    return sites


def _build(target: str, launch: tuple) -> dict:
    """One recorded launch built for ``target``: its config in words and its shared memory, or the error;
    ``kernel_error`` when the kernel's own source is at fault (a type error), not the harness (a kernel whose
    source Triton cannot walk never gets here: ``source_errors``)."""
    from triton.compiler.errors import CompilationError

    config = config_text(launch)
    try:
        compiled = compile_launch(target, launch)
    except Exception as exc:
        required = re.search(r"out of resource: shared memory, Required: (\d+)", str(exc))
        if required:  # the compiler's own check (it stops before the kernel is built)
            return {"config": config, "shared": int(required.group(1)), "error": None}
        return {"config": config, "shared": None, "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                "kernel_error": isinstance(exc, CompilationError)}
    return {"config": config, "shared": int(compiled.metadata.shared), "error": None}


def main(request_path: str) -> int:
    seal = Seal()
    request = json.loads(Path(request_path).read_text())
    out_dir = Path(request["out_dir"])
    from fusionforge.kernelfile import load_module
    from fusionforge.tasks import FusionTask

    task = FusionTask.from_dict(request["task"]) if request["task"] else None
    try:
        module = load_module(request["file"], "candidate_kernels")
    except Exception as exc:  # the checker reports the import's error
        seal.write(out_dir, {"skipped": f"{type(exc).__name__}: {exc}"[:300]})
        return 0
    if broken := source_errors(module):
        seal.write(out_dir, {"sites": broken})
        return 0
    try:
        sites = record_launches(module, meta_inputs(module, task), request["file"])
    except Exception as exc:  # a wrapper that cannot run on meta tensors: nothing to predict here
        seal.write(out_dir, {"skipped": f"{type(exc).__name__}: {exc}"[:300]})
        return 0
    builds: dict[tuple, dict] = {}
    result = []
    for site in sites:
        rows = []
        for launch in site["launches"]:
            key = (launch[0].__name__, repr(launch[1]), repr(sorted(launch[2].items(), key=str)))
            if key not in builds and len(builds) == MAX_BUILDS:  # a config left out: the launch predicts nothing
                rows.append({"config": config_text(launch), "shared": None, "error": "not built (MAX_BUILDS)"})
                continue
            if key not in builds:
                builds[key] = _build(request["target"], launch)
            rows.append(builds[key])
        result.append({"kernel": site["kernel"], "line": site["line"], "builds": rows,
                       "over_grid": [over_grid_limits(size) for size in site["grids"]]})
    seal.write(out_dir, {"sites": result})
    return 0


if __name__ == "__main__":
    exit_at_once(main(sys.argv[1]))
