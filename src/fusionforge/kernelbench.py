"""KernelBench problems as tasks: a module ``Model`` with ``get_inputs()`` and ``get_init_inputs()``.

``KernelBenchTask.from_problem(path)`` reads a problem in KernelBench's format and makes a task the
checker, the timer and the attempt loop take like a generated one. One call's arguments are the
problem's inputs (``get_inputs()``) followed by the module's weights (its parameters, then its buffers,
``.`` in their names written ``_``): a kernel is given the weights, so the reference and the kernel
compute with the same ones. The reference is the problem's own module run in float64 on those
arguments (``torch.func.functional_call``); PyTorch at the task's dtype is the same module at that dtype.

Sizes are the problem's module-level integer constants (``batch_size = 128``): the bench shape is the
problem's own, and test shapes may set some of them smaller (``--test-dims batch_size=3,dim=37``), for
Triton's interpreter on a CPU. Each input set is drawn on the CPU under its seed: the module is built
(its default initialisation draws the weights) and ``get_inputs()`` called, both under
``torch.manual_seed(seed)``; a weight initialised to one value everywhere (a norm's scale, shift and
running statistics) is drawn anew around it; floating tensors are then cast to the task's dtype.

The problem's code runs in this process and in the checker's: it is the task, trusted like one, so it
comes only from a task given to the checker (``--task``, a handout, an eval's suite), never from a
kernel file's own TASK.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import inspect
import json
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusionforge.tasks import DTYPES, TaskError

KIND = "kernelbench"
BOUND_MODULES = 8  # modules kept bound to a call's weights (the timer's input sets, the checker's current one)


def problem_constants(source: str) -> dict[str, int]:
    """The module-level ``NAME = <int>`` assignments of a problem, in order: its sizes."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise TaskError(f"the problem is not valid Python: line {e.lineno}: {e.msg}") from None
    constants = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and type(node.value.value) is int):
            constants[node.targets[0].id] = node.value.value
    return constants


def parse_dims(text: str, constants: dict[str, int]) -> dict[str, int]:
    """``"batch_size=3,dim=37"``: sizes that override the problem's constants (each must be one of them)."""
    dims = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not value.strip().lstrip("-").isdigit():
            raise TaskError(f"test dims: {item!r} is not NAME=INTEGER")
        if name not in constants:
            known = ", ".join(constants) or "none"
            raise TaskError(f"test dims: {name!r} is not one of the problem's integer constants ({known})")
        if int(value) < 1:
            raise TaskError(f"test dims: {name} must be at least 1")
        dims[name] = int(value)
    return dims


