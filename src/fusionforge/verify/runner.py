"""The child process that runs a candidate kernel file: ``python -m fusionforge.verify.runner REQUEST``.

The checker (parent) never imports candidate code; this process does, in its own process group,
and reports what happened. For every input set, in one process and in order:

1. inputs: rebuilt from the task (``make_inputs(dims, seed)``) or from the file's ``get_inputs()``
   under ``torch.manual_seed(seed)``; a *refill* set instead writes new values into the very tensors
   of an earlier set (same objects, same addresses), so nothing keyed on them can answer;
   pristine copies are kept for the mutation check;
2. the Triton wrapper runs (before the PyTorch function, so no freed reference memory exists yet),
   under a dispatch mode that poisons every tensor the wrapper allocates (a NaN with a known
   payload) and records every aten op it dispatches outside Triton launches, with the ledger
   (``ledger.py``: where every byte the launches read and the output holds came from, and the
   host-side trace) and the host guard (``hostguard.py``: threads, processes, ctypes, host reads);
3. the file's PyTorch function runs (and, without a task, again on float64 copies: the reference);
4. the wrapper runs again (after the PyTorch output was freed), but on a set marked ``once`` (an edge draw);
5. inputs are compared with their pristine copies, after each of the wrapper's calls (a change the second call
   undoes is still a change);
6. on a set marked ``every_config``, the wrapper runs once more per further combination of the configs of the
   autotuners its first call ran, each forced (``launches.LaunchMonitor``), on fresh copies of the inputs, its
   programs reversed as on the second call; each of those calls (and the second) that ran a launch in lockstep runs
   once more with the other lockstep schedule (``interpreter``, Program order).
Then, if every set ran, a ghost replay on fresh inputs: the wrapper once more with every Triton
launch skipped. If its output is still right, the kernels did not do the work.

Outputs are written to the scratch folder (``torch.save``); the parent compares them with its own
float64 reference, which this process never sees, and judges the ledger's problems and the traces.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.overrides import _get_current_function_mode_stack
from torch.utils._device import DeviceContext
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack
from triton.runtime import autotuner

from fusionforge.kernelfile import load_module
from fusionforge.verify.hostguard import HOST_READ_METHODS, FileFrames, HostGuard, methods_of, tampered
from fusionforge.verify.interpreter import KERNEL_FAULTS, LOCKSTEP_RUNS, PROGRAM_ORDER, install_gpu_semantics
from fusionforge.verify.launches import LaunchMonitor
from fusionforge.verify.ledger import HOST_DATA, HOST_READS, Ledger, describe
from fusionforge.verify.memcheck import LAUNCH_LOG, LaunchLog
from fusionforge.verify.policy import (
    ALLOCATING_OPS,
    ALLOWED_OPS,
    POISON,
    changed_settings,
    computed_op,
    full_float32,
    op_name,
    subclasses,
    torch_settings,
)
from fusionforge.verify.sandbox import Seal, die_with_parent, exit_at_once


class WrapperWatch(TorchDispatchMode):
    """Records aten ops dispatched by the wrapper itself, poisons the tensors it allocates, and hands
    every op and launch of the call to its ledger."""

    def __init__(self, monitor: LaunchMonitor, ledger: Ledger, frames: FileFrames | None = None) -> None:
        super().__init__()
        self.monitor, self.ledger, self.frames = monitor, ledger, frames
        self.foreign: list[str] = []

    def launch_own(self) -> bool:
        """Whether the op being dispatched is a launch's own work (Triton's), not the file's code: inside a
        launch, the file's code (a kernel body under the interpreter, a function a kernel calls, which a GPU
        calls at compile time) is traced as the wrapper's."""
        if not self.monitor.inside:
            return False
        # frames: candidate_called, this, __torch_dispatch__, then the code that dispatched
        return self.frames is None or not self.frames.candidate_called(3, in_launch=True)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        launch_own = self.launch_own()
        if not launch_own and function_modes():
            self.check_traced(f"dispatches {func}")
        if others := subclasses(types):  # within a launch too: Triton's own handling of an argument dispatches
            self.ledger.problem("left_trace", f"dispatches {func} on a tensor subclass "
                                              f"({', '.join(t.__name__ for t in others)}), whose own "
                                              "__torch_dispatch__ runs outside the trace")
        if func.namespace == "aten" and func.overloadpacket.__name__ == "resize_" and not launch_own:
            self.ledger.before_resize(func, args[0])
        out = func(*args, **kwargs)
        if launch_own:
            return out
        # host reads and host data are the ledger's to judge (after_op)
        if (op := computed_op(func, args, out, ALLOWED_OPS | HOST_READS | HOST_DATA)) and op not in self.foreign:
            self.foreign.append(op)
        if op_name(func) in ALLOCATING_OPS and isinstance(out, torch.Tensor) and out.dtype in POISON:
            int_dtype, pattern = POISON[out.dtype]
            out.view(int_dtype).fill_(pattern)
        self.ledger.after_op(func, args, kwargs, out, step=not self.monitor.in_trial)
        return out

    def before_launch(self, kernel, args: tuple, kwargs: dict) -> dict:
        self.check_traced("a kernel was launched")
        kwargs = self.ledger.before_launch(kernel, args, kwargs)
        self.as_wrapper_code(kernel)
        if callable(kwargs.get("grid")):
            kwargs = {**kwargs, "grid": self.wrapper_code(kwargs["grid"])}
        return kwargs

    def after_launch(self, compiled=None) -> None:
        self.ledger.after_launch(compiled)

    def check_traced(self, when: str) -> None:
        """The dispatch trace must still see every op: this mode on the stack, torch dispatch not disabled
        and the Python dispatch key not excluded (torch._C guards the patched entry points do not cover); and no
        torch function mode of the file's on, which sees (and may answer) the torch calls of the checker's code."""
        if modes := function_modes():
            self.ledger.problem("left_trace", f"{when} with a torch function mode on ({', '.join(modes)}): it "
                                              "intercepts torch calls outside the dispatch trace")
        if self not in _get_current_dispatch_mode_stack():
            self.ledger.problem("left_trace", f"{when} with the dispatch modes disabled")
        elif torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.Python):
            self.ledger.problem("left_trace", f"{when} with torch's Python dispatch switched off "
                                              "(_DisableTorchDispatch or an excluded Python key)")

    def wrapper_code(self, fn):
        """``fn``, a callable of the file's that Triton calls during a launch (a grid, a heuristic, an autotuner
        hook), run as the wrapper's own code: traced and guarded, not as part of the launch."""
        if fn is None or getattr(fn, "runs_as_wrapper_code", False):
            return fn
        monitor = self.monitor

        def run(*args, **kwargs):
            ledger = getattr(monitor.observer, "ledger", None)  # the call under way's (fn is wrapped once)
            before = ledger.launched_bytes() if ledger is not None else {}
            depth, monitor.depth = monitor.depth, 0
            try:
                return fn(*args, **kwargs)
            finally:
                monitor.depth = depth
                if ledger is not None:
                    ledger.check_unchanged(before, "the file's code that Triton ran in a launch (a grid, a "
                                                   "heuristic, a hook)")

        run.runs_as_wrapper_code = True
        return run

    def as_wrapper_code(self, kernel) -> None:
        """Make the file's callables in a kernel's autotuner and heuristics run as wrapper code."""
        while not inspect.isfunction(kernel) and hasattr(kernel, "fn"):
            if isinstance(kernel, autotuner.Heuristics):
                kernel.values = {name: self.wrapper_code(fn) for name, fn in kernel.values.items()}
            if isinstance(kernel, autotuner.Autotuner):
                for attribute in ("early_config_prune", "perf_model"):
                    setattr(kernel, attribute, self.wrapper_code(getattr(kernel, attribute)))
                for attribute, user in (("pre_hook", "user_defined_pre_hook"), ("post_hook", "user_defined_post_hook")):
                    if getattr(kernel, user, False):
                        setattr(kernel, attribute, self.wrapper_code(getattr(kernel, attribute)))
                for config in kernel.configs:
                    config.pre_hook = self.wrapper_code(config.pre_hook)
            kernel = kernel.fn


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
            "frames": _frames(exc)[-40:], "compile_line": _compile_line(causes),
            "details": next(({**c.details, "message": str(c)} for c in causes
                             if isinstance(getattr(c, "details", None), dict)), None)}


