"""Fusion tasks: the JSON-able spec of a chain to fuse, and the seeded generator that makes them.

A FusionTask is everything downstream needs and nothing it must trust from a kernel file: the op
chain (from the catalog in ops.py), the inputs with their shapes and distributions, two shape
families (``test``: small, odd sizes a CPU check runs in seconds; ``bench``: sized for an H100),
the cost model per shape, and the reference computation, rendered from the catalog's PyTorch
templates and evaluated in float64.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

from fusionforge import ops as catalog
from fusionforge.ops import Family, Op, ShapeError

DTYPES = ("float32", "float16", "bfloat16")
DIFFICULTIES = ("easy", "medium", "hard")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, catalog.FP8_DTYPE: 1}
SCALAR_DTYPE = "python_float"
DIM_ORDER = ("B", "M", "N", "K", "C", "H", "W", "P", "Q", "V", "NH", "S", "D", "T", "J", "R")
# Families a task can be asked for (``generate(family=...)``); without one, the seed draws from the original mix
# of pointwise, reduction and matmul chains, so every seed keeps its task.
FAMILIES = ("scan", "loss", "arg_reduction", "spatial_reduction", "gather", "pooling", "attention", "convolution",
            "fp8")
HARD_FAMILIES = ("attention",)  # a root's chains, as a matmul's are (classify); the others' are medium

# A bench shape moves at least this many bytes or does at least this many FLOPs.
BENCH_MIN_BYTES = 256 * 10**6
BENCH_MIN_FLOPS = 10**12

# Degeneracy screen thresholds (float64 reference at a test shape).
# The float64 reference of an attention chain holds B NH of [S, S] score matrices at once (PyTorch's math backend);
# it runs a few (batch, head) slices at a time instead, at most this many bytes of scores a slice.
REFERENCE_SCORES_BYTES = 512 * 2**20

NEAR_ZERO_RMS = 1e-4  # output rms below this: the task computes (almost) nothing
CONSTANT_SPREAD = 1e-3  # max |out - mean(out)| below this times rms: constant output
MIN_INPUT_EFFECT = 0.02  # redrawing an input moves the output by less than this (relative L2)
# A single value (a mean loss) averages each input's effect over all its terms: redrawing one moves the mean by
# about 1 / sqrt(terms) of a term's spread, so the bar is lower; an input it ignores moves it by nothing.
MIN_SCALAR_EFFECT = 2e-3
MAX_DTYPE_ERROR = 0.05  # PyTorch at the task dtype vs float64 (relative L2): ill-conditioned beyond
# An arg reduction whose rows mostly hold two values within rounding of their extremum (after a clamp, a saturating
# op, a 16-bit round) has several right answers in most rows: the index says little about the chain.
MAX_TIE_FRACTION = 0.25
TIE_PROBE_ROWS = 64  # rows of bench length the near-tie fraction is measured on
ACCUMULATION_EPS = 2.0**-24  # the unit roundoff of the fp32 accumulation kernels run at


class TaskError(ValueError):
    """A task cannot be built: unknown op, impossible chain, or every draw was degenerate."""


@dataclass
class Step:
    """One op of the chain: its catalog name, parameters and the extra inputs it reads."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"op": self.op, "params": self.params, "inputs": self.inputs}


@dataclass
class InputSpec:
    """An argument of the fused function. ``shape`` is symbolic; scalars are Python floats."""

    name: str
    role: str
    shape: list
    dtype: str
    init: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "shape": self.shape, "dtype": self.dtype, "init": self.init}


