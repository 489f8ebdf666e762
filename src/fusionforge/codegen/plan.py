"""The plan: everything the emitters need, resolved once from a task.

A plan names the kind of kernel file (its family of emitters), the variant written and why, and the task's
steps, each with its number in the chain (kernel comments use it, in every kernel of the file), its catalog
entry and the inputs it reads. A reduction or normalization whose rows a kernel walks carries how it walks
them (``Rows``). The variant is what the built-in implementer retries with and what the attempt log records.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionforge import ops as catalog
from fusionforge.codegen import tuning
from fusionforge.ops import Family, Op
from fusionforge.tasks import ITEMSIZE, SCALAR_DTYPE, FusionTask, InputSpec, Step, classify, row_length, step_label


class UnsupportedTask(ValueError):
    """The built-in code generator has no plan for this chain yet."""


@dataclass(frozen=True)
class PlanStep:
    """One step of the chain: its number in the chain (1-based), the step, its catalog entry, its inputs."""

    index: int
    step: Step
    op: Op
    inputs: tuple[InputSpec, ...]

    @property
    def label(self) -> str:
        return step_label(self.step)

    @property
    def params(self) -> dict:
        return self.step.params

    @property
    def reduces(self) -> bool:
        """Whether the step leaves one value per row: a reduction (spatial too) or an arg reduction."""
        return self.op.family in (Family.REDUCTION, Family.ARG_REDUCTION, Family.SPATIAL)

    @property
    def pointwise(self) -> bool:
        return self.op.family in (Family.UNARY, Family.BINARY)

    def operands(self) -> list[tuple[str, str, InputSpec]]:
        """(stem, layout, input) of each extra input: a binary op's one operand, a normalization's weights."""
        return [(o.stem, o.layout, spec) for o, spec in zip(catalog.operands(self.op, self.params), self.inputs)]

    def comment(self, doc: str | None = None) -> str:
        """``# <index>. <label>: <doc>``, the op's formula unless ``doc`` says what this kernel does of it (less a
        first clause the label already ends with: ``linear x @ w^T: [M, K] x [N, K] -> [M, N]``)."""
        formula = doc or self.op.doc
        said, colon, rest = formula.partition(": ")
        return f"# {self.index}. {self.label}: {rest if colon and self.label.endswith(said) else formula}"


@dataclass(frozen=True)
class Rows:
    """How a kernel walks the rows of a reduction or normalization: ``form`` is ``registers`` (a row a program,
    held in registers), ``short_rows`` (several short rows a program), ``slices`` (a row walked in slices) or
    ``group_tiles`` (a 3D group norm's group walked in tiles of channels and positions)."""

    step: PlanStep
    form: str
    longest: int  # values, the longest row at any of the task's shapes
    rank: int
    dims: tuple[str, str] = ("M", "N")  # a 3D value's channels and positions: (C, P Q) of a conv2d's output

    @property
    def looped(self) -> bool:
        return self.form in ("slices", "group_tiles")


@dataclass(frozen=True)
class Plan:
    task: FusionTask
    kind: str  # a key of codegen.EMITTERS: pointwise, row, ..., conv2d, conv_transpose2d, depthwise
    variant: str
    reason: str
    steps: tuple[PlanStep, ...]
    rows: Rows | None = None  # the row plan's row op, or the normalization after a matmul or a conv2d

    @property
    def dtype(self) -> str:
        return self.task.dtype

    @property
    def rank(self) -> int:
        return self.task.rank

    @property
    def row_steps(self) -> list[PlanStep]:
        return [s for s in self.steps if s.op.family in catalog.ROW_FAMILIES]


def plan_steps(task: FusionTask) -> tuple[PlanStep, ...]:
    by_name = {spec.name: spec for spec in task.inputs}
    return tuple(PlanStep(k, step, catalog.get(step.op), tuple(by_name[name] for name in step.inputs))
                 for k, step in enumerate(task.steps, start=1))


def _rows(task: FusionTask, step: PlanStep) -> Rows:
    """How the kernel walks the rows: in slices where any row is longer than registers hold; several a program
    where the bench shape's rows are short (a longer test row then fills a tile alone); else one a program. A norm
    of a conv2d's output [B, C, P, Q] reads it as [B, C, P Q], the 3D form of its rows."""
    longest = max(row_length(step.step, task.rank, dims) for dims in task.shapes["test"] + task.shapes["bench"])
    bench = max(row_length(step.step, task.rank, dims) for dims in task.shapes["bench"])
    planes = task.rank == 4 and step.op.name in catalog.CHANNEL_NORMS
    rank = 3 if planes else task.rank
    if longest > tuning.MAX_ROW_BLOCK:
        form = "group_tiles" if step.op.name == "group_norm" and rank == 3 else "slices"
    elif step.reduces and bench * ITEMSIZE[task.dtype] < tuning.SHORT_ROW_BYTES:
        form = "short_rows"
    else:
        form = "registers"
    return Rows(step, form, longest, rank, ("C", "P Q") if planes else ("M", "N"))


_ROW_REASONS = {
    "registers": "rows of at most {longest} values: one a program, held in registers",
    "short_rows": "rows under {bytes} bytes: [ROWS, BLOCK_N] tiles of {tile} values a program",
    "slices": "rows of up to {longest} values, over {cap} held in registers: walked in slices",
    "group_tiles": "groups of up to {longest} values, over {cap} held in registers: walked in tiles of channels "
                   "and positions",
}


def _options(task: FusionTask, kind: str, steps: tuple[PlanStep, ...]) -> tuple[list[tuple[str, str]], Rows | None]:
    """The variants the generator can write, the default first, each with its reason; and the rows walked."""
    if kind == "pointwise":
        vectors = [s.params["operand"] for s in steps if s.params.get("operand") in ("col", "row")]
        if any(s.op.name in catalog.AFFINE_NORMS for s in steps):  # a [M, N] value's channels are its columns
            vectors.append("col")
        if steps[0].op.name == "dequantize_fp8_rows":  # its scales are a per-row vector
            vectors.append("row")
        if steps[0].op.family is Family.GATHER:
            return [("tiles", "a gather: [rows, N] tiles load their ids or indices and read where they point")], None
        if vectors:
            return [("tiles", f"a per-{'column' if 'col' in vectors else 'row'} vector: [rows, N] tiles load it "
                              "once each")], None
        return [("flat", "full tensors and scalars only: flat blocks of the output")], None
    if kind == "pool":
        return [("windows", "flat blocks of the output a program, each window offset loaded as one masked block")], \
            None
    if kind == "conv":
        return [("taps", "[rows, N] tiles of the output a program, each tap loaded as one masked tile of x")], None
    if kind == "depthwise":
        return [("taps", "flat blocks of the output a program, each tap of the window loaded as one block of x")], \
            None
    if kind == "conv_transpose2d":
        gemm = ("an implicit GEMM a phase (p mod S, q mod S) of the output: [B P Q / S^2, C] tiles a program, the "
                "taps that serve the phase, BLOCK_K input channels a step")
    elif kind == "conv2d":
        walk = "tap by tap, BLOCK_K channels a step" if tap_loop(task) else "a window's J R R values flattened"
        gemm = f"an implicit GEMM: [B P Q, C / G] output tiles a program and group, x's windows gathered {walk}"
    if kind in ("conv2d", "conv_transpose2d"):
        second = next((s for s in steps[1:] if catalog.reads_planes(s.op)), None)
        rows = _rows(task, second) if second else None
        if rows:
            walk = _ROW_REASONS[rows.form].format(longest=rows.longest, cap=tuning.MAX_ROW_BLOCK,
                                                  bytes=tuning.SHORT_ROW_BYTES, tile=tuning.SHORT_ROW_TILE)
            gemm += f"; the {second.op.name} a second kernel, its {walk}"
        return (_float32_products(gemm) if task.dtype == "float32" else [("gemm", gemm)]), rows
    if kind == "attention":
        flash = "BLOCK_M queries a program, keys walked with an online softmax, the ops after it fused"
        return (_float32_products(flash) if task.dtype == "float32" else [("flash", flash)]), None
    if kind == "two_reductions":
        return [("split", "two reductions: a program per tile of a batch's rows, a combine kernel per batch")], None
    if kind == "loss":
        loss = steps[-1]
        mean = "; a mean: a partial sum a program, added by a second kernel" if task.output_shape == [] else ""
        return [("tiles", f"rows walked in [ROWS, CHUNK] tiles of {tuning.LOSS_TILE} values carrying the "
                          f"{loss.op.name} state{mean}")], _rows(task, loss)
    if kind == "row":
        rows = _rows(task, next(s for s in steps if s.op.family in catalog.ROW_FAMILIES))
        if rows.step.op.family is Family.SCAN and rows.form != "registers":
            raise UnsupportedTask(f"the built-in code generator scans rows held in registers, up to "
                                  f"{tuning.MAX_ROW_BLOCK} values; task {task.id} has rows of {rows.longest}")
        reason = _ROW_REASONS[rows.form].format(longest=rows.longest, bytes=tuning.SHORT_ROW_BYTES,
                                                tile=tuning.SHORT_ROW_TILE, cap=tuning.MAX_ROW_BLOCK)
        return [(rows.form, reason)], rows
    tail = next((s for s in steps if s.op.family in catalog.ROW_FAMILIES and s.op.name != "batch_norm"), None)
    rows = _rows(task, tail) if tail is not None and not tail.reduces else None
    if task.dtype == "float32":
        return _float32_products("a tl.dot tile per program", retry="tiled"), rows
    return [("persistent", "16-bit: one program per SM over the output tiles, TMA loads"),
            ("tiled", "16-bit: a tl.dot tile per program (the retry)")], rows


def _float32_products(kernel: str, retry: str = "ieee") -> list[tuple[str, str]]:
    """A float32 plan's two variants of ``kernel``: products in three TF32 passes (fp32-accurate on the tensor
    cores), then IEEE fp32 as the retry (named ``retry``)."""
    return [("tf32x3", f"{kernel}; float32: tl.dot in three TF32 passes on the tensor cores, fp32-accurate"),
            (retry, f"{kernel}; float32: tl.dot in IEEE fp32 (the retry)")]


def tap_loop(task: FusionTask) -> bool:
    """Whether a conv2d kernel walks each window tap's channels in blocks (a group of many input channels at the
    bench shape) rather than a window's flattened values (few)."""
    return task.shapes["bench"][0]["J"] >= tuning.CONV2D_TAP_LOOP_J


def variants(task: FusionTask) -> list[str]:
    """The kernel variants the generator can write for ``task``, the default first (matmul roots have two: the
    built-in implementer retries with the other)."""
    return [variant for variant, _ in _options(task, _kind(task), plan_steps(task))[0]]


def _kind(task: FusionTask) -> str:
    if not task.steps:
        raise UnsupportedTask(f"the built-in code generator writes op chains; task {task.id} is a module "
                              f"({task.description})")
    kind = classify([s.op for s in task.steps]).plan
    if kind is None:
        root = {"gather": "a gather", "fp8": "an fp8 dequantization"}.get(task.family)
        missing = (f"{root} followed by a loss or several row ops" if root
                   else "chains with several normalizations or reductions beyond two")
        raise UnsupportedTask(f"the built-in code generator has no plan yet for {missing} (task {task.id}: "
                              f"{task.description})")
    if kind == "row" and task.rank == 2 and all(s.op in catalog.AFFINE_NORMS for s in task.steps
                                                if catalog.get(s.op).family in catalog.ROW_FAMILIES):
        return "pointwise"  # inference batch norm alone reduces nothing: per-column vectors, loaded once a tile
    return kind


def resolve(task: FusionTask, variant: str | None = None) -> Plan:
    """The plan for ``task`` in ``variant`` (default: the first); UnsupportedTask for a chain with no plan."""
    kind = _kind(task)
    steps = plan_steps(task)
    options, rows = _options(task, kind, steps)
    reasons = dict(options)
    variant = variant or options[0][0]
    if variant not in reasons:
        raise UnsupportedTask(f"no {variant!r} variant of the {kind} plan for task {task.id}")
    return Plan(task, kind, variant, reasons[variant], steps, rows)


def kernel_args(inputs: list[InputSpec]) -> list[str]:
    """A kernel's parameters for ``inputs``: ``<name>_ptr`` for a tensor, the name for a scalar."""
    return [f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in inputs]


def step_inputs(steps: list[PlanStep]) -> list[InputSpec]:
    return [spec for s in steps for spec in s.inputs]