def _compile_line(causes: list[BaseException]) -> int | None:
    """Line of a Triton CompilationError inside the kernel source (1-based, relative to the def)."""
    for c in causes:
        node = getattr(c, "node", None)
        if node is not None and getattr(node, "lineno", None) and type(c).__name__.endswith("CompilationError"):
            return int(node.lineno)
    return None


def function_modes() -> list[str]:
    """The torch function modes on now, by type, but ``with torch.device(...)``'s (it sets the device factories
    default to): no fair wrapper enters any other."""
    if not torch._C._len_torch_function_stack():
        return []
    return [type(mode).__qualname__ for mode in _get_current_function_mode_stack()
            if type(mode) is not DeviceContext]


def _save(value, path: Path, seal: Seal) -> dict:
    """Save a candidate's return value for the parent, its hash noted in the seal at once; report its exact type (a
    tuple's items each, as ``<path stem>_<k>``: a quantizer's values and scales)."""
    if type(value) is tuple:  # noqa: E721 - a tuple's subclass (a named tuple) is no plain tuple
        return {"type": "builtins.tuple",
                "items": [_save(item, path.with_name(f"{path.stem}_{k}{path.suffix}"), seal)
                          for k, item in enumerate(value)]}
    if type(value) is not torch.Tensor:  # noqa: E721 - subclasses are rejected on purpose
        return {"type": type(value).__module__ + "." + type(value).__qualname__}
    with torch._C.DisableTorchFunction():  # a function mode the file left on sees nothing of the save
        torch.save(torch.Tensor.detach(value).to("cpu").clone(), path)
    seal.saved(path)
    return {"type": "torch.Tensor", "file": str(path), "device": str(value.device)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.view(-1).view(POISON.get(a.dtype, (a.dtype,))[0]),
                                b.view(-1).view(POISON.get(b.dtype, (b.dtype,))[0])))
    return bool(torch.equal(a, b))


