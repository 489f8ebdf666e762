"""The kernel that merges a reduction's partial states (a matmul's per-tile partials of each row, or
two_reductions' per-slice states of each batch) and applies the ops after it: a program per merged value."""

from __future__ import annotations

from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import PlanStep, kernel_args, step_inputs
from fusionforge.codegen.reductions import REDUCTIONS, Phrases
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import chain_text


def partial_names(step: PlanStep) -> list[tuple[str, str]]:
    """(variable, identity) of each part of ``step``'s partial state: ``part_<part>``, one buffer each."""
    return Phrases(REDUCTIONS[step.op.name], "part_", step.params).parts


def combine_kernel(step: PlanStep, later: list[PlanStep], dtype: str, *, program: str, lanes: str, count: str,
                   stride: str, block: str, n: str, after: Layout, sizes: list[tuple[str, str]], what: str,
                   over: str = "") -> Kernel:
    """A program per ``program`` (row or batch) loads its ``count`` partial states (``stride`` apart rows of
    ``block`` lanes, masked lanes at the identity), merges and finalizes them over ``n`` values, applies
    ``later`` and stores one value."""
    reduction = REDUCTIONS[step.op.name]
    phrases = Phrases(reduction, "part_", step.params, n=n)
    body = Code()
    body(f"{program} = tl.program_id(0).to(tl.int64)", f"{lanes} = tl.arange(0, {block})  # [{block}]")
    mask = f"{lanes} < {count}"
    if program == "row":  # the tiles' mask by name, reused by every part's load
        body(f"tile_mask = {mask}")
        mask = "tile_mask"
    for part, identity in phrases.parts:
        body(f"{part} = tl.load({part}_ptr + {program} * {stride} + {lanes}, mask={mask}, other={identity})")
    body(f"# {step.index}. {step.label}{over}: {step.op.doc}", *phrases(reduction.combine),
         *phrases(reduction.finalize))
    pointwise_steps(body, later, after, dtype)
    body(f"tl.store(out_ptr + {program}, h.to(out_ptr.dtype.element_ty))")
    doc = [f"{chain_text([step, *later])}: one program per {what}.",
           f"Merges its {count} partial states (fp32), applies the later ops, one cast on store."]
    return Kernel(f"{step.op.name}_combine_kernel",
                  [*(f"{part}_ptr" for part, _ in phrases.parts), *kernel_args(step_inputs(later)), "out_ptr"],
                  sizes, [block], doc, body)
