"""The two_reductions plan: [B, M, N] reduced over N, then over M, pointwise steps before, between and after.

A program per [BLOCK_M, BLOCK_N] tile of one batch's rows (TWO_REDUCTION_TILE values; past
TWO_REDUCTION_MAX_SPLITS tiles a batch, a program walks a slice of several) reduces its rows over N in
registers, applies the middle steps, and folds the rows into the second reduction's running state, which it
stores in fp32; a combine kernel merges each batch's slice states and applies the later steps.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.combine import combine_kernel
from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import Plan, kernel_args, step_inputs
from fusionforge.codegen.reductions import REDUCTIONS, Phrases
from fusionforge.codegen.rows import READ_ONCE
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, wrapper


def emit(plan: Plan) -> Section:
    steps = list(plan.steps)
    first, second = plan.row_steps
    head = [s for s in steps if s.index <= second.index]
    tile = Layout({"col": "cols[None, :]", "row": "batch * n_rows + rows[:, None]",
                   "full": "batch * n_rows * n_cols + rows[:, None] * n_cols + cols[None, :]"},
                  vectors={"col": ("cols", "cols < n_cols", "[None, :]")})
    per_row = Layout({"col": "rows", "row": "batch", "full": "batch * n_rows + rows"}, frozenset({"row"}), "row_mask")
    over_n = Phrases(REDUCTIONS[first.op.name], "row_", first.params, axis=1, bcast="[:, None]", n="n_cols",
                     known={"count": "n_cols"})
    over_m = Phrases(REDUCTIONS[second.op.name], "run_", second.params, mask="row_mask")

    body = Code()
    body("program = tl.program_id(0)",
         "batch = (program // n_splits).to(tl.int64)",
         "split = program % n_splits",
         "cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]",
         *over_m.init(),
         "row_end = tl.minimum((split + 1) * rows_per_split, n_rows)")
    with body.block("for start in tl.range(split * rows_per_split, row_end, BLOCK_M, num_stages=1):"):
        body("rows = start + tl.arange(0, BLOCK_M)  # [BLOCK_M]",
             "row_mask = rows < row_end",
             "mask = row_mask[:, None] & (cols[None, :] < n_cols)")
        body(READ_ONCE)
        body.call("h = tl.load(", ["x_ptr + " + tile.index["full"], "mask=mask", "other=0.0",
                                   "eviction_policy='evict_first'"], ").to(tl.float32)")
        pointwise_steps(body, [s for s in steps if s.index < first.index], tile, plan.dtype)
        body(f"# {first.index}. {first.label} (over N): {first.op.doc}",
             *over_n(over_n.reduction.block), *over_n(over_n.reduction.finalize))
        pointwise_steps(body, [s for s in steps if first.index < s.index < second.index], per_row, plan.dtype)
        body(f"# {second.index}. {second.label} (over M): this slice's running state", *over_m(over_m.reduction.update))
    parts = [part for part, _ in over_m.reduction.state]  # stored in part_<part>, merged by the combine kernel
    body(*(f"tl.store(part_{part}_ptr + batch * n_splits + split, {over_m.names[part]})" for part in parts))
    kernel = Kernel("fused_kernel_triton",
                    [*kernel_args([plan.task.inputs[0], *step_inputs(head)]),
                     *(f"part_{part}_ptr" for part in parts), "n_rows", "n_cols", "rows_per_split", "n_splits"],
                    [], ["BLOCK_M", "BLOCK_N"],
                    [f"{chain_text(head)}; x [B, M, N], a program per batch and slice of rows.",
                     "Walks the [BLOCK_M, BLOCK_N] tiles of its rows_per_split rows (one tile unless M is long); "
                     "stores the slice's fp32 state of the second reduction."], body)

    later = [s for s in steps if s.index > second.index]
    combine = combine_kernel(second, later, plan.dtype, program="batch", lanes="splits", count="n_splits",
                             stride="n_splits", block="BLOCK_S", n="n_reduced", after=Layout({}),
                             sizes=[("n_splits", "n_splits"), ("n_reduced", "n_rows")], what="batch",
                             over=" (over M)")
    code = wrapper(plan)
    code("n_batch, n_rows, n_cols = x.shape",
         "BLOCK_N = triton.next_power_of_2(n_cols)",
         f"BLOCK_M = max(1, min(triton.next_power_of_2(n_rows), {tuning.TWO_REDUCTION_TILE} // BLOCK_N))",
         f"# a program per tile, past {tuning.TWO_REDUCTION_MAX_SPLITS} tiles a batch each walks several "
         f"({tuning.see('two-reductions')})",
         f"rows_per_split = triton.cdiv(triton.cdiv(n_rows, BLOCK_M), {tuning.TWO_REDUCTION_MAX_SPLITS}) * BLOCK_M",
         "n_splits = triton.cdiv(n_rows, rows_per_split)",
         *(f"part_{part} = torch.empty((n_batch, n_splits), dtype=torch.float32, device=x.device)"
           for part in parts))
    code.call("fused_kernel_triton[(n_batch * n_splits,)](",
              ["x", *(i.name for i in step_inputs(head)), *(f"part_{part}" for part in parts), "n_rows", "n_cols",
               "rows_per_split", "n_splits", "BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N",
               f"num_warps={tuning.TWO_REDUCTION_WARPS}"])
    code(f"out = torch.empty({'(n_batch, 1)' if second.params['keepdim'] else '(n_batch,)'}, dtype=x.dtype, "
         "device=x.device)")
    code.call(f"{combine.name}[(n_batch,)](", [*(f"part_{part}" for part in parts),
                                                *(i.name for i in step_inputs(later)), "out", *combine.size_args(),
                                                "BLOCK_S=triton.next_power_of_2(n_splits)"])
    code("return out")
    return Section([kernel, combine], [], code)