def _changed(inputs: list, pristine: list) -> set[int]:
    """The positions of the tensor inputs that differ from their pristine copies."""
    return {i for i, (a, b) in enumerate(zip(inputs, pristine)) if isinstance(a, torch.Tensor) and not _same(a, b)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _discover_devices() -> None:
    """Run torch's lazy device discovery now, before the guard is installed.

    torch counts the GPUs through NVML, loaded with ctypes, on the first ``device_count`` after CUDA's
    initialisation, and caches the count; a wrapper's first ``torch.cuda.get_device_properties`` would
    otherwise do it, and the guard would rightly see a ctypes call in the wrapper.
    """
    torch.cuda.init()
    for index in range(torch.cuda.device_count()):
        torch.cuda.get_device_properties(index)


def protected_functions() -> dict[str, tuple[object, str, object]]:
    """The functions the checker's child relies on, bound now: name -> (owner, attribute, function).

    A file that replaces any of them (to blind the ledger, the guard or the monitor) is found by
    ``tampered``, after its import and after each wrapper call.
    """
    import _thread
    import threading

    import torch.utils._python_dispatch as python_dispatch
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit

    owners = [(jit.JITFunction, "run"), (interpreter.InterpretedFunction, "run"), (autotuner.Autotuner, "run"),
              (autotuner.Autotuner, "_bench"), (autotuner.Autotuner, "prune_configs"), (autotuner.Heuristics, "run"),
              (torch, "equal"), (torch.cuda, "synchronize"), (torch, "save"),
              (torch.Tensor, "clone"), (torch.Tensor, "set_"), (torch.Tensor, "untyped_storage"),
              (torch.Tensor, "to"), (torch.Tensor, "detach"), (_thread, "start_new_thread"),
              (threading, "_start_new_thread"), (python_dispatch, "_disable_current_modes"),
              (python_dispatch, "_get_current_dispatch_mode_stack"), (sys.modules[__name__], "_save"),
              (torch._C, "_dispatch_tls_is_dispatch_key_excluded"), (torch._C, "_len_torch_function_stack"),
              (torch._C, "DisableTorchFunction"),
              *((torch.Tensor, name) for name in HOST_READ_METHODS),
              *((torch.Tensor, name) for name in HOST_READ_METHODS)]
    from fusionforge.verify import hostguard, launches, ledger, policy
    from fusionforge.verify import interpreter as gpu_semantics

    # their functions and rule sets; the CPU interpreter's whole machinery (a builder method replaced computes
    # another op than the kernel names, on the CPU alone)
    for module in (ledger, hostguard, launches, policy, gpu_semantics, sys.modules[__name__], interpreter):
        owners += [(module, name) for name, value in vars(module).items()
                   if not name.startswith("__") and (inspect.isfunction(value) or inspect.isclass(value)
                                                     or isinstance(value, (frozenset, tuple)))]
    interpreting = [value for value in vars(interpreter).values()
                    if inspect.isclass(value) and value.__module__ == interpreter.__name__]
    return {**{f"{getattr(owner, '__name__', owner)}.{name}": (owner, name, getattr(owner, name))
               for owner, name in owners if hasattr(owner, name)},
            **methods_of(Ledger, HostGuard, FileFrames, LaunchMonitor, WrapperWatch, *interpreting)}


def process_age() -> float:
    """Seconds since this process started (Linux's /proc, to 10 ms); 0.0 where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        started_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


MAX_CONFIG_RUNS = 16  # combinations of configs run a shape; past it, each config of each autotuner at least once


def config_combinations(tuners: dict) -> list[dict]:
    """The combinations of configs (autotuner -> config) to force, besides the one the first call ran: every one
    while they number MAX_CONFIG_RUNS or fewer (a GPU tunes each autotuner on its own), else one per config of
    the autotuner with the most, the others' configs taken in turn."""
    names = list(tuners)
    lists = [tuners[tuner][1] for tuner in names]
    ran = tuple(tuners[tuner][2] for tuner in names)
    if math.prod(len(configs) for configs in lists) <= MAX_CONFIG_RUNS + 1:
        combinations = list(itertools.product(*lists))
    else:
        combinations = [tuple(configs[turn % len(configs)] for configs in lists)
                        for turn in range(max(len(configs) for configs in lists))]
    return [dict(zip(names, combination)) for combination in combinations if combination != ran]


def config_text(config) -> str:
    """A config's meta-parameters, as a failure names them: 'BLOCK_M=128, BLOCK_N=64'."""
    return ", ".join(f"{key}={value}" for key, value in config.kwargs.items())


def call_key(inputs: list) -> str:
    """What a value-blind wrapper's trace may depend on: the tensors' layouts and the scalar inputs."""
    return describe(list(inputs))


def main(request_path: str) -> int:
    die_with_parent()
    # One intra-op thread. A fresh process's first vectorized float32 tanh split over two threads came out up to
    # 9e-5 off in the second thread's half (torch 2.13's CPU build, in 2 to 8 of 25 processes, never with one
    # thread): the file's PyTorch answer failed a correct file one check in five. Checks run side by side anyway.
    torch.set_num_threads(1)
    seal = Seal()
    request = json.loads(Path(request_path).read_text())
    out_dir = Path(request["out_dir"])
    device = request["device"]
    result: dict = {"sets": [], "import_error": None}
    now = time.perf_counter()
    marks = {"start and imports": now - process_age(), "set-up": now}  # phase -> when it began

    def finish() -> int:
        marks["done"] = time.perf_counter()
        ordered = sorted(marks.items(), key=lambda item: item[1])
        result["phases"] = {name: round(after - began, 3) for (name, began), (_, after) in zip(ordered, ordered[1:])}
        result["phases"].update(compile=round(monitor.compile_seconds, 3),
                                autotune=round(monitor.autotune_seconds, 3))
        seal.write(out_dir, result)
        return 0

    if os.environ.get("TRITON_INTERPRET") == "1":
        install_gpu_semantics()
    if device == "cuda":
        _discover_devices()
    monitor = LaunchMonitor()
    monitor.install()
    with WrapperWatch(monitor, Ledger(device)):  # the first op under a Python mode imports much of torch
        torch.empty_like(torch.empty(2, device=device)).view(-1).contiguous()
    guard = HostGuard()
    guard.install(monitor)
    guard.frames.file = request["file"]
    result["unwatched_events"] = guard.unwatched
    marks["file import"] = time.perf_counter()
    try:
        result["import_events"] = []
        protected, settings = protected_functions(), torch_settings()
        with guard.import_of(result["import_events"]):
            module = load_module(request["file"], "candidate_kernels")
        if tampered(protected):
            result["import_events"].append({"kind": "tampered", "detail": "the file replaces functions the checker "
                                                                          f"uses: {', '.join(tampered(protected))}"})
        if changed := "; ".join(changed_settings(settings)):
            result["import_events"].append({"kind": "settings",
                                            "detail": f"the file changes PyTorch's settings at import: {changed}"})
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
            return task.make_inputs(input_set["dims"], input_set["seed"], device, input_set.get("scalar_seed"),
                                    input_set.get("edge", 0))
        torch.manual_seed(input_set["seed"])
        values = module.get_inputs()
        return [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]

    def call_wrapper(inputs: list, record: dict, key: str, path: Path, reverse: bool = False,
                     latest_first: bool = True) -> bool:
        """Run the wrapper on ``inputs``, its programs in id order or ``reverse`` (``interpreter.PROGRAM_ORDER``),
        into ``record``: the output saved under ``key``, or the error; False if it raised or a kernel faulted (a
        fault is the call's error whatever the wrapper did with the exception)."""
        ledger = Ledger(device, LaunchLog(out_dir / LAUNCH_LOG) if request.get("log_launches") else None,
                        stores_recorded=os.environ.get("TRITON_INTERPRET") == "1")
        ledger.add_inputs(inputs)
        watch = WrapperWatch(monitor, ledger, guard.frames)
        start = len(monitor.launches)
        monitor.observer = watch
        PROGRAM_ORDER.update(reversed=reverse, latest_first=latest_first)  # a race between programs shows on the CPU
        faults = len(KERNEL_FAULTS)
        try:
            with guard.watch(ledger.problems), watch:
                out = wrapper(*inputs)
                watch.check_traced("the wrapper returned")
            if len(KERNEL_FAULTS) > faults:
                raise KERNEL_FAULTS[faults]
            _sync(device)
            ledger.check_output(out)
            if tampered(protected):
                ledger.problem("tampered", f"the wrapper replaces functions the checker uses: "
                                           f"{', '.join(tampered(protected))}")
            if changed := "; ".join(changed_settings(settings)):
                ledger.problem("settings", f"the wrapper changes PyTorch's settings: {changed}")
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _error(KERNEL_FAULTS[faults] if len(KERNEL_FAULTS) > faults else exc, key)
            return False
        finally:
            monitor.observer = None
            PROGRAM_ORDER.update(reversed=False, latest_first=True)
            record[f"{key}_launches"] = len(monitor.launches) - start
            record.setdefault("launches", []).extend(monitor.launches[start:])
            record.setdefault("foreign_ops", []).extend(op for op in watch.foreign
                                                        if op not in record.get("foreign_ops", []))
            record[f"{key}_problems"] = ledger.problems
            record[f"{key}_trace"] = ledger.trace
        record[key] = _save(out, path, seal)
        return True

    def reruns(tuners: dict, pristine: list, record: dict, k: int, lockstep: bool) -> bool:
        """Run the wrapper again on fresh copies of the inputs, its programs reversed: once per further combination of
        configs of the autotuners its first call ran (``config_combinations``), each forced; and where a reversed
        call ran a launch in lockstep (``lockstep`` for the set's second call), that call once more with the earliest
        arrival first. ``record["configs"]``, one record per run."""
        record["configs"] = []

        def rerun(forced: dict, combination: dict | None, latest_first: bool) -> bool:
            record["configs"].append(forced)
            monitor.forced = combination
            try:
                return call_wrapper([v.clone() if isinstance(v, torch.Tensor) else v for v in pristine], forced,
                                    "triton", out_dir / f"triton_config{len(record['configs'])}_{k}.pt",
                                    reverse=True, latest_first=latest_first)
            finally:
                monitor.forced = None

        if lockstep and not rerun({"config": None, "schedule": "earliest"}, None, False):
            return False
        for combination in config_combinations(tuners):
            config = "; ".join(f"{tuners[tuner][0]} ({config_text(config)})" for tuner, config in combination.items())
            runs = LOCKSTEP_RUNS["count"]
            if not rerun({"config": config}, combination, True):
                return False
            if LOCKSTEP_RUNS["count"] > runs and not rerun({"config": config, "schedule": "earliest"}, combination,
                                                          False):
                return False
        return True

    marks["input sets"] = time.perf_counter()
    kept: dict[int, list] = {}  # the inputs of the sets a later set refills
    refilled = {s["refill_of"] for s in request["input_sets"] if s.get("refill_of") is not None}
    for k, input_set in enumerate(request["input_sets"]):
        record: dict = {"label": input_set["label"]}
        result["sets"].append(record)
        try:
            inputs = make_inputs(input_set)
            if input_set.get("refill_of") is not None:  # new values in the same tensors; scalars kept
                same = kept.pop(input_set["refill_of"])
                for old, new in zip(same, inputs):
                    if isinstance(old, torch.Tensor):
                        old.copy_(new)
                inputs = same
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _error(exc, "inputs")
            break
        if k in refilled:
            kept[k] = inputs
        pristine = [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs]
        record["input_shapes"] = [list(v.shape) if isinstance(v, torch.Tensor) else None for v in inputs]
        record["call_key"] = call_key(inputs)
        monitor.tuners = {} if input_set.get("every_config") else None
        if not call_wrapper(inputs, record, "triton", out_dir / f"triton_{k}.pt"):
            break
        tuners, monitor.tuners = monitor.tuners, None
        mutated = _changed(inputs, pristine)
        try:
            with torch.no_grad():
                out = pytorch_fn(*[v.clone() if isinstance(v, torch.Tensor) else v for v in pristine])
                _sync(device)
                record["pytorch"] = _save(out, out_dir / f"pytorch_{k}.pt", seal)
                del out
                if task is None:
                    ref = pytorch_fn(*[v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                       for v in pristine])
                    record["reference"] = _save(ref, out_dir / f"reference_{k}.pt", seal)
                    del ref
        except BaseException as exc:  # noqa: BLE001
            record["pytorch_error"] = _error(exc, "pytorch")
        runs = LOCKSTEP_RUNS["count"]
        if not input_set.get("once") and not call_wrapper(inputs, record, "triton_again",
                                                          out_dir / f"triton_again_{k}.pt", reverse=True):
            break
        record["mutated"] = sorted(mutated | _changed(inputs, pristine))
        if not reruns(tuners or {}, pristine, record, k, LOCKSTEP_RUNS["count"] > runs):
            break
    else:
        if request.get("ghost_set"):
            marks["ghost replay"] = time.perf_counter()
            monitor.skip = True
            ghost: dict = {"label": request["ghost_set"]["label"]}
            call_wrapper(make_inputs(request["ghost_set"]), ghost, "ghost", out_dir / "ghost.pt")
            monitor.skip = False
            result["ghost"] = ghost
    return finish()


if __name__ == "__main__":
    with full_float32():  # a file without a task: its own PyTorch answer at float32, as a task's (checker.py)
        code = main(sys.argv[1])
    if os.environ.get("FUSIONFORGE_MEMCHECK") == "1":
        raise SystemExit(code)  # compute-sanitizer reports as the CUDA context ends: let it end
    exit_at_once(code)