def concrete(shape: list | tuple, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else dims[d] for d in shape)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@dataclass
class FusionTask:
    id: str
    seed: int
    difficulty: str
    dtype: str
    steps: list[Step]
    inputs: list[InputSpec]
    output_shape: list
    shapes: dict[str, list[dict[str, int]]]
    description: str = ""
    signature: str = ""

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "seed": self.seed,
            "difficulty": self.difficulty,
            "dtype": self.dtype,
            "description": self.description,
            "signature": self.signature,
            "ops": [s.to_dict() for s in self.steps],
            "inputs": [i.to_dict() for i in self.inputs],
            "output": {"shape": self.output_shape, "dtype": self.output_dtype},
            **({"outputs": [{"shape": list(shape), "dtype": dtype} for shape, dtype in self.outputs]}
               if len(self.outputs) > 1 else {}),
            "shapes": self.shapes,
            "cost": {family: [self.cost(d) for d in dims] for family, dims in self.shapes.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> FusionTask:
        """The task in ``d``; a KernelBench problem's (``"kind": "kernelbench"``) is a ``KernelBenchTask``."""
        if isinstance(d, dict) and d.get("kind") == "kernelbench":
            from fusionforge.kernelbench import KernelBenchTask

            return KernelBenchTask.from_dict(d)
        try:
            task = cls(
                id=d["id"], seed=d["seed"], difficulty=d["difficulty"], dtype=d["dtype"],
                steps=[Step(s["op"], dict(s.get("params", {})), list(s.get("inputs", []))) for s in d["ops"]],
                inputs=[InputSpec(i["name"], i["role"], list(i["shape"]), i["dtype"], dict(i["init"]))
                        for i in d["inputs"]],
                output_shape=list(d["output"]["shape"]), shapes=d["shapes"],
                description=d.get("description", ""), signature=d.get("signature", ""),
            )
        except (KeyError, TypeError) as e:
            raise TaskError(f"malformed task: missing or wrong field {e}") from None
        for s in task.steps:
            catalog.get(s.op)  # raises on an unknown op
        if task.dtype not in DTYPES:
            raise TaskError(f"malformed task: dtype {task.dtype!r} is not one of {', '.join(DTYPES)}")
        for family, shapes in task.shapes.items():
            for dims in shapes:
                derived = with_planes(task, dims) if "H" in dims else dims
                if derived != dims:
                    raise TaskError(f"malformed task: {family} shape {dims} does not hold the sizes its pooling or "
                                    f"convolution leaves ({derived})")
        return task

    @classmethod
    def from_json(cls, text: str) -> FusionTask:
        return cls.from_dict(json.loads(text))

    @property
    def output_dtype(self) -> str:
        """The output's dtype: the task's, or the last op's own (a loss: float32)."""
        return catalog.get(self.steps[-1].op).out_dtype or self.dtype

    @property
    def outputs(self) -> list[tuple[list, str]]:
        """(symbolic shape, dtype) of each tensor the chain returns: one, or a quantizer's values and scales."""
        first = (self.output_shape, self.output_dtype)
        quantizer = self.quantizer
        if quantizer is None:
            return [first]
        scales = [*self.output_shape[:-1], 1] if quantizer.scales == "rows" else [1]
        return [first, (scales, "float32")]

    @property
    def output_dtypes(self) -> tuple:
        """The torch dtype of each output (``outputs``)."""
        import torch

        return tuple(getattr(torch, dtype) for _, dtype in self.outputs)

    def output_text(self) -> str:
        """The outputs in words: ``[M, N] float16``; a quantizer's ``a tuple: [M, N] float8_e4m3fn (the values),
        [M, 1] float32 (their scales)``."""
        shapes = [f"[{', '.join(str(d) for d in shape)}] {dtype}" for shape, dtype in self.outputs]
        if len(shapes) == 1:
            return shapes[0]
        return f"a tuple: {shapes[0]} (the values), {shapes[1]} (their scales)"

    @property
    def quantizer(self) -> Op | None:
        """The fp8 quantization that ends the chain, if one does."""
        op = catalog.get(self.steps[-1].op)
        return op if op.family is Family.QUANTIZE else None

    @property
    def family(self) -> str:
        return classify([s.op for s in self.steps]).family

    @property
    def arg_reduction(self) -> Op | None:
        """The arg reduction (argmax, argmin) that ends the chain, if one does."""
        op = catalog.get(self.steps[-1].op)
        return op if op.family is Family.ARG_REDUCTION else None

    @property
    def root(self) -> Op | None:
        """The root (a matmul, a gather) that starts the chain, if one does."""
        op = catalog.get(self.steps[0].op)
        return op if op.family in catalog.ROOTS else None

    @property
    def rank(self) -> int:
        """The rank of the running value the chain's ops after a root work on: its product's, else the first
        input's."""
        return len(catalog.root_shapes(self.root)[1] if self.root else self.inputs[0].shape)

    def step_shapes(self) -> list[tuple]:
        """The running value's symbolic shape after each step."""
        shapes, shape = [], tuple(self.inputs[0].shape)
        for step in self.steps:
            shape = catalog.next_shape(catalog.get(step.op), shape, step.params)
            shapes.append(shape)
        return shapes

    # -- the PyTorch function --------------------------------------------------------------------
    @property
    def arg_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def pytorch_body(self, rounded: bool = False) -> list[str]:
        """Statements computing the chain into ``h`` from the arguments (templates of ops.py); ``rounded`` adds
        ``rounding(magnitude)`` to each scan that accumulates (``Op.accumulates``)."""
        return [line for lines in self.pytorch_steps(rounded) for line in lines]

    def pytorch_steps(self, rounded: bool = False) -> list[list[str]]:
        """``pytorch_body``'s statements, step by step (a quantizer's scales come before its ``h = ...``)."""
        steps = []
        for k, step in enumerate(self.steps):
            lines = []
            op = catalog.get(step.op)
            names = dict(zip((o.stem for o in catalog.operands(op, step.params)), step.inputs))
            if op.family is Family.BINARY:
                names = {"y": step.inputs[0]}
            fields = {"x": self.inputs[0].name if k == 0 else "h", **step.params, **names}
            lines += [catalog.upcasts(line).format(**fields) for line in op.setup]
            if op.setup:
                fields["x"] = "h"
            expr = catalog.torch_template(op, step.params).format(**fields)
            if rounded and op.accumulates:
                expr += f" + rounding({op.accumulates.format(**fields)})"
            lines.append(f"h = {expr}")
            steps.append(lines)
        return steps

    @property
    def accumulates(self) -> bool:
        """Whether a step is a scan whose accumulation rounds at a running sum's magnitude (``Op.accumulates``)."""
        return any(catalog.get(step.op).accumulates for step in self.steps)

    def pytorch_source(self, name: str = "fused_kernel_pytorch", rounded: bool = False) -> str:
        """The chain as a function named ``name`` of the arguments (``rounded``: and of ``rounding``)."""
        body = "\n".join("    " + line for line in self.pytorch_body(rounded))
        return (f"def {name}({', '.join([*self.arg_names, *(['rounding'] if rounded else [])])}):\n"
                f'    """{self.description}"""\n{body}\n    return h\n')

    def _compiled(self, source: str, name: str) -> Callable:
        """The function ``name`` that ``source`` defines, with torch and F in scope."""
        import torch
        import torch.nn.functional as F

        namespace: dict[str, Any] = {"torch": torch, "F": F}
        exec(compile(source, f"<task {self.id}>", "exec"), namespace)
        return namespace[name]

    @cached_property
    def function(self) -> Callable:
        """The chain as a Python function of the inputs (evaluated with torch at the inputs' dtype)."""
        return self._compiled(self.pytorch_source("chain"), "chain")

    @cached_property
    def _rounded_function(self) -> Callable:
        return self._compiled(self.pytorch_source("chain", rounded=True), "chain")

    @cached_property
    def _values_function(self) -> Callable:
        """The chain without its last step: the values an arg reduction picks from, or a quantizer scales."""
        before = [line for lines in self.pytorch_steps()[:-1] for line in lines]
        body = "\n".join("    " + line for line in [f"h = {self.inputs[0].name}", *before])
        return self._compiled(f"def values({', '.join(self.arg_names)}):\n{body}\n    return h\n", "values")

    def picked_from(self, inputs: list) -> tuple | None:
        """What an arg reduction ending the chain picks from: (the values in float64, the values from PyTorch at the
        task dtype, whether it picks the largest), for the index rule (verify/indices.py); None for other tasks."""
        if self.arg_reduction is None:
            return None
        return self.values(inputs, float64=True), self.values(inputs), self.arg_reduction.name == "argmax"

    def values(self, inputs: list, float64: bool = False) -> Any:
        """The chain without its last step on ``inputs``, at their dtypes or in float64."""
        import torch

        if float64:
            inputs = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in inputs]
        return self._values_function(*inputs)

    def reference(self, inputs: list, accumulation: Any = None) -> Any:
        """The trusted result: the chain evaluated in float64 on the given inputs (same device).

        With ``accumulation`` (a torch.Generator), each scan that accumulates also moves by its rounding in fp32:
        per element, ACCUMULATION_EPS times the running sum of magnitudes (``Op.accumulates``), its sign drawn
        from the generator (the whole bound, not a uniform fraction of it: one draw per element, where a rounded
        input's movement sums many). The checker's rounding bound takes it, as it takes rounded inputs: a prefix
        sum that cancels to near zero carries the rounding of the large partial sums before it.
        """
        import torch

        inputs = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in inputs]
        if accumulation is None:
            return self._by_heads(inputs)

        def rounding(magnitude):
            sign = torch.randint(0, 2, magnitude.shape, generator=accumulation, device=magnitude.device) * 2 - 1
            return magnitude * ACCUMULATION_EPS * sign

        return self._rounded_function(*inputs, rounding)

    def _by_heads(self, inputs: list) -> Any:
        """The chain of ``inputs``; an attention chain's a few (batch, head) slices at a time, each independent of
        the others: float64 scores of B NH S^2 values at once (17 GiB for 4 x 32 heads of 4096 positions) would not
        fit beside a GPU's other checks. The inputs laid out [B, NH, ...] are sliced; the others (rotary tables,
        scalars) go whole to every slice."""
        import torch

        root = self.root
        if root is None or root.family is not Family.ATTENTION:
            return self.function(*inputs)
        batch, heads, seq = inputs[0].shape[:3]
        per_slice = max(1, REFERENCE_SCORES_BYTES // (8 * seq * seq))  # (batch, head) pairs a slice
        if per_slice >= batch * heads:
            return self.function(*inputs)
        sliced = [spec.shape[:2] == ["B", "NH"] for spec in self.inputs]

        def part(batches: slice, head_range: slice) -> Any:
            return self.function(*[a[batches, head_range] if cut else a for a, cut in zip(inputs, sliced)])

        if per_slice >= heads:  # whole batches a slice
            step = per_slice // heads
            return torch.cat([part(slice(b, b + step), slice(None)) for b in range(0, batch, step)])
        return torch.cat([torch.cat([part(slice(b, b + 1), slice(n, n + per_slice))
                                     for n in range(0, heads, per_slice)], dim=1) for b in range(batch)])

    # -- inputs ----------------------------------------------------------------------------------
    edge_draws = True  # make_inputs takes ``edge``: the checker's edge sets

    def make_inputs(self, dims: dict[str, int], seed: int, device: str = "cpu", scalar_seed: int | None = None,
                    edge: int = 0) -> list:
        """Draw every input at ``dims`` from its distribution (seeded, drawn on the CPU); scalar inputs at
        ``scalar_seed`` when it is given (a call that refills tensors with new values keeps its scalars).
        ``edge``: clipped normal inputs near an end of their range (``draw``): -1 every one near its low end, 1 the
        first near its high end and the others near their low end (queries against keys of the other sign)."""
        return [draw(spec, dims, seed if scalar_seed is None or spec.dtype != SCALAR_DTYPE else scalar_seed, k, device,
                     -1 if edge and k else edge) for k, spec in enumerate(self.inputs)]

    def output_dims(self, dims: dict[str, int]) -> tuple[int, ...]:
        return concrete(self.output_shape, dims)

    # -- cost model ------------------------------------------------------------------------------
    def cost(self, dims: dict[str, int]) -> dict[str, int]:
        """Fewest bytes (each input read once, the output written once), FLOPs, and eager's bytes.

        ``unfused_bytes`` is what op-by-op execution moves: every op reads its operands and writes
        its result.
        """
        size = ITEMSIZE[self.dtype]
        by_name = {i.name: i for i in self.inputs}
        root = self.root
        # a gather reads the values it picks (a lookup the rows its ids name), not all of its table or rows
        picked = None if root is None or root.family is not Family.GATHER else (
            self.steps[0].inputs[0] if root.name == "embedding" else self.inputs[0].name)

        def nbytes(spec: InputSpec) -> int:
            if spec.dtype == SCALAR_DTYPE:
                return 0
            if spec.name == picked:
                return dims["M"] * dims["N"] * ITEMSIZE[spec.dtype]
            return _numel(concrete(spec.shape, dims)) * ITEMSIZE[spec.dtype]

        fused = sum(nbytes(i) for i in self.inputs) + sum(_numel(concrete(shape, dims)) * ITEMSIZE[dtype]
                                                          for shape, dtype in self.outputs)
        flops = unfused = 0
        shape = concrete(self.inputs[0].shape, dims)
        for step, out_sym in zip(self.steps, self.step_shapes()):
            op = catalog.get(step.op)
            in_numel = _numel(shape)
            in_bytes = nbytes(self.inputs[0]) if op.family in catalog.ROOTS else in_numel * size
            operand_bytes = sum(nbytes(by_name[n]) for n in step.inputs)
            shape = concrete(out_sym, dims)
            out_numel = _numel(shape)
            if op.family is Family.MATMUL:
                flops += 2 * out_numel * dims["K"]
            elif op.family is Family.ATTENTION:  # q k^T and p v: 4 S D a query, over (S + 1) / 2 keys where causal
                keys = (dims["S"] + 1) / 2 if step.params["causal"] else dims["S"]
                flops += int(op.flops * out_numel * keys)
            elif op.family is Family.POOL:
                flops += int(op.flops * out_numel * step.params["kernel_size"] ** 2)
            elif op.name == "conv_transpose2d":  # each input value times each of its R R taps, for every channel
                flops += op.flops * _numel(concrete(self.inputs[0].shape, dims)) * dims["C"] * dims["R"] ** 2 \
                    + out_numel
            elif op.family is Family.CONV:  # a multiply and an add a tap, and the bias
                flops += int(op.flops * out_numel * conv_taps(op.name, dims)) + out_numel
            elif op.family in (Family.UNARY, Family.BINARY):
                flops += int(op.flops * out_numel)
            else:
                flops += int(op.flops * in_numel)
            unfused += in_bytes + operand_bytes + out_numel * size
        return {"bytes": fused, "flops": flops, "unfused_bytes": unfused}


def conv_taps(name: str, dims: dict[str, int]) -> int:
    """The products an output of a convolution sums: J R R (conv2d), R R (depthwise conv2d), T (causal conv1d); a
    conv_transpose2d's vary with the output's position (``FusionTask.cost`` counts them by input)."""
    if name == "conv2d":
        return dims["J"] * dims["R"] ** 2
    return dims["R"] ** 2 if name == "depthwise_conv2d" else dims["T"]


# Inputs whose values no seed draws: tables of a shape (RoPE's cos and sin), the same in every draw.
FIXED_DISTS = ("rotary",)


def fan_in(init: dict, dims: dict[str, int]) -> int:
    """The inputs a weight's output sums over: its ``fan_in`` dim, or the product of a list of them."""
    names = init["fan_in"]
    return math.prod(dims[name] for name in names) if isinstance(names, list) else dims[names]


def draw(spec: InputSpec, dims: dict[str, int], seed: int, index: int, device: str = "cpu", edge: int = 0) -> Any:
    """One input from its distribution; the stream depends on (seed, index) only.

    ``edge`` -1 or 1 draws a clipped normal input (not a weight, scaled by its fan-in) near that end of its range:
    z = edge (clip - |n| / 4), n standard normal, kept within [-clip, clip]. Every value stays one the
    distribution can give; together they are the extremes a kernel must handle (a window or row all near
    -clip, the largest scores of aligned queries and keys).
    """
    import torch

    gen = torch.Generator().manual_seed((seed * 1_000_003 + index * 7919) % (2**63))
    init = spec.init
    shape = concrete(spec.shape, dims)
    kind = init["dist"]
    if kind == "normal":
        std = init["std"] / math.sqrt(fan_in(init, dims)) if "fan_in" in init else init["std"]
        z = torch.randn(shape, generator=gen)
        if "clip" in init and edge and "fan_in" not in init:
            z = z.abs_().div_(-4.0).add_(init["clip"]).mul_(edge)
        if "clip" in init:
            z = z.clamp_(-init["clip"], init["clip"])
        value = z.mul_(std).add_(init["mean"])
    elif kind == "uniform":
        value = torch.rand(shape, generator=gen).mul_(init["high"] - init["low"]).add_(init["low"])
    elif kind == "signed_uniform":
        magnitude = torch.rand(shape, generator=gen).mul_(init["high"] - init["low"]).add_(init["low"])
        sign = torch.randint(0, 2, shape, generator=gen).mul_(2).sub_(1)
        value = magnitude * sign
    elif kind == "randint":  # class indices in [0, dims[high]); the first is the last class, the last class 0
        high = dims[init["high"]]
        value = torch.randint(0, high, shape, generator=gen)
        value.view(-1)[0], value.view(-1)[-1] = high - 1, 0  # the edges of a row, where a walk's last chunk ends
    elif kind == "rotary":  # RoPE's cos or sin table [S, D]: angle s / base^(2i / D), each half of D repeated
        positions, half = torch.arange(shape[0], dtype=torch.float64), shape[1] // 2
        angles = positions[:, None] * init["base"] ** (-torch.arange(half, dtype=torch.float64) / half)[None, :]
        value = getattr(torch, init["part"])(torch.cat((angles, angles), dim=-1))
    elif kind == "softmax":  # a probability distribution over the last dimension
        value = torch.softmax(torch.randn(shape, generator=gen).clamp_(-4.0, 4.0).mul_(init["std"]), dim=-1)
    else:
        raise TaskError(f"unknown input distribution {kind!r} for input {spec.name!r}")
    if spec.dtype == SCALAR_DTYPE:
        return float(value.item())
    return value.to(dtype=getattr(torch, spec.dtype)).to(device)


# --------------------------------------------------------------------------------------------------
# Shape families
# --------------------------------------------------------------------------------------------------

# Test shapes: one of primes, one of powers of two, one lopsided; small enough for the interpreter, and
# large enough that a kernel tiled for a GPU walks its loops at one of them at least: the lopsided shape's
# K spans several 64-wide steps of a matmul's k-loop.
_TEST_2D = [dict(M=(13, 31, 37, 41), N=(97, 131, 193, 251), K=(29, 37, 53)),
            dict(M=(16, 32, 64), N=(64, 128, 256), K=(32, 64)),
            dict(M=(3, 5, 7), N=(300, 500, 777, 1000), K=(67, 97))]
_TEST_3D = [dict(B=(2, 3), M=(5, 7, 11), N=(97, 131), K=(29, 37)),
            dict(B=(2,), M=(4, 8), N=(64, 128), K=(32,)),
            dict(B=(1, 3), M=(3, 13), N=(300, 500), K=(67, 97))]
# [B, C, H, W]: odd planes, square powers of two, and planes past 1024 values (a kernel walking them in chunks does so).
_TEST_4D = [dict(B=(2, 3), C=(3, 5, 7), H=(7, 11, 13), W=(5, 9, 17)),
            dict(B=(2,), C=(4, 8), H=(8, 16), W=(8, 16)),
            dict(B=(1, 2), C=(3, 6), H=(31, 37), W=(41, 47))]
# Rows longer than LONG_ROW values are more than a kernel holds in registers (64 KB of fp32), so kernels walk
# them in slices. A task whose rows are that long at its bench shape gets a fourth test shape with rows of
# LONG_TEST_ROW values or more (a prime), so that the walk runs there too (_long_rows).
LONG_ROW, LONG_TEST_ROW = 16384, 20011
# Scans and losses are written in chunks of a row as often as whole: their tasks get a test row of CHUNKED_TEST_ROW
# values (a prime past 8192), so that a kernel carrying state from chunk to chunk does so on the CPU too.
CHUNKED_TEST_ROW = 8209
# An arg reduction reads every value, but one value decides a row: a kernel that drops a row's partial last chunk is
# wrong only in rows whose extremum lies there. Its tasks get ARG_TEST_ROWS rows of ARG_TEST_ROW = 2^14 - 1 values,
# where a dropped partial chunk of any power-of-two width c is c - 1 values (half the row at c = 8192).
ARG_TEST_ROW, ARG_TEST_ROWS = 2**14 - 1, 64
# A gather is wrong only where a bad index reaches: a kernel that drops an index's high bits, or reads the columns past
# a block without their indices, passes small shapes. Its tasks get a test shape of GATHER_TEST_ROWS rows of
# GATHER_TEST_N picks (past 1024) from GATHER_TEST_K values (past 4096) or a table of GATHER_TEST_V rows (past 16384).
GATHER_TEST_ROWS, GATHER_TEST_N, GATHER_TEST_K, GATHER_TEST_V = 4, 1031, 4099, 20011
# Attention walks its keys in blocks and its queries a block a program: a kernel that stops at 1024 keys or queries is
# wrong only past them. Its tasks get a test sequence of ATTENTION_TEST_S values (past 1024), one head of 64.
ATTENTION_TEST_S = 1031
# A convolution tiles its positions: a kernel whose taps stop at a tile's first position (not the sequence's) is wrong
# only past the first tile. Its tasks get a test sequence of CONV_TEST_N positions (past 1024), 3 channels of 4 taps.
CONV_TEST_N = 1031
# A conv2d tiles its output channels and its windows' values: a kernel wrong past the first 128 channels, or past the
# first 64 values of a window, is wrong only there. Its tasks get a test shape of CONV2D_TEST_C output channels (past
# 128, a multiple of every groups) and CONV2D_TEST_K input channels (over 64 values a 3 x 3 window at any groups).
CONV2D_TEST_C, CONV2D_TEST_K = 132, 32
# Pooling tiles an output row's columns: a kernel wrong past the first tile of 64 (or 128) columns passes planes of
# 47. Its tasks get a test plane POOL_TEST_W = 263 values wide (every window and stride gives Q past 128), 5 high.
POOL_TEST_H, POOL_TEST_W = 5, 263
# Bench shapes: the free dims; the leading dim (M in 2D, B in 3D) grows until the bench floor is met.
_BENCH_2D = [dict(N=n) for n in (1024, 2048, 3072, 4096, 5120, 8192)]
_BENCH_2D_MM = [dict(N=n, K=k) for n, k in ((4096, 4096), (8192, 4096), (4096, 8192), (8192, 8192), (3072, 4096))]
_BENCH_3D = [dict(M=m, N=n) for m, n in ((256, 1024), (512, 1024), (128, 2048), (1024, 512), (384, 768))]
# A convolutional network's feature maps: ResNet's stages and an Inception block's.
_BENCH_4D = [dict(C=c, H=h, W=w) for c, h, w in ((64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7), (96, 35, 35))]
# Cross-entropy's rows are a vocabulary: GPT-2's, Llama 2's and Llama 3's; so are an arg reduction's (greedy decoding).
_BENCH_VOCAB = [dict(N=n) for n in (32000, 50257, 128256)]
# An embedding table: a hidden size of a language model by its vocabulary (GPT-2's, Llama 2's and Llama 3's).
_BENCH_TABLE = [dict(N=n, V=v) for n in (1024, 2048, 4096) for v in (32000, 50257, 128256)]
# Causal conv1d: odd sequences, powers of two, lopsided channels; 2 to 5 taps. Bench: Mamba's inner widths (channels)
# by sequence lengths, 4 taps (B grows to the bench floor).
_TEST_CONV = [dict(B=(1, 2), M=(3, 5, 7), N=(97, 131), T=(3, 4)),
              dict(B=(2,), M=(4, 16), N=(64, 256), T=(2, 4)),
              dict(B=(1,), M=(13, 37), N=(300, 500), T=(4, 5))]
_BENCH_CONV = [dict(M=m, N=n, T=4) for m, n in ((1536, 2048), (2048, 2048), (3072, 1024), (4096, 2048), (5120, 1024))]
# Conv2d: odd planes and channel counts (multiples of every groups, 4), windows of 1, 3 and 5; bench: the 3 x 3
# convolutions of ResNet's stages and a wider early one (B grows to the bench floor).
_TEST_CONV2D = [dict(B=(1, 2), K=(4, 8), C=(4, 12), H=(11, 13), W=(11, 17), R=(3,)),
                dict(B=(1,), K=(12, 16), C=(20, 36), H=(16,), W=(16, 24), R=(1, 3)),
                dict(B=(1,), K=(4,), C=(8, 16), H=(10, 15), W=(33, 70), R=(5,))]
_BENCH_CONV2D = [dict(K=k, C=c, H=h, W=h, R=3) for k, c, h in ((64, 64, 56), (64, 128, 56), (128, 128, 28),
                                                               (256, 256, 14), (32, 64, 112))]
# Conv_transpose2d: conv2d's test shapes; bench: a decoder's upsampling stages, channels halving as planes double.
_BENCH_CONV_TRANSPOSE = [dict(K=k, C=k // 2, H=h, W=h, R=3) for k, h in ((512, 7), (256, 14), (128, 28), (64, 56))]
# Depthwise conv2d: planes as conv2d's, and a test plane as wide as pooling's (tasks get it too); bench: MobileNetV2's
# depthwise 3 x 3 layers.
_TEST_DEPTHWISE = [dict(B=(1, 2), C=(3, 5), H=(11, 13), W=(11, 17), R=(3,)),
                   dict(B=(1,), C=(8, 12), H=(16,), W=(16, 24), R=(3, 5)),
                   dict(B=(1,), C=(4,), H=(10, 15), W=(33, 70), R=(5,))]
_BENCH_DEPTHWISE = [dict(C=c, H=h, W=h, R=3) for c, h in ((96, 112), (144, 56), (192, 28), (384, 14), (960, 7))]
# A gather's rows: N picks of K values (a quarter of a row to all of it, in any order).
_BENCH_PICKS = [dict(N=n, K=k) for n, k in ((1024, 4096), (2048, 4096), (2048, 8192), (4096, 8192), (4096, 4096))]
# Attention: sequences of odd lengths and of whole blocks, head dims of 64 and 128; bench: heads, sequence and head
# dim of language models (B grows to the FLOP floor).
_TEST_ATTENTION = [dict(B=(1, 2), NH=(2, 3), S=(37, 61), D=(64,)),
                   dict(B=(1,), NH=(2,), S=(64, 128), D=(64, 128)),
                   dict(B=(1,), NH=(1, 2), S=(97, 130), D=(128,))]
_BENCH_ATTENTION = [dict(NH=nh, S=s, D=d) for nh, s, d in ((16, 1024, 64), (32, 1024, 128), (16, 2048, 128),
                                                           (32, 4096, 64), (16, 4096, 128))]
# A lookup's test tables: fewer rows than ids (ids repeat), about as many, and many more.
_TEST_TABLE_ROWS = [(7, 50, 1009), (64, 4096), (5003,)]
_BENCH_3D_MM = [dict(M=m, N=n, K=k) for m, n, k in ((1024, 1024, 1024), (2048, 1024, 512), (1024, 2048, 1024))]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------

_UNARY = [op for op in catalog.CATALOG.values() if op.family is Family.UNARY]
_BINARY = [op for op in catalog.CATALOG.values() if op.family is Family.BINARY]
_ROW_OPS = [op for op in catalog.CATALOG.values() if op.family in (Family.REDUCTION, Family.NORM)]
_REDUCTIONS = [op for op in catalog.CATALOG.values() if op.family is Family.REDUCTION]
_SCANS = [op for op in catalog.CATALOG.values() if op.family is Family.SCAN]
_LOSSES = [op for op in catalog.CATALOG.values() if op.family is Family.LOSS]
_ARG_REDUCTIONS = [op for op in catalog.CATALOG.values() if op.family is Family.ARG_REDUCTION]
_QUANTIZERS = [op for op in catalog.CATALOG.values() if op.family is Family.QUANTIZE]
_SPATIAL = [op for op in catalog.CATALOG.values() if op.family is Family.SPATIAL]
_POOLS = [op for op in catalog.CATALOG.values() if op.family is Family.POOL]
_MATMUL_ROOTS = [op for op in catalog.CATALOG.values() if op.family is Family.MATMUL]


def parse_ops(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``"linear_bias,add:col,gelu"`` -> [(op, fixed params)]; ``name:kind`` fixes a binary operand."""
    chain = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        name, _, operand = item.partition(":")
        if name not in catalog.CATALOG:
            raise TaskError(f"unknown op {name!r}; valid ops: {', '.join(sorted(catalog.CATALOG))}")
        op = catalog.CATALOG[name]
        fixed: dict[str, Any] = {}
        if operand:
            if op.family is not Family.BINARY or operand not in catalog.OPERAND_KINDS:
                raise TaskError(f"{item!r}: only binary ops take ':<operand>', one of "
                                f"{', '.join(catalog.OPERAND_KINDS)}")
            fixed["operand"] = operand
        chain.append((name, fixed))
    if not chain:
        raise TaskError("empty op chain; give ops as --ops a,b,c")
    return chain


class TaskGenerator:
    """Seeded sampling of valid, non-degenerate fusion tasks.

    The same (seed, difficulty, dtype, ops) gives a byte-identical task JSON on any machine: all
    choices come from ``random.Random`` seeded with a string (hashed with SHA-512 by Python).
    """

    def __init__(self, max_tries: int = 200):
        self.max_tries = max_tries

    def generate(self, seed: int, difficulty: str | None = None, dtype: str | None = None,
                 ops: str | list[tuple[str, dict]] | None = None, family: str | None = None) -> FusionTask:
        """The task of ``seed``; ``ops`` forces a chain, ``family`` (one of FAMILIES) draws one of that family."""
        rng = random.Random(f"fusionforge-task:{seed}")
        if difficulty is not None and difficulty not in DIFFICULTIES:
            raise TaskError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTIES)}")
        if dtype is not None and dtype not in DTYPES:
            raise TaskError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        if family is not None and family not in FAMILIES:
            raise TaskError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        if family is not None and ops:
            raise TaskError("give a family or a chain of ops, not both")
        forced = parse_ops(ops) if isinstance(ops, str) else ops
        if family is not None:
            level = "hard" if family in HARD_FAMILIES else "medium"
            if difficulty not in (None, level):
                raise TaskError(f"{family} tasks are {level}; --difficulty {difficulty} does not apply")
            difficulty = level
        difficulty = difficulty or (classify([n for n, _ in forced]).difficulty if forced else rng.choice(DIFFICULTIES))
        dtype = dtype or rng.choice(DTYPES)
        last_reason = ""
        for _ in range(self.max_tries):
            if forced:
                chain = self._forced_chain(forced, rng)
            elif family:
                chain = self._family_chain(family, rng)
            else:
                chain = self._sample_chain(difficulty, rng)
            if chain is None:
                continue
            rank, steps = chain
            task = self._build(seed, difficulty, dtype, rank, steps, rng)
            reason = screen(task)
            if reason is None:
                return task
            last_reason = reason
        what = ",".join(name for name, _ in forced) if forced else f"{family or difficulty} {dtype} tasks"
        raise TaskError(f"no valid task for {what} in {self.max_tries} draws (last: {last_reason})")

    # -- chains ----------------------------------------------------------------------------------
    def _forced_chain(self, forced, rng) -> tuple[int, list[tuple[Op, dict]]]:
        names = [name for name, _ in forced]
        reductions = [k for k, name in enumerate(names) if catalog.CATALOG[name].family is Family.REDUCTION]
        spatial = [k for k, name in enumerate(names) if catalog.CATALOG[name].family is Family.SPATIAL]
        image = spatial or any(catalog.CATALOG[name].family is Family.POOL for name in names)
        rank = 4 if image else 3 if "instance_norm" in names or names[0] == "bmm" or len(reductions) > 1 else 2
        if catalog.CATALOG[names[0]].family in catalog.ROOTS:  # the rank of the root's output
            rank = len(catalog.root_shapes(catalog.CATALOG[names[0]])[1])
        # every reduction but the last drops its dim, so the next one has a dim to reduce; a spatial reduction
        # before other ops drops H and W, so they see [B, C]
        drops = set(reductions[:-1]) | {k for k in spatial if k < len(names) - 1}
        forced = [(name, {**fixed, "keepdim": False} if k in drops else fixed)
                  for k, (name, fixed) in enumerate(forced)]
        return rank, check_chain(forced, rank, rng)

    def _sample_chain(self, difficulty: str, rng: random.Random):
        if difficulty == "easy":
            rank = rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((2, 3))
        elif difficulty == "medium":
            rank = rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((0, 1, 2)) + ["row"] + ["pointwise"] * rng.choice((0, 0, 1))
            if len(plan) < 2:
                plan.insert(0, "pointwise")
        elif rng.random() < 0.7:
            root = rng.choice(_MATMUL_ROOTS)
            rank = 3 if root.name == "bmm" else 2
            epilogue = ["pointwise"] * rng.choice((1, 2, 2, 3))
            if rng.random() < 0.6:
                epilogue.insert(rng.randrange(len(epilogue) + 1), "row")
            plan = [root.name] + epilogue
        else:
            rank = 3
            plan = (["pointwise"] * rng.choice((0, 1)) + ["reduction"] + ["pointwise"] * rng.choice((0, 1))
                    + ["reduction"] + ["pointwise"] * rng.choice((0, 0, 1)))
        return self._fill(plan, rank, rng)

    def _family_chain(self, family: str, rng: random.Random):
        """A chain of ``family``: pointwise ops, then a scan, a spatial reduction or a 2D pooling (and maybe pointwise
        ops after it), a loss or an arg reduction; or a gather (an embedding lookup half the time, else a gather or an
        index_select along the last dimension) or an fp8 dequantization (a scale a row or one), then pointwise ops
        around a reduction or a normalization, or pointwise ops alone."""
        if family == "scan":
            rank = rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((0, 1, 2)) + ["scan"] + ["pointwise"] * rng.choice((0, 1))
        elif family == "arg_reduction":
            rank = rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((1, 2)) + [rng.choice(_ARG_REDUCTIONS).name]
        elif family == "spatial_reduction":
            rank = 4
            plan = ["pointwise"] * rng.choice((1, 2)) + ["spatial"] + ["pointwise"] * rng.choice((0, 1))
        elif family == "pooling":
            rank = 4
            plan = ["pointwise"] * rng.choice((1, 2)) + ["pool"] + ["pointwise"] * rng.choice((0, 1))
        elif family == "attention":
            rank = 4
            root = rng.choice(("attention", "attention", "rotary_attention"))
            plan = [root] + ["pointwise"] * rng.choice((0, 1, 1, 2))
        elif family == "convolution":
            root = rng.choice(("causal_conv1d", "conv2d", "conv2d", "depthwise_conv2d", "conv_transpose2d"))
            rank = 3 if root == "causal_conv1d" else 4
            plan = [root] + ["pointwise"] * rng.choice((0, 1, 1, 2))
            if rank == 4 and rng.random() < 0.4:  # conv, batch norm (inference), activation
                plan.insert(1, "batch_norm")
            elif root in ("conv2d", "conv_transpose2d") and rng.random() < 0.5:  # a norm, or a global pooling
                second = rng.choice((*catalog.CHANNEL_NORMS, "spatial"))
                if second == "spatial":
                    plan.append(second)
                else:  # an instance norm takes away each channel's mean, the conv's bias with it, unless an op comes
                    plan[1:1] = [second] if second == "group_norm" else ["pointwise", second]
        elif family == "fp8" and rng.random() < 0.5:  # pointwise ops, then quantized (a scale a row or one)
            rank = rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((1, 2)) + [rng.choice(_QUANTIZERS).name]
        elif family == "fp8":  # dequantized values into pointwise ops, or around a reduction or a normalization
            rank = 2
            root = rng.choice(("dequantize_fp8_rows", "dequantize_fp8_tensor"))
            plan = [root] + ["pointwise"] * rng.choice((0, 1, 2))
            if rng.random() < 0.6:
                plan += ["row"] + ["pointwise"] * rng.choice((0, 0, 1))
        elif family == "gather":
            rank = 2
            root = rng.choice(("embedding", "embedding", "gather", "index_select"))
            if rng.random() < 0.25:  # a scaled (or otherwise mapped) embedding or pick
                plan = [root] + ["pointwise"] * rng.choice((1, 2))
            else:
                plan = [root] + ["pointwise"] * rng.choice((0, 1, 1)) + ["row"] + ["pointwise"] * rng.choice((0, 0, 1))
        else:
            loss = rng.choice(_LOSSES)
            rank = 2 if loss.name == "cross_entropy" else rng.choice((2, 2, 3))
            plan = ["pointwise"] * rng.choice((0, 1, 2)) + [loss.name]
        return self._fill(plan, rank, rng)

    def _fill(self, plan: list[str], rank: int, rng: random.Random):
        """The chain of ``plan``: each slot an op drawn from its pool (or the op it names) that fits the shape."""
        shape = start_shape(rank)
        chain: list[tuple[Op, dict]] = []
        for slot in plan:
            if slot in catalog.CATALOG:  # a named op: a root, a loss, an arg reduction or a quantizer
                op = catalog.CATALOG[slot]
                params = _sample_params(op, {}, rng)
                chain.append((op, params))
                shape = catalog.next_shape(op, shape, params)
                continue
            pool = {"pointwise": _BINARY if rng.random() < 0.4 else _UNARY, "row": _ROW_OPS,
                    "reduction": _REDUCTIONS, "scan": _SCANS, "spatial": _SPATIAL, "pool": _POOLS}[slot]
            for _ in range(20):
                op = rng.choice(pool)
                params = _sample_params(op, {}, rng)
                if slot == "reduction" and plan.count("reduction") > 1 and len(shape) == 3:
                    params["keepdim"] = False  # the second reduction needs the first one's dim gone
                try:
                    shape = catalog.out_shape(op, shape, params)
                except ShapeError:
                    continue
                chain.append((op, params))
                break
            else:
                return None
        return rank, chain

    # -- building ----------------------------------------------------------------------------------
    def _build(self, seed: int, difficulty: str, dtype: str, rank: int, chain: list[tuple[Op, dict]],
               rng: random.Random) -> FusionTask:
        root = chain[0][0] if chain[0][0].family in catalog.ROOTS else None
        act_shape = catalog.root_shapes(root)[0] if root else start_shape(rank)
        activation = catalog.LOGITS if chain[-1][0].family is Family.ARG_REDUCTION else catalog.ACTIVATION
        if root and root.name == "embedding":
            inputs = [InputSpec("ids", "ids", list(act_shape), "int64", dict(catalog.TOKEN_IDS))]
        elif root and root.family is Family.FP8:
            inputs = [InputSpec("x", "activation", list(act_shape), catalog.FP8_DTYPE, dict(catalog.FP8_VALUES))]
        elif root and root.family is Family.ATTENTION:
            inputs = [InputSpec("q", "query", list(act_shape), dtype, dict(activation))]
        else:
            inputs = [InputSpec("x", "activation", list(act_shape), dtype, dict(activation))]
        steps = []
        shape = act_shape
        for k, (op, params) in enumerate(chain):
            names = []
            for operand in catalog.operands(op, params):
                if op.family in catalog.ROOTS:
                    name, sym = operand.stem, (catalog.ROOT_OPERAND_SHAPES.get(operand.layout)
                                               or catalog.operand_shape(operand.layout, catalog.root_shapes(op)[1]))
                else:
                    name, sym = f"{operand.stem}{k}", catalog.operand_shape(operand.layout, shape)
                in_dtype = operand.dtype or (SCALAR_DTYPE if operand.layout == "scalar" else dtype)
                init = activation if operand.role == "table" else operand.init  # a lookup's rows are its activation
                inputs.append(InputSpec(name, operand.role, list(sym), in_dtype, dict(init)))
                names.append(name)
            steps.append(Step(op.name, dict(params), names))
            shape = catalog.next_shape(op, shape, params)
        groups, channel = chain_groups((o.name, p) for o, p in chain), CHANNEL_DIM[rank]
        attention = root is not None and root.family is Family.ATTENTION
        conv = root is not None and root.family is Family.CONV
        conv2d = conv and root.name in ("conv2d", "conv_transpose2d")  # conv2d's test shapes
        depthwise = conv and root.name == "depthwise_conv2d"
        menus = (_TEST_ATTENTION if attention else _TEST_CONV2D if conv2d else _TEST_DEPTHWISE if depthwise
                 else _TEST_CONV if conv else {2: _TEST_2D, 3: _TEST_3D, 4: _TEST_4D}[rank])
        test = [_pick_dims(family, rng, channel, groups) for family in menus]
        if not root or root.name == "embedding" or root.family is Family.FP8:
            test = [{k: v for k, v in d.items() if k != "K"} for d in test]
        if root and root.name == "embedding":
            test = [{**d, "V": rng.choice(choices)} for d, choices in zip(test, _TEST_TABLE_ROWS)]
        task = FusionTask(id="", seed=seed, difficulty=difficulty, dtype=dtype, steps=steps, inputs=inputs,
                          output_shape=list(shape), shapes={"test": test, "bench": []})
        test[:] = [with_planes(task, dims) for dims in test]  # in place: the task's test shapes grow from this list
        task.shapes["bench"] = [_bench_dims(task, rank, root, rng, channel, groups)]
        if chain[-1][0].family is Family.ARG_REDUCTION:
            task.shapes["test"].append({**_long_rows(task, test[-1], groups, ARG_TEST_ROW), "M": ARG_TEST_ROWS})
        if attention:
            task.shapes["test"].append({"B": 1, "NH": 1, "S": ATTENTION_TEST_S, "D": 64})
        if conv2d:
            task.shapes["test"].append(with_planes(task, {"B": 1, "K": CONV2D_TEST_K,
                                                         "C": _round_up(CONV2D_TEST_C, groups), "H": 12, "W": 12,
                                                         "R": 3}))
        elif conv and not depthwise:
            task.shapes["test"].append({"B": 1, "M": 3, "N": CONV_TEST_N, "T": 4})
        if pool_step(task) or depthwise:
            task.shapes["test"].append(with_planes(task, {"B": 1, "C": 2, "H": POOL_TEST_H, "W": POOL_TEST_W,
                                                          **({"R": 3} if depthwise else {})}))
        if root and root.family is Family.GATHER:
            wide = {"M": GATHER_TEST_ROWS, "N": _round_up(GATHER_TEST_N, groups)}
            task.shapes["test"].append({**wide, "V": GATHER_TEST_V} if root.name == "embedding"
                                       else {**wide, "K": GATHER_TEST_K})
        if longest_row(task, task.shapes["bench"]) > LONG_ROW:
            task.shapes["test"].append(_long_rows(task, test[-1], groups))
        elif any(op.family in (Family.SCAN, Family.LOSS) for op, _ in chain):
            task.shapes["test"].append(_long_rows(task, test[-1], groups, CHUNKED_TEST_ROW))
        task.description = describe(task)
        task.signature = signature(task)
        task.id = "ff-" + hashlib.sha256(task.signature.encode()).hexdigest()[:12]
        return task


@dataclass(frozen=True)
class ChainKind:
    """What a chain of ops is, from its ops' families: the built-in code generator's plan for it (None: no
    plan yet), the family its dataset records are grouped by, and its difficulty."""

    plan: str | None
    family: str
    difficulty: str


def classify(ops: list[str]) -> ChainKind:
    """The kind of the chain of ``ops`` (catalog names, in order).

    Plans: a matmul root's epilogue may hold inference batch norm and one more reduction or normalization (matmul);
    pointwise ops only (pointwise); one reduction (spatial too), normalization, scan or arg reduction among them
    (row), after a gather or an fp8 dequantization too (or pointwise ops alone after it); pointwise ops and a loss
    (loss); two reductions and no normalization (two_reductions); pointwise ops around a 2D pooling (pool);
    attention and pointwise ops after it (attention); a causal conv1d and pointwise ops after it (conv); a conv2d, a
    conv_transpose2d or a depthwise conv2d, pointwise ops and inference batch norm after it (conv2d,
    conv_transpose2d, depthwise), and for the first two one group or instance norm or reduction over its planes
    among them (a second kernel); other chains have no plan yet. Family and difficulty follow what the chain
    computes: a matmul or attention root is hard; two reductions are hard; a gather, an fp8 dequantization, a
    convolution, a scan, a loss, an arg reduction, a spatial reduction or a pooling makes a medium chain of its own
    family; any other op that reduces makes a medium "reduction" chain; the rest are easy "pointwise" chains. An
    inference batch norm applies running statistics, a per-channel affine map that reduces nothing
    (``ops.reduces``), so a chain of it with pointwise ops is easy, though the row plan writes it.
    """
    entries = [catalog.get(op) for op in ops]
    families = [entry.family for entry in entries]
    row_ops = [op for op, family in zip(ops, families) if family in catalog.ROW_FAMILIES]
    reductions = families.count(Family.REDUCTION)
    scans, losses = families.count(Family.SCAN), families.count(Family.LOSS)
    args, spatial = families.count(Family.ARG_REDUCTION), families.count(Family.SPATIAL)
    if families[-1] is Family.QUANTIZE:  # pointwise ops, then fp8 quantization: the row plan, its row op the last
        plan = "row" if len(row_ops) == 1 and families[0] not in catalog.ROOTS else None
        return ChainKind(plan, "fp8", "hard" if families[0] in (Family.MATMUL, Family.ATTENTION) else "medium")
    if families[0] is Family.MATMUL:
        simple = not (scans or losses or args or spatial) and len([op for op in row_ops if op != "batch_norm"]) <= 1
        return ChainKind("matmul" if simple else None, "matmul", "hard")
    if families[0] is Family.ATTENTION:
        plan = "attention" if all(f in (Family.UNARY, Family.BINARY) for f in families[1:]) else None
        return ChainKind(plan, "attention", "hard")
    if families[0] in (Family.GATHER, Family.FP8):
        plan = None if losses or len(row_ops) > 1 else "row" if row_ops else "pointwise"
        return ChainKind(plan, families[0].value, "medium")
    if families[0] is Family.CONV:
        pointwise = all(f in (Family.UNARY, Family.BINARY) for f in families[1:])
        epilogue = all(f in (Family.UNARY, Family.BINARY) or op == "batch_norm" for op, f in zip(ops[1:], families[1:]))
        second = [k for k, entry in enumerate(entries) if k and catalog.reads_planes(entry)]  # once, a second kernel
        two_kernels = len(second) == 1 and all(
            f in (Family.UNARY, Family.BINARY) or (op == "batch_norm" and k < second[0]) or k == second[0]
            for k, (op, f) in enumerate(zip(ops, families)) if k)
        gemm = epilogue or two_kernels
        plan = {"conv2d": "conv2d" if gemm else None, "conv_transpose2d": "conv_transpose2d" if gemm else None,
                "depthwise_conv2d": "depthwise" if epilogue else None}.get(ops[0], "conv" if pointwise else None)
        return ChainKind(plan, "convolution", "medium")
    if Family.POOL in families:  # on a [B, C, H, W] value, where only pointwise ops join it
        return ChainKind(None if Family.NORM in families or spatial else "pool", "pooling", "medium")
    if scans or losses or args or spatial:
        plan = ("loss" if losses else "row") if len(row_ops) == 1 else None
        family = ("loss" if losses else "scan" if scans else "arg_reduction" if args else "spatial_reduction")
        return ChainKind(plan, family, "medium")
    if not row_ops:
        plan = "pointwise"
    elif len(row_ops) == 1:
        plan = "row"
    else:
        plan = "two_reductions" if reductions == len(row_ops) == 2 else None
    if not any(catalog.reduces(entry) for entry in entries):
        return ChainKind(plan, "pointwise", "easy")
    return ChainKind(plan, "reduction", "hard" if reductions > 1 else "medium")


def pool_step(task: FusionTask) -> Step | None:
    """The chain's 2D pooling step, if it has one (at most one: it leaves P x Q planes, which no op pools again)."""
    return next((step for step in task.steps if catalog.get(step.op).family is Family.POOL), None)


def with_planes(task: FusionTask, dims: dict[str, int]) -> dict[str, int]:
    """``dims`` with the sizes a chain's planes take: P and Q, the pooled H and W, where the chain pools
    (``ops.pooled_size``); J, the input channels a group, and P and Q, the convolved H and W, where it starts with a
    conv2d (``ops.conv_size``); else ``dims``."""
    if task.steps and task.steps[0].op in ("conv2d", "depthwise_conv2d", "conv_transpose2d"):
        params, transposed = task.steps[0].params, task.steps[0].op == "conv_transpose2d"
        planes = {side: catalog.conv_size(dims[of], dims["R"], params, transposed)
                  for side, of in (("P", "H"), ("Q", "W"))}
        return {**dims, **({"J": dims["K"] // params["groups"]} if "groups" in params else {}), **planes}
    step = pool_step(task)
    if step is None:
        return dims
    return {**dims, "P": catalog.pooled_size(dims["H"], step.params), "Q": catalog.pooled_size(dims["W"], step.params)}


def start_shape(rank: int) -> tuple:
    """The symbolic shape of a chain's activation (without a matmul root) of ``rank``."""
    return {2: ("M", "N"), 3: ("B", "M", "N"), 4: ("B", "C", "H", "W")}[rank]


def row_length(step: Step, rank: int, dims: dict[str, int]) -> int:
    """The values one row of a reduction or normalization spans at ``dims``: the last dimension's; for group
    norm, one group of one sample (N / G of [M, N], (M / G) * N of [B, M, N]); for a spatial reduction, a plane
    of H x W (of P x Q after a conv2d); for a norm of a conv2d's output [B, C, P, Q], a group's planes ((C / G) P Q)
    or one plane (P Q)."""
    if catalog.get(step.op).family is Family.SPATIAL:  # the planes it reduces: a conv2d's P x Q, if there is one
        return dims["P"] * dims["Q"] if "P" in dims else dims["H"] * dims["W"]
    if rank == 4:
        return (dims["C"] // step.params["groups"] if step.op == "group_norm" else 1) * dims["P"] * dims["Q"]
    if step.op != "group_norm":
        return dims["N"]
    groups = step.params["groups"]
    return dims["N"] // groups if rank == 2 else dims["M"] // groups * dims["N"]


def longest_row(task: FusionTask, shapes: list[dict[str, int]]) -> int:
    """The longest row any reduction or normalization of ``task`` sees at ``shapes`` (0: none has rows; an inference
    batch norm of [B, C, P, Q] planes, a conv2d's epilogue, walks none)."""
    rank = task.rank
    return max((row_length(step, rank, dims) for step in task.steps
                if catalog.get(step.op).family in catalog.ROW_FAMILIES and not (rank == 4 and step.op == "batch_norm")
                for dims in shapes), default=0)


def _long_rows(task: FusionTask, lopsided: dict[str, int], groups: int, length: int = LONG_TEST_ROW) -> dict[str, int]:
    """The lopsided test shape (one batch) with rows of ``length`` values or more. A 3D group norm's rows are
    a group's channels by N: they grow by channels, so a matmul before it stays small; other rows grow along the
    last dimension (a 2D group norm's by G times as much: its rows are N / G); a norm of a conv2d's output has rows
    of its planes, which grow with the conv2d's input planes."""
    rank = task.rank
    dims = {**lopsided, **({"B": 1} if rank == 3 else {})}
    norm = next((step for step in task.steps if step.op in catalog.CHANNEL_NORMS), None)
    if rank == 4 and norm:  # a conv2d's output planes: its input planes grow, 16 values a side at a time
        dims["B"], dims["K"] = 1, task.steps[0].params.get("groups", 1)  # an input channel a group: the rows are tested
        while row_length(norm, rank, with_planes(task, dims)) < length:
            dims["H"], dims["W"] = dims["H"] + 16, dims["W"] + 16
        return with_planes(task, dims)
    if rank == 3 and any(step.op == "group_norm" for step in task.steps):
        dims["M"] = groups * -(-length // dims["N"])
    else:
        dims["N"] = length * (groups if rank == 2 else 1)
    return dims


def _sample_params(op: Op, fixed: dict, rng: random.Random) -> dict[str, Any]:
    return {p.name: fixed[p.name] if p.name in fixed else rng.choice(p.choices) for p in op.params}


def check_chain(forced, rank: int, rng: random.Random) -> list[tuple[Op, dict]]:
    """Type-check a forced chain; raise TaskError naming the failing step and what fits there."""
    shape = start_shape(rank)
    chain = []
    for k, (name, fixed) in enumerate(forced):
        op = catalog.CATALOG[name]
        params = _sample_params(op, fixed, rng)
        if k and catalog.CATALOG[forced[k - 1][0]].family in catalog.ENDS_CHAIN:
            ends = {Family.LOSS: "a loss", Family.QUANTIZE: "an fp8 quantization"}.get(
                catalog.CATALOG[forced[k - 1][0]].family, "an arg reduction")
            raise TaskError(f"step {k + 1}: {forced[k - 1][0]} is {ends} and ends the chain")
        if op.family in catalog.ROOTS:
            if k != 0:
                raise TaskError(f"step {k + 1}: {name} is a {op.family.value} root and must come first")
            chain.append((op, params))
            shape = catalog.root_shapes(op)[1]
            continue
        if op.family is Family.BINARY and "operand" not in fixed:
            kinds = [kind for kind in catalog.OPERAND_KINDS if _fits(op, shape, {**params, "operand": kind})]
            params["operand"] = rng.choice(kinds)
        try:
            shape = catalog.out_shape(op, shape, params)
        except ShapeError as e:
            fits = sorted(o.name for o in catalog.CATALOG.values() if o.family not in catalog.ROOTS
                          and _fits(o, shape, {p.name: p.choices[0] for p in o.params}))
            raise TaskError(f"step {k + 1}: {e}; ops that fit there: {', '.join(fits)}") from None
        chain.append((op, params))
    return chain


def _fits(op: Op, shape, params) -> bool:
    try:
        catalog.out_shape(op, shape, params)
        return True
    except ShapeError:
        return False


def _pick_dims(family: dict[str, tuple], rng: random.Random, channel: str, groups: int) -> dict[str, int]:
    dims = {k: rng.choice(family[k]) for k in DIM_ORDER if k in family}
    if channel in dims:
        dims[channel] = _round_up(dims[channel], groups)
    return dims


def _bench_dims(task: FusionTask, rank: int, root: Op | None, rng, channel: str, groups: int) -> dict[str, int]:
    """Free dims from a menu, then the leading dim grown until bytes or FLOPs reach the bench floor."""
    if root and root.family is Family.ATTENTION:
        dims = dict(rng.choice(_BENCH_ATTENTION))
        lead, step = "B", 1
    elif root and root.family is Family.CONV:
        menu = {"conv2d": _BENCH_CONV2D, "depthwise_conv2d": _BENCH_DEPTHWISE,
                "conv_transpose2d": _BENCH_CONV_TRANSPOSE}.get(root.name, _BENCH_CONV)
        dims = dict(rng.choice(menu))
        lead, step = "B", 1
    elif rank == 4:
        dims = dict(rng.choice(_BENCH_4D))
        lead, step = "B", 1
    elif rank == 3:
        dims = dict(rng.choice(_BENCH_3D_MM if root else _BENCH_3D))
        lead, step = "B", 1
    elif root and root.family is Family.GATHER:
        dims = dict(rng.choice(_BENCH_TABLE if root.name == "embedding" else _BENCH_PICKS))
        lead, step = "M", 64
    else:
        vocabulary = any(step.op in ("cross_entropy", "argmax", "argmin") for step in task.steps)
        multiplies = root is not None and root.family is Family.MATMUL
        dims = dict(rng.choice(_BENCH_2D_MM if multiplies else _BENCH_VOCAB if vocabulary else _BENCH_2D))
        lead, step = "M", 128 if multiplies else 64
    if channel in dims:
        dims[channel] = _round_up(dims[channel], groups)
    dims = with_planes(task, dims)
    one, two = task.cost({**dims, lead: step}), task.cost({**dims, lead: 2 * step})
    needed = []
    for key, floor in (("bytes", BENCH_MIN_BYTES), ("flops", BENCH_MIN_FLOPS)):
        per_step = two[key] - one[key]
        if per_step > 0:
            needed.append(max(1, math.ceil((floor - (one[key] - per_step)) / per_step)))
    dims[lead] = min(needed) * step
    return {k: dims[k] for k in DIM_ORDER if k in dims}


def probe_dims(task: FusionTask) -> dict[str, int]:
    """The bench shape with its leading and inner (K) dims shrunk to the first test shape's.

    Reductions run over the last dim (and, in chains with two reductions, over M too), so the
    probe keeps those at bench size: overflow in a long reduction shows here at a fraction of
    the bench cost. A lookup's table shrinks to the test shape's rows; attention's heads and sequence shrink too
    (its float64 reference is S^2 D a head, and its softmax nothing that grows with S); a conv2d's input channels
    shrink, its groups' J with them.
    """
    bench, test = task.shapes["bench"][0], task.shapes["test"][0]
    reductions = sum(catalog.get(s.op).family is Family.REDUCTION for s in task.steps)
    shrink = {"B", "K", "V", "NH", "S"} | (set() if reductions > 1 else {"M"})
    return with_planes(task, {k: (test[k] if k in shrink else v) for k, v in bench.items()})


# Dims an unseen shape moves (``unseen_dims``): the ones a kernel takes at any size. Head dims, windows and taps stay.
UNSEEN_DIMS = ("B", "M", "N", "K", "C", "H", "W", "V", "NH", "S")


# The dim a chain's channels run along, by the rank of its running value (``FusionTask.rank``): a group norm splits
# it into groups; a grouped conv2d's input and output channels come in multiples of its groups.
CHANNEL_DIM = {2: "N", 3: "M", 4: "C"}


def chain_groups(steps: Iterable[tuple[str, dict]]) -> int:
    """The groups a chain's channels split into, for (op name, params) steps: the most any group norm or grouped
    conv2d takes (all powers of 2, so a multiple of every other), else 1."""
    return max([params["groups"] for name, params in steps if name in ("group_norm", "conv2d")] or [1])


def unseen_dims(task: FusionTask, rng: random.Random) -> dict[str, int] | None:
    """A test shape no file can know: the first test shape with each size-free dim moved by up to a third at random
    (channels kept multiples of the chain's groups), its planes recomputed; None when the moved shape leaves an empty
    plane or output (the caller draws again or goes without)."""
    first = task.shapes["test"][0]
    dims = {k: v for k, v in first.items() if k not in ("P", "Q", "J")}
    for name in UNSEEN_DIMS:
        if name in dims:
            value = dims[name]
            dims[name] = max(2 if value > 1 else 1, value + rng.randint(-(value // 3), value // 3 + 2))
    return _fitted(task, dims)


# A wide shape's long dims (``wide_dims``): past 1024, the block many kernels cap a row at, and short of 2048; in
# multiples of 16 (16-byte rows at every dtype, as a TMA descriptor's strides must be). A chain that is not rooted in
# a product takes its bench row instead where that is longer (up to WIDE_ROW_MAX values, floored to 16): a block
# capped anywhere short of the bench row then fails on the CPU as it does on a GPU. A product's rows (a matmul's K
# and N, a convolution's planes) stay in WIDE_ROW, where the interpreter's tiles cost what a test shape's do.
WIDE_ROW = (1025, 2032)
WIDE_ROW_MAX = 16384
PRODUCT_ROOTS = (Family.MATMUL, Family.ATTENTION, Family.CONV)


def wide_dims(task: FusionTask, rng: random.Random) -> dict[str, int] | None:
    """A test shape no file can know, wide where the listed ones are not: the last dim of the first input and of
    the output (each of rank 2 or more: an embedding's ids and a loss's rows stay short), where size-free, drawn from
    WIDE_ROW or the bench row (above), every other size-free dim cut to 1-3 (so it costs about what a test shape
    does); None when no such dim is free (attention's head dim) or the shape leaves an empty plane. A kernel whose
    block covers fewer values of a row than the bench row, with no loop over the rest, is wrong here."""
    dims = {k: v for k, v in task.shapes["test"][0].items() if k not in ("P", "Q", "J")}
    lasts = {shape[-1] for shape in (task.inputs[0].shape, task.output_shape) if len(shape) >= 2}
    wide = [name for name in UNSEEN_DIMS if name in dims and name in lasts]
    if not wide:
        return None
    bench = task.shapes["bench"][0]
    rows_only = catalog.get(task.steps[0].op).family not in PRODUCT_ROOTS
    for name in UNSEEN_DIMS:
        if name in wide:
            drawn = _round_up(rng.randint(*WIDE_ROW), 16)  # drawn either way: the draws after it stay the same
            long = min(bench.get(name, 0), WIDE_ROW_MAX) // 16 * 16
            dims[name] = long if rows_only and long > WIDE_ROW[1] else drawn
        elif name in dims:
            dims[name] = min(dims[name], rng.randint(1, 3))
    return _fitted(task, dims)


def _fitted(task: FusionTask, dims: dict[str, int]) -> dict[str, int] | None:
    """``dims`` drawn from the first test shape, made a shape of the task: channels multiples of the chain's groups
    (a grouped conv2d's input and output channels, a group norm's), planes recomputed; None when it is the first
    test shape or leaves an empty plane or output."""
    groups = chain_groups((s.op, s.params) for s in task.steps)
    conv2d = task.steps[0].op in ("conv2d", "conv_transpose2d")
    for name in dims:
        if name in ("C", "K") and conv2d or name == CHANNEL_DIM[task.rank] and groups > 1:
            dims[name] = _round_up(dims[name], groups)
    dims = with_planes(task, dims)
    if dims == task.shapes["test"][0] or any(v <= 0 for v in dims.values()) or min(task.output_dims(dims) or (1,)) <= 0:
        return None
    return dims


def step_label(step: Step) -> str:
    """A step in words: "gelu (erf)", "add a per-column vector", "softmax over the last dim"."""
    op = catalog.get(step.op)
    if op.family is Family.BINARY:
        return f"{op.name} {catalog.operand_text(step.params['operand'])}"
    return op.describe(step.params)


def describe(task: FusionTask) -> str:
    return " -> ".join(step_label(s) for s in task.steps) + f" ({task.dtype})"


def signature(task: FusionTask) -> str:
    """Canonical text for deduplication: dtype, rank, ops with sorted parameters."""
    ops_text = ">".join(
        s.op + ("(" + ",".join(f"{k}={v}" for k, v in sorted(s.params.items())) + ")" if s.params else "")
        for s in task.steps)
    return f"{task.dtype}|r{task.rank}|{ops_text}"


# --------------------------------------------------------------------------------------------------
# The degeneracy screen
# --------------------------------------------------------------------------------------------------

def rel_error(a, b) -> float:
    """||a - b|| / ||b|| (the L2 norms; b's at least 1e-300)."""
    import torch

    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))


def screen(task: FusionTask) -> str | None:
    """Why a task is invalid or degenerate, or None. Runs the reference on a few random draws.

    Invalid: non-finite output (at the task dtype or in float64) at a test shape or the bench probe,
    or PyTorch at the task dtype more than MAX_DTYPE_ERROR away from float64 (ill-conditioned); for an arg
    reduction, of the values it picks from.
    Degenerate: output (near) zero, constant, or independent of one of the inputs; an arg reduction's rows
    mostly near-ties (``_index_screen``).
    """
    import torch

    # an arg reduction or a quantizer is judged by the values it takes (its rounding is its own rule's)
    takes_values = task.arg_reduction is not None or task.quantizer is not None
    reference = partial(task.values, float64=True) if task.quantizer else task.reference
    for k, dims in enumerate(task.shapes["test"] + [probe_dims(task)]):
        inputs = task.make_inputs(dims, seed=101 + k)
        with torch.no_grad():
            if takes_values:
                out, ref = task.values(inputs), task.values(inputs, float64=True)
            else:
                out, ref = task.function(*inputs), task.reference(inputs)
        if not (torch.isfinite(out).all() and torch.isfinite(ref).all()):
            return f"non-finite output at {dims}"
        if (error := rel_error(out.double(), ref)) > MAX_DTYPE_ERROR:
            return f"ill-conditioned at {task.dtype} (error {error:.2g} at {dims})"
    if task.arg_reduction is not None:
        return _index_screen(task)
    dims = task.shapes["test"][0]
    base = task.make_inputs(dims, seed=7)
    other = task.make_inputs(dims, seed=8)
    with torch.no_grad():
        out = reference(base)
        rms = float(out.square().mean().sqrt())
        if rms < NEAR_ZERO_RMS:
            return f"output near zero (rms {rms:.2g})"
        if out.numel() > 1 and float((out - out.mean()).abs().max()) <= CONSTANT_SPREAD * rms:
            return "output constant"
        least = MIN_SCALAR_EFFECT if out.dim() == 0 else MIN_INPUT_EFFECT
        for k, spec in enumerate(task.inputs):
            if spec.init.get("dist") in FIXED_DISTS:
                continue
            moved = base[:k] + [other[k]] + base[k + 1:]
            if rel_error(reference(moved), out) < least:
                return f"output independent of input {spec.name}"
    return None


def _index_screen(task: FusionTask) -> str | None:
    """An arg reduction's degeneracy: near-ties (two right answers, verify/indices.py) in more than MAX_TIE_FRACTION
    of TIE_PROBE_ROWS rows of bench length, every row picking the same index, or an input whose redrawing moves
    fewer than MIN_INPUT_EFFECT of the picks."""
    import torch

    from fusionforge.verify.indices import near_tie_fraction

    largest = task.arg_reduction.name == "argmax"
    bench = task.shapes["bench"][0]
    dims = {**bench, **({"B": 1} if "B" in bench else {}), "M": min(bench["M"], TIE_PROBE_ROWS)}
    with torch.no_grad():
        values, own_values, _ = task.picked_from(task.make_inputs(dims, seed=101))
    ties = near_tie_fraction(values, own_values, largest)
    if ties > MAX_TIE_FRACTION:
        return f"near-ties in {ties:.0%} of rows at {dims}: too many rows have two right indices"
    dims = task.shapes["test"][0]
    base, other = task.make_inputs(dims, seed=7), task.make_inputs(dims, seed=8)
    with torch.no_grad():
        out = task.reference(base)
        if bool((out == out.reshape(-1)[0]).all()):
            return "output constant"
        for k, spec in enumerate(task.inputs):
            moved = base[:k] + [other[k]] + base[k + 1:]
            if float((task.reference(moved) != out).double().mean()) < MIN_INPUT_EFFECT:
                return f"output independent of input {spec.name}"
    return None
