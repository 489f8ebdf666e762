"""The convolution plan: a causal depthwise conv1d, its bias and the pointwise ops after it, in one kernel.

The output [B, M, N] is read as rows (one batch's channel: B * M of them) by N positions, a [BLOCK_R, BLOCK_N] tile
a program. Tap t of the T loads one masked tile of x shifted back T - 1 - t positions (zeros before the sequence's
start; a tile's first positions read the last ones of the tile before it, which the cache holds) and adds it
times each row's weight for that tap; then the bias, the ops after it in registers, one cast on store.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import Plan, kernel_args
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper

SIZES = (("n_rows", "n_rows"), ("n_cols", "n_cols"), ("n_chan", "n_chan"))


def emit(plan: Plan) -> Section:
    task = plan.task
    conv, after = plan.steps[0], list(plan.steps[1:])
    body = Code()
    body("rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] rows: batch * M + channel",
         "cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] positions",
         "row_mask = rows < n_rows",
         "col_mask = cols < n_cols",
         "channel = rows % n_chan",
         "row_offsets = rows.to(tl.int64)[:, None] * n_cols  # [BLOCK_R, 1]",
         conv.comment("the taps, one shifted tile of x each"),
         "acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)")
    with body.block("for t in tl.static_range(TAPS):"):
        body("shifted = cols - (TAPS - 1 - t)  # [BLOCK_N] the positions tap t reads; none before the sequence",
             "mask = row_mask[:, None] & (col_mask & (shifted >= 0))[None, :]",
             "x = tl.load(x_ptr + row_offsets + shifted[None, :], mask=mask, other=0.0).to(tl.float32)",
             "tap = tl.load(weight_ptr + channel * TAPS + t, mask=row_mask, other=0.0).to(tl.float32)  # [BLOCK_R]",
             "acc += x * tap[:, None]")
    body("bias = tl.load(bias_ptr + channel, mask=row_mask, other=0.0).to(tl.float32)  # [BLOCK_R]",
         "h = acc + bias[:, None]",
         "mask = row_mask[:, None] & col_mask[None, :]",
         "offsets = row_offsets + cols[None, :]  # [BLOCK_R, BLOCK_N]")
    layout = Layout({"full": "offsets"}, vectors={"col": ("cols", "col_mask", "[None, :]"),
                                                  "row": ("rows", "row_mask", "[:, None]")})
    pointwise_steps(body, after, layout, task.dtype)
    body("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")
    kernel = Kernel(
        "fused_kernel_triton", [*kernel_args(task.inputs), "out_ptr"], list(SIZES), ["TAPS", "BLOCK_R", "BLOCK_N"],
        [f"{chain_text(plan.steps)}: {', '.join(shape_text(i) for i in task.inputs[:3])} -> "
         f"[{', '.join(map(str, task.output_shape))}].",
         "A [BLOCK_R, BLOCK_N] tile of rows (one batch's channel) by positions a program; each tap loads one masked "
         "tile of x shifted back and adds it times the rows' weights; fp32 math, one cast on store."],
        body)

    code = wrapper(plan)
    code("out = torch.empty_like(x)",
         "n_chan, n_cols = x.shape[-2:]",
         "n_rows = x.numel() // n_cols",
         f"# [{tuning.CONV_TILE} // BLOCK_N, BLOCK_N] output tiles on {tuning.CONV_WARPS} warps "
         f"({tuning.see('conv-tiles')})",
         f"BLOCK_N = min({tuning.CONV_TILE_N}, triton.next_power_of_2(n_cols))",
         f"BLOCK_R = {tuning.CONV_TILE} // BLOCK_N",
         "grid = (triton.cdiv(n_rows, BLOCK_R), triton.cdiv(n_cols, BLOCK_N))")
    code.call("fused_kernel_triton[grid](", [
        *(i.name for i in task.inputs), "out", *kernel.size_args(), "TAPS=weight.shape[-1]", "BLOCK_R=BLOCK_R",
        "BLOCK_N=BLOCK_N", f"num_warps={tuning.CONV_WARPS}"])
    code("return out")
    return Section([kernel], [], code)
