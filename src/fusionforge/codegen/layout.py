"""Where a kernel finds each operand, and the pointwise steps that read them.

An operand's layout (ops.py: ``col`` a per-column vector, ``row`` a per-row vector, ``full`` a tensor of the
running value's shape, ``chan`` a per-channel vector, ``scalar`` an argument) maps to an index expression into
its storage. A ``Layout`` says, for the values one kernel holds, which expression each layout takes and how it
loads: once per program, once per lane, or once per tile as a vector broadcast over the tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fusionforge.codegen.plan import PlanStep
from fusionforge.codegen.reductions import NORMALIZATIONS
from fusionforge.codegen.source import Code
from fusionforge.ops import Family
from fusionforge.tasks import SCALAR_DTYPE


@dataclass
class Layout:
    """``index``: layout -> index expression; layouts in ``per_program`` are one value per program (loaded
    without a mask), the others one per lane under ``mask``; ``vectors``: layout -> (index, its mask, the
    broadcast that spreads it over the kernel's tile), loaded once per tile."""

    index: dict[str, str]
    per_program: frozenset = frozenset()
    mask: str = "mask"
    vectors: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def load(self, name: str, layout: str, other: str = "0.0", var: str | None = None) -> str:
        """``var = tl.load(<name>_ptr + index ...)`` in fp32; ``var`` defaults to the input's name."""
        var = var or name
        if layout in self.vectors:
            index, mask, broadcast = self.vectors[layout]
            return f"{var} = tl.load({name}_ptr + {index}, mask={mask}, other={other}).to(tl.float32){broadcast}"
        index = self.index[layout]
        if layout in self.per_program:
            return f"{var} = tl.load({name}_ptr + {index}).to(tl.float32)"
        return f"{var} = tl.load({name}_ptr + {index}, mask={self.mask}, other={other}).to(tl.float32)"


def dequantized(step: PlanStep, layout: Layout, hint: str = "") -> list[str]:
    """The lines loading an fp8 root's values into ``h``: e4m3 values (exact in fp32) times their scale, a row's
    (loaded as the layout loads a per-row vector) or the tensor's (one load a program)."""
    scale = (layout.load("scale", "row") if step.op.name == "dequantize_fp8_rows"
             else "scale = tl.load(scale_ptr).to(tl.float32)")
    return [step.comment(), scale,
            f"h = tl.load(x_ptr + {layout.index['full']}, mask={layout.mask}, other=0.0{hint}).to(tl.float32) * scale"]


def per_row(row: str, mask: str | None = None) -> Layout:
    """Operands of the ops after a row reduction, whose values are one per row: indexed by ``row`` (a program's
    row, loaded once) or, with ``mask``, by a vector of rows (one per lane)."""
    index = {"col": f"{row} % n_chan", "row": f"{row} // n_chan", "full": row}
    return Layout(index, mask=mask) if mask else Layout(index, frozenset(index))


def pointwise(code: Code, step: PlanStep, layout: Layout, dtype: str) -> None:
    """A unary or binary step applied to ``h`` in fp32, in the op's Triton form at ``dtype``; a binary op's
    tensor operand loaded first (a divisor's masked lanes as 1.0: never stored, kept finite all the same)."""
    params = {name: value for name, value in step.params.items() if name != "operand"}
    names = {}
    if step.op.family is Family.BINARY:
        spec = step.inputs[0]
        if spec.dtype != SCALAR_DTYPE:
            code(layout.load(spec.name, step.params["operand"], "1.0" if step.op.name == "div" else "0.0"))
        names = {"y": spec.name}
    code(step.comment(), "h = " + step.op.triton_form(dtype).format(x="h", **params, **names))


def pointwise_steps(code: Code, steps: list[PlanStep], layout: Layout, dtype: str) -> None:
    for step in steps:
        pointwise(code, step, layout, dtype)


def epilogue_steps(code: Code, steps: list[PlanStep], layout: Layout, dtype: str) -> None:
    """The steps a root's output tile takes in registers: pointwise ops, and an inference batch norm with its running
    statistics, gamma and beta loaded per channel (``layout``'s ``chan``)."""
    for step in steps:
        if step.op.name == "batch_norm":
            code(step.comment())
            operand_loads(code, step, layout)
            code(NORMALIZATIONS["batch_norm"].apply.format(**step.params))
        else:
            pointwise(code, step, layout, dtype)


def operand_loads(code: Code, step: PlanStep, layout: Layout) -> None:
    """A normalization's weights and statistics (gamma, beta, running_mean, ...), each loaded as its stem."""
    for stem, where, spec in step.operands():
        code(layout.load(spec.name, where, var=stem))