@dataclass
class KernelBenchTask:
    """A KernelBench problem at one dtype, with its sizes (``shapes``) and its call's argument names."""

    id: str
    seed: int
    dtype: str
    name: str
    source: str
    shapes: dict[str, list[dict[str, int]]]
    input_names: list[str]
    weight_names: list[str]  # the module's parameter and buffer names, as named_parameters/named_buffers give them
    difficulty: str = KIND
    description: str = ""
    signature: str = ""
    steps: list = field(default_factory=list)  # no op chain: the module is the computation
    accumulates = False  # its inputs' rounding is the checker's bound (no scan of the catalog to round)
    arg_reduction = None  # no catalog argmax ends it: an integer output is compared exactly
    quantizer = None  # nor a catalog quantizer: one output
    edge_draws = False  # the problem's own get_inputs draws its inputs: no edge sets

    @property
    def output_dtype(self) -> str:
        """The dtype the module returns at the task's dtype: the task's."""
        return self.dtype

    @property
    def outputs(self) -> list[tuple[list, str]]:
        """One output at the task's dtype, of the shape the module gives (no symbolic shape: [])."""
        return [([], self.output_dtype)]

    @property
    def output_dtypes(self) -> tuple:
        """The torch dtype of the output (``FusionTask.output_dtypes``)."""
        return (getattr(torch, self.output_dtype),)

    def picked_from(self, inputs: list) -> None:
        """No values for the index rule (``FusionTask.picked_from``): a module's integers must equal the reference."""
        return None
    _namespaces: dict = field(default_factory=dict, repr=False, compare=False)
    _modules: dict = field(default_factory=dict, repr=False, compare=False)  # dims -> the module built for them
    _by_shape: dict = field(default_factory=dict, repr=False, compare=False)  # arguments' shapes -> dims
    _bound: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)  # weights -> (them, module)

    family = KIND

    # -- making one ------------------------------------------------------------------------------
    @classmethod
    def from_problem(cls, path: str | Path, dtype: str = "float32", seed: int = 0,
                     test_dims: dict[str, int] | None = None) -> KernelBenchTask:
        """The task for the problem file at ``path``; TaskError (one line) when it is not a KernelBench problem."""
        path = Path(path)
        try:
            source = "\n".join(path.read_text().splitlines()) + "\n"  # as TASK carries it: a line per item
        except (OSError, UnicodeDecodeError) as e:
            raise TaskError(f"cannot read the problem {path}: {e}") from None
        if dtype not in DTYPES:
            raise TaskError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        constants = problem_constants(source)
        bench = dict(constants)
        test = {**constants, **(test_dims or {})}
        name = path.stem
        digest = hashlib.sha256(source.encode()).hexdigest()
        shapes = {"test": [test], "bench": [bench]}
        task = cls(id="", seed=seed, dtype=dtype, name=name, source=source, shapes=shapes,
                   input_names=[], weight_names=[])
        task.input_names, task.weight_names = task._argument_names(bench)
        task.description = f"KernelBench problem {name} ({dtype})"
        task.signature = f"{KIND}|{dtype}|{name}|{digest[:12]}"
        key = json.dumps([digest, dtype, seed, shapes], sort_keys=True)
        task.id = "kb-" + hashlib.sha256(key.encode()).hexdigest()[:12]
        if test_dims:
            task._check_test_shape()
        return task

    def _argument_names(self, dims: dict[str, int]) -> tuple[list[str], list[str]]:
        namespace = self._namespace(dims)
        forward = inspect.signature(namespace["Model"].forward)
        params = [p for p in forward.parameters.values() if p.name != "self"]
        with _rng(self.seed), torch.device("meta"):  # only how many: no tensor of the bench size is made
            count = len(namespace["get_inputs"]())
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params) or len(params) < count:
            inputs = [f"input_{k}" for k in range(count)]
        else:
            inputs = [p.name for p in params[:count]]
        module = self._module(dims)
        weights = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
        taken = set(inputs)
        for weight in weights:
            arg = weight.replace(".", "_")
            if arg in taken:
                raise TaskError(f"the module's weight {weight!r} and an input are both named {arg!r}")
            taken.add(arg)
        return inputs, weights

    def _check_test_shape(self) -> None:
        """The test sizes must give the module a shape it runs at, and the module built at the bench sizes (a
        kernel file's PyTorch function on a GPU) must compute the same there: both run on meta tensors."""
        test, bench = self.shapes["test"][0], self.shapes["bench"][0]
        with torch.device("meta"):
            self._remember(self._draw(bench, self.seed), bench)
        try:
            with torch.device("meta"):
                args = self._draw(test, self.seed)
                self._remember(args, test)
                out = self._call(args)
        except Exception as e:  # noqa: BLE001 - any error of the problem's code is the user's to fix
            raise TaskError(f"the problem does not run at the test dims {test}: {type(e).__name__}: {e}") from None
        try:
            with torch.device("meta"):
                same = _shapes(self._call(args, self._module(bench))) == _shapes(out)
        except Exception:  # noqa: BLE001 - the answer is the same: the sizes it was built with matter
            same = False
        if not same:
            raise TaskError("the problem's forward depends on the sizes its module was built with, so a kernel "
                            "file's PyTorch function cannot run at other sizes: drop --test-dims")

    # -- the problem's code ----------------------------------------------------------------------
    def _namespace(self, dims: dict[str, int]) -> dict[str, Any]:
        """The problem's module-level names, its constants set to ``dims`` (get_inputs reads them when called).

        The problem runs as a module of its own in ``sys.modules`` (torch.compile imports its classes' modules)."""
        key = tuple(sorted(dims.items()))
        if key not in self._namespaces:
            digest = hashlib.sha256(repr((self.source, key)).encode()).hexdigest()[:12]
            module = types.ModuleType(f"fusionforge_kernelbench_{digest}")
            sys.modules[module.__name__] = module
            try:
                exec(compile(self.source, f"<kernelbench {self.name}>", "exec"), module.__dict__)
            except Exception as e:  # noqa: BLE001 - reported as the task's error
                raise TaskError(f"the problem fails to load: {type(e).__name__}: {e}") from None
            namespace = module.__dict__
            missing = [n for n in ("Model", "get_inputs", "get_init_inputs") if not callable(namespace.get(n))]
            if missing:
                raise TaskError(f"not a KernelBench problem: it defines no {', '.join(missing)}")
            namespace.update(dims)
            self._namespaces[key] = namespace
        return self._namespaces[key]

    def _module(self, dims: dict[str, int]):
        """The problem's module built for ``dims`` on the meta device: its structure, without weights."""
        key = tuple(sorted(dims.items()))
        if key not in self._modules:
            namespace = self._namespace(dims)
            with torch.device("meta"):
                self._modules[key] = namespace["Model"](*namespace["get_init_inputs"]())
        return self._modules[key]

    def _draw(self, dims: dict[str, int], seed: int) -> list:
        """The inputs, then the weights, as the problem makes them under ``seed`` (current device: CPU or meta)."""
        namespace = self._namespace(dims)
        with _rng(seed):
            module = namespace["Model"](*namespace["get_init_inputs"]())
            inputs = list(namespace["get_inputs"]())
        weights = dict(module.named_parameters()) | dict(module.named_buffers())
        with _rng(seed + 1):
            values = inputs + [_varied(weights[n].detach()) for n in self.weight_names]
        dtype = getattr(torch, self.dtype)
        return [v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in values]

    def _module_for(self, args: list):
        """The module built for the sizes that gave arguments of these shapes (the bench sizes' if none did)."""
        return self._module(self._by_shape.get(_shape_key(args), self.shapes["bench"][0]))

    def _call(self, args: list, module=None):
        """``module`` (default: the one for these arguments) on ``args`` (inputs, then weights) at their dtype."""
        module = module if module is not None else self._module_for(args)
        n = len(self.input_names)
        weights = dict(zip(self.weight_names, args[n:]))
        return torch.func.functional_call(module, weights, tuple(args[:n]))

    def _remember(self, args: list, dims: dict[str, int]) -> None:
        """Which sizes gave arguments of these shapes: the module for a call is the one built for them."""
        earlier = self._by_shape.setdefault(_shape_key(args), dims)
        if earlier != dims:
            raise TaskError(f"the sizes {earlier} and {dims} give arguments of the same shapes: "
                            "test dims must differ from the bench shape in some argument's shape")

    def argument_shapes(self, dims: dict[str, int]) -> list[tuple | str]:
        """Each argument's shape at ``dims`` (a non-tensor argument: its type), from a draw on meta tensors."""
        with torch.device("meta"):
            args = self._draw(dims, self.seed)
        return [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]

    # -- what the checker and the timer call -----------------------------------------------------
    @property
    def arg_names(self) -> list[str]:
        return self.input_names + [w.replace(".", "_") for w in self.weight_names]

    def make_inputs(self, dims: dict[str, int], seed: int, device: str = "cpu", scalar_seed: int | None = None,
                    edge: int = 0) -> list:
        """One call's arguments at ``dims`` drawn under ``seed`` on the CPU, then moved to ``device``; the
        non-tensor arguments drawn under ``scalar_seed`` when given (a refill keeps its scalars). No edge draws
        (``edge_draws``)."""
        if edge:
            raise TaskError("a KernelBench problem's inputs come from its own get_inputs: it has no edge draws")
        args = self._draw(dims, seed)
        if scalar_seed is not None:
            kept = self._draw(dims, scalar_seed)
            args = [a if isinstance(a, torch.Tensor) else b for a, b in zip(args, kept)]
        self._remember(args, dims)
        return [a.to(device).contiguous() if isinstance(a, torch.Tensor) else a for a in args]

    def function(self, *args):
        """PyTorch at the task's dtype: the problem's module holding these weights as its own, called as
        KernelBench calls it (``model(*inputs)``, no per-call cost of swapping the weights in)."""
        n = len(self.input_names)
        weights = args[n:]
        key = tuple(id(w) for w in weights) + _shape_key(list(args))
        kept, module = self._bound.get(key, ((), None))
        if module is None or not all(a is b for a, b in zip(kept, weights)):
            module = copy.deepcopy(self._module_for(list(args)))
            for name, value in zip(self.weight_names, weights):
                owner, _, leaf = name.rpartition(".")
                holder = module.get_submodule(owner)
                if leaf in holder._parameters:
                    holder._parameters[leaf] = torch.nn.Parameter(value, requires_grad=value.requires_grad)
                else:
                    holder._buffers[leaf] = value
            self._bound[key] = (weights, module)  # the weights kept alive: no other tensor takes their ids
            while len(self._bound) > BOUND_MODULES:
                self._bound.popitem(last=False)
        self._bound.move_to_end(key)
        return module(*args[:n])

    def reference(self, inputs: list):
        """The trusted result: the problem's module in float64 on float64 copies of the arguments."""
        return self._call([a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                           for a in inputs])

    def cost(self, dims: dict[str, int]) -> dict[str, int]:
        """Fewest bytes (arguments read once, the output written once) and FLOPs (PyTorch's count of the
        matmuls and convolutions), from a run on meta tensors; zeros when the problem cannot run there."""
        from torch.utils.flop_counter import FlopCounterMode

        try:
            with torch.device("meta"):
                args = self._draw(dims, self.seed)
                self._remember(args, dims)
                with FlopCounterMode(display=False) as counter:
                    out = self._call(args)
        except Exception:  # noqa: BLE001 - the roofline is then unknown, not wrong
            return {"bytes": 0, "flops": 0, "unfused_bytes": 0}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        return {"bytes": nbytes, "flops": int(counter.get_total_flops()), "unfused_bytes": nbytes}

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": KIND, "id": self.id, "seed": self.seed, "difficulty": self.difficulty, "dtype": self.dtype,
                "description": self.description, "signature": self.signature, "name": self.name,
                "inputs": self.input_names, "weights": self.weight_names, "shapes": self.shapes,
                "source": self.source.splitlines(),
                "cost": {family: [self.cost(d) for d in dims] for family, dims in self.shapes.items()}}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> KernelBenchTask:
        try:
            task = cls(id=d["id"], seed=d["seed"], dtype=d["dtype"], name=d["name"],
                       source="\n".join(d["source"]) + "\n", shapes=d["shapes"], input_names=list(d["inputs"]),
                       weight_names=list(d["weights"]),
                       difficulty=d.get("difficulty", KIND), description=d.get("description", ""),
                       signature=d.get("signature", ""))
        except (KeyError, TypeError) as e:
            raise TaskError(f"malformed KernelBench task: missing or wrong field {e}") from None
        if task.dtype not in DTYPES:
            raise TaskError(f"malformed task: dtype {task.dtype!r} is not one of {', '.join(DTYPES)}")
        if task.signature.rpartition("|")[2] != hashlib.sha256(task.source.encode()).hexdigest()[:12]:
            raise TaskError("malformed task: its problem's source is not the one its signature names")
        return task


