"""The child process that runs a candidate kernel file: ``python -m fusionforge.verify.runner REQUEST``.

The checker (parent) never imports candidate code; this process does, in its own process group,
and reports what happened. For every input set, in one process and in order:

1. inputs: rebuilt from the task (``make_inputs(dims, seed)``) or from the file's ``get_inputs()``
   under ``torch.manual_seed(seed)``; pristine copies are kept for the mutation check;
2. the Triton wrapper runs (before the PyTorch function, so no freed reference memory exists yet),
   under a dispatch mode that poisons every tensor the wrapper allocates (a NaN with a known
   payload) and records every aten op it dispatches outside Triton launches;
3. the file's PyTorch function runs (and, without a task, again on float64 copies: the reference);
4. the wrapper runs again (after the PyTorch output was freed);
5. inputs are compared with their pristine copies.
Then, if every set ran, a ghost replay on fresh inputs: the wrapper once more with every Triton
launch skipped. If its output is still right, the kernels did not do the work.

Outputs are written to the scratch folder (``torch.save``); the parent compares them with its own
float64 reference, which this process never sees.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusionforge.verify.interpreter import faithful_bfloat16
from fusionforge.verify.launches import LaunchMonitor
from fusionforge.verify.policy import ALLOCATING_OPS, ALLOWED_OPS, POISON


class WrapperWatch(TorchDispatchMode):
    """Records aten ops dispatched by the wrapper itself and poisons the tensors it allocates."""

    def __init__(self, monitor: LaunchMonitor) -> None:
        super().__init__()
        self.monitor = monitor
        self.foreign: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.monitor.inside:
            return out
        name = func.overloadpacket.__name__
        if name not in ALLOWED_OPS and str(func) not in self.foreign:
            self.foreign.append(str(func))
        if name in ALLOCATING_OPS and isinstance(out, torch.Tensor) and out.dtype in POISON:
            int_dtype, pattern = POISON[out.dtype]
            out.view(int_dtype).fill_(pattern)
        return out


def _frames(exc: BaseException) -> list[dict]:
    frames = []
    for e in _chain(exc):
        frames += [{"file": f.filename, "line": f.lineno, "function": f.name}
                   for f in traceback.extract_tb(e.__traceback__)]
    return frames


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        out.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return out


def _error(exc: BaseException, phase: str) -> dict:
    causes = _chain(exc)
    return {"phase": phase, "type": type(exc).__name__, "module": type(exc).__module__,
            "message": str(exc)[:4000], "causes": [f"{type(c).__name__}: {str(c)[:1000]}" for c in causes[1:]],
            "frames": _frames(exc)[-40:], "compile_line": _compile_line(causes)}


def _compile_line(causes: list[BaseException]) -> int | None:
    """Line of a Triton CompilationError inside the kernel source (1-based, relative to the def)."""
    for c in causes:
        node = getattr(c, "node", None)
        if node is not None and getattr(node, "lineno", None) and type(c).__name__.endswith("CompilationError"):
            return int(node.lineno)
    return None


def _save(value, path: Path) -> dict:
    """Save a candidate's return value for the parent; report its exact type."""
    if type(value) is not torch.Tensor:  # noqa: E721 - subclasses are rejected on purpose
        return {"type": type(value).__module__ + "." + type(value).__qualname__}
    torch.save(torch.Tensor.detach(value).to("cpu").clone(), path)
    return {"type": "torch.Tensor", "file": str(path), "device": str(value.device)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.view(-1).view(POISON.get(a.dtype, (a.dtype,))[0]),
                                b.view(-1).view(POISON.get(b.dtype, (b.dtype,))[0])))
    return bool(torch.equal(a, b))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    out_dir = Path(request["out_dir"])
    device = request["device"]
    result: dict = {"sets": [], "import_error": None}

    def finish() -> int:
        (out_dir / "result.json").write_text(json.dumps(result))
        return 0

    if os.environ.get("TRITON_INTERPRET") == "1":
        faithful_bfloat16()
    monitor = LaunchMonitor()
    monitor.install()
    spec = importlib.util.spec_from_file_location("candidate_kernels", request["file"])
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate_kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - anything the module does at import is reported
        result["import_error"] = _error(exc, "import")
        return finish()
    pytorch_fn, wrapper = module.fused_kernel_pytorch, module.fused_kernel_triton_wrapper

    task = None
    if request["task"] is not None:
        from fusionforge.tasks import FusionTask

        task = FusionTask.from_dict(request["task"])

    def make_inputs(input_set: dict) -> list:
        if task is not None:
            return task.make_inputs(input_set["dims"], input_set["seed"], device)
        torch.manual_seed(input_set["seed"])
        values = module.get_inputs()
        return [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]

    def call_wrapper(inputs: list, record: dict, key: str, path: Path) -> bool:
        watch = WrapperWatch(monitor)
        start = len(monitor.launches)
        try:
            with watch:
                out = wrapper(*inputs)
            _sync(device)
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _error(exc, key)
            return False
        finally:
            record[f"{key}_launches"] = len(monitor.launches) - start
            record.setdefault("launches", []).extend(monitor.launches[start:])
            record.setdefault("foreign_ops", []).extend(op for op in watch.foreign
                                                        if op not in record.get("foreign_ops", []))
        record[key] = _save(out, path)
        return True

    for k, input_set in enumerate(request["input_sets"]):
        record: dict = {"label": input_set["label"]}
        result["sets"].append(record)
        try:
            inputs = make_inputs(input_set)
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _error(exc, "inputs")
            break
        pristine = [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs]
        record["input_shapes"] = [list(v.shape) if isinstance(v, torch.Tensor) else None for v in inputs]
        if not call_wrapper(inputs, record, "triton", out_dir / f"triton_{k}.pt"):
            break
        try:
            with torch.no_grad():
                out = pytorch_fn(*[v.clone() if isinstance(v, torch.Tensor) else v for v in pristine])
                _sync(device)
                record["pytorch"] = _save(out, out_dir / f"pytorch_{k}.pt")
                del out
                if task is None:
                    ref = pytorch_fn(*[v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                       for v in pristine])
                    record["reference"] = _save(ref, out_dir / f"reference_{k}.pt")
                    del ref
        except BaseException as exc:  # noqa: BLE001
            record["pytorch_error"] = _error(exc, "pytorch")
        if not call_wrapper(inputs, record, "triton_again", out_dir / f"triton_again_{k}.pt"):
            break
        record["mutated"] = [k for k, (a, b) in enumerate(zip(inputs, pristine))
                             if isinstance(a, torch.Tensor) and not _same(a, b)]
    else:
        if request.get("ghost_set"):
            monitor.skip = True
            ghost: dict = {"label": request["ghost_set"]["label"]}
            call_wrapper(make_inputs(request["ghost_set"]), ghost, "ghost", out_dir / "ghost.pt")
            monitor.skip = False
            result["ghost"] = ghost
    return finish()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
