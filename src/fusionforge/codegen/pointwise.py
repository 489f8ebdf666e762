"""The pointwise plan: unary and binary ops (and an inference batch norm of an [M, N] value), one kernel over
the output.

``flat``: blocks of POINTWISE_BLOCK elements of the flattened output; a full-tensor operand is read at the
same offsets, a scalar is an argument. ``tiles``: with a per-row or per-column vector, [BLOCK_M, BLOCK_N]
tiles numbered row by row, each vector loaded once per tile and broadcast (indexed per element, it would cost
an integer division each); a batch norm's statistics and weights are per-column vectors. fp8 values are loaded
as such and multiplied by their scale in fp32 (a per-row scale is a per-row vector). After a gather, always
tiles: a lookup's tile loads its rows' ids once and reads those rows of the table; a gather's loads its
indices (index_select's once, a vector) and reads x where they point.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, dequantized, epilogue_steps
from fusionforge.codegen.plan import Plan, kernel_args
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper
from fusionforge.ops import Family


def emit(plan: Plan) -> Section:
    task = plan.task
    tiles = plan.variant == "tiles"
    root = plan.steps[0] if plan.steps[0].op.family is Family.GATHER else None
    lookup = root if root and root.op.name == "embedding" else None
    fp8 = plan.steps[0] if plan.steps[0].op.family is Family.FP8 else None
    steps = [s for s in plan.steps if s is not root and s is not fp8]
    source = "weight" if lookup else "x"
    body = Code()
    if tiles:
        body("# tiles in row-major order: neighbouring programs read neighbouring memory",
             "tiles_n = tl.cdiv(n_cols, BLOCK_N)",
             "rows = (tl.program_id(0) // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]",
             "cols = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]",
             "row_mask = rows < n_rows",
             "col_mask = cols < n_cols",
             "mask = row_mask[:, None] & col_mask[None, :]",
             "offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]  # [BLOCK_M, BLOCK_N]")
        col, row = ("cols", "col_mask", "[None, :]"), ("rows", "row_mask", "[:, None]")
        # an [M, N] value's channels (a batch norm's) are its columns
        layout = Layout({"full": "offsets"}, vectors={"col": col, "chan": col, "row": row})
        sizes, constexprs = [("n_rows", "n_rows"), ("n_cols", "n_cols"), ("n_picked_from", "x.shape[-1]")], \
            ["BLOCK_M", "BLOCK_N"]
        held = "as [rows, N] in [BLOCK_M, BLOCK_N] tiles"
        doc = "Per-column vectors load once per tile ([BLOCK_N], broadcast down its rows), per-row vectors " \
              "[BLOCK_M] across its columns; fp32 math, one cast on store."
    else:
        body("pid = tl.program_id(0)",
             "offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)  # [BLOCK_SIZE]",
             "mask = offsets < n_elements")
        layout = Layout({"full": "offsets"})
        sizes, constexprs = [("n_elements", "n_elements")], ["BLOCK_SIZE"]
        held = "flattened, BLOCK_SIZE elements a program"
        doc = "Full-tensor operands are read at the same offsets, scalars are arguments; fp32 math, one cast on store."
    if lookup:
        body(lookup.comment("the table rows of the tile's ids"),
             "tokens = tl.load(ids_ptr + rows, mask=row_mask, other=0)  # [BLOCK_M]",
             "h = tl.load(weight_ptr + tokens[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)")
        what = f"{shape_text(task.inputs[0])} into {shape_text(task.inputs[1])}, the output"
    elif root:
        picks = ("tl.load(index_ptr + offsets, mask=mask, other=0)" if root.op.name == "gather"
                 else "tl.load(index_ptr + cols, mask=col_mask, other=0)[None, :]")
        body(root.comment("the columns of x the tile's values come from"),
             f"picked = {picks}  # [{'BLOCK_M, ' if root.op.name == 'gather' else '1, '}BLOCK_N]",
             "h = tl.load(x_ptr + rows[:, None].to(tl.int64) * n_picked_from + picked, mask=mask, other=0.0)"
             ".to(tl.float32)")
        what = f"{shape_text(task.inputs[0])} picked at {shape_text(task.inputs[1])}, the output"
    elif fp8:
        body(*dequantized(fp8, layout))
        what = f"{shape_text(task.inputs[0])} scaled by {shape_text(task.inputs[1])}"
    else:
        body("h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)")
        what = shape_text(task.inputs[0])
    epilogue_steps(body, steps, layout, task.dtype)
    body("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")
    kernel = Kernel("fused_kernel_triton", [*kernel_args(task.inputs), "out_ptr"], sizes, constexprs,
                    [f"{chain_text(plan.steps)}: elementwise over {what} {held}.", doc], body)

    code = wrapper(plan)
    if lookup:
        code("out = torch.empty((*ids.shape, weight.shape[-1]), dtype=weight.dtype, device=weight.device)")
    elif root:
        code("out = torch.empty((*x.shape[:-1], index.shape[-1]), dtype=x.dtype, device=x.device)")
    elif fp8:
        code("out = torch.empty_like(x, dtype=scale.dtype)")
    else:
        code("out = torch.empty_like(x)")
    if tiles:
        code(f"# [{tuning.POINTWISE_TILE} // BLOCK_N, BLOCK_N] tiles on {tuning.POINTWISE_WARPS} warps "
             f"({tuning.see('pointwise-tiles')})",
             f"n_cols = {'index' if root and not lookup else source}.shape[-1]",
             f"n_rows = {'out' if root else 'x'}.numel() // n_cols",
             f"BLOCK_N = min({tuning.POINTWISE_TILE_N}, triton.next_power_of_2(n_cols))",
             f"BLOCK_M = {tuning.POINTWISE_TILE} // BLOCK_N",
             "grid = (triton.cdiv(n_rows, BLOCK_M) * triton.cdiv(n_cols, BLOCK_N),)")
        launch = ["BLOCK_M=BLOCK_M", "BLOCK_N=BLOCK_N"]
    else:
        code(f"# blocks of {tuning.POINTWISE_BLOCK} on {tuning.POINTWISE_WARPS} warps "
             f"({tuning.see('pointwise-blocks')})",
             "n_elements = out.numel()",
             f"grid = (triton.cdiv(n_elements, {tuning.POINTWISE_BLOCK}),)")
        launch = [f"BLOCK_SIZE={tuning.POINTWISE_BLOCK}"]
    code.call("fused_kernel_triton[grid](", [*(i.name for i in task.inputs), "out", *kernel.size_args(),
                                             *launch, f"num_warps={tuning.POINTWISE_WARPS}"])
    code("return out")
    return Section([kernel], [], code)