def _varied(weight: torch.Tensor) -> torch.Tensor:
    """A weight its module initialises to one value everywhere (a norm's scale 1 and shift 0, its running
    statistics) drawn anew around it, so that a kernel ignoring it fails: c * U(0.5, 1.5) keeps the sign of
    c (a variance stays positive), 0 becomes 0.5 * N(0, 1). Integer buffers and varied weights as they are."""
    if not weight.is_floating_point() or weight.numel() < 2 or weight.is_meta:
        return weight
    first = weight.reshape(-1)[0]
    if not bool((weight == first).all()):
        return weight
    if float(first) == 0.0:
        return 0.5 * torch.randn(weight.shape, dtype=weight.dtype)
    return first * (0.5 + torch.rand(weight.shape, dtype=weight.dtype))


def _shapes(out) -> list:
    return [tuple(t.shape) for t in ([out] if isinstance(out, torch.Tensor) else out)]


def _shape_key(args: list) -> tuple:
    return tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else repr(a) for a in args)


@contextlib.contextmanager
def _rng(seed: int):
    """``torch.manual_seed(seed)`` for the block, the global generator's state restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield



# -- the kernel file to fill in ------------------------------------------------------------------
def skeleton(task: KernelBenchTask, triton: str | None = None, attempt: int = 1) -> str:
    """The kernel file in the seed format for ``task``, its TRITON section left to write (``triton``: the text
    standing in for it, default the kernel's and the wrapper's signatures with what to write).

    PYTHON: TASK (the problem's source among its fields), the problem's code as it stands with its
    ``get_inputs`` named ``get_problem_inputs``, and the PyTorch function: the problem's module on the
    given weights. TEST: ``get_inputs`` (the problem's inputs, then the module's weights, at the task's
    dtype), on a CPU at the test sizes.
    """
    from fusionforge.codegen.render import task_literal
    from fusionforge.kernelfile import HEADER, render

    python = "\n\n\n".join([task_literal(task, item_per_line=("source",)),
                             _problem_code(task.source, HEADER).strip("\n"), _pytorch_function(task)])
    return render(task.description, python, triton or _triton_stub(task), _get_inputs(task), attempt)


def _problem_code(source: str, header: str) -> str:
    """The problem's code without the imports the file's header already has, its ``def get_inputs`` renamed
    ``get_problem_inputs`` (the file's own get_inputs returns the weights too)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    imported = {line.strip() for line in header.splitlines() if line.startswith(("import ", "from "))}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "get_inputs":
            row = node.lineno - 1
            lines[row] = lines[row].replace("def get_inputs(", "def get_problem_inputs(", 1)
    kept = [line for line in lines if line.strip() not in imported or line.startswith((" ", "\t"))]
    return "\n".join(kept).strip("\n")


def _pytorch_function(task: KernelBenchTask) -> str:
    inputs = ", ".join(task.input_names) + ("," if len(task.input_names) == 1 else "")
    weights = ", ".join(f"{w!r}: {w.replace('.', '_')}" for w in task.weight_names)
    return "\n".join([
        f"def fused_kernel_pytorch({', '.join(task.arg_names)}):",
        '    """The problem\'s Model computing with the given weights (its parameters, then its buffers)."""',
        '    with torch.device("meta"):  # the structure only: the weights are the arguments',
        "        model = Model(*get_init_inputs())",
        f"    return torch.func.functional_call(model, {{{weights}}}, ({inputs}))",
    ])


def _triton_stub(task: KernelBenchTask) -> str:
    pointers = ", ".join(f"{name}_ptr" for name in task.arg_names)
    return f'''@triton.jit
def fused_kernel_triton({pointers}, out_ptr, BLOCK_SIZE: tl.constexpr):
    """TODO: compute the problem's forward (fused_kernel_pytorch) in this kernel; add the sizes, strides and
    block sizes it needs (more kernels may follow it). Load, compute in float32, store once in the output's
    dtype; mask every load and store. The weights are read, never written (running statistics included)."""
    pass


def fused_kernel_triton_wrapper({", ".join(task.arg_names)}):
    """TODO: allocate the output, launch the kernels, return the output. Outside the launches only
    allocation, views, reshapes and contiguous copies: no torch math."""
    raise NotImplementedError("fused_kernel_triton_wrapper is not written yet")'''


def _get_inputs(task: KernelBenchTask) -> str:
    test, bench = task.shapes["test"][0], task.shapes["bench"][0]
    changed = [name for name in bench if test[name] != bench[name]]
    lines = []
    if changed:
        lines += ["# On a CPU, where Triton's interpreter runs the kernels: the problem at its test sizes",
                  'if DEVICE == "cpu":',
                  f"    {', '.join(changed)} = {', '.join(str(test[n]) for n in changed)}", "", ""]
    names = ", ".join(repr(w) for w in task.weight_names) + ("," if len(task.weight_names) == 1 else "")
    return "\n".join([*lines,
        "def get_inputs():",
        '    """One call\'s arguments: the problem\'s inputs, then its module\'s weights, at the task\'s dtype."""',
        "    torch.manual_seed(0)",
        "    model = Model(*get_init_inputs())",
        "    weights = dict(model.named_parameters()) | dict(model.named_buffers())",
        f"    args = list(get_problem_inputs()) + [weights[name].detach() for name in ({names})]",
        f"    return [a.to(DEVICE, torch.{task.dtype}) if torch.is_tensor(a) and a.is_floating_point() else a",
        "            for a in args]",
    ])
