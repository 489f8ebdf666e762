"""The pooling plan: pointwise ops, a 2D max or average pooling, pointwise ops, in one kernel over the output.

The output [B, C, P, Q] is read flat, BLOCK_SIZE consecutive outputs a program (no lanes idle past a short Q); the
planes' sides are constexprs, so finding an output's plane, row and column divides by constants. Each offset (i, j)
of the K x K window loads one masked block of x, the value at (p S - pad + i, q S - pad + j) of each output's plane,
applies the ops before the pool to it (K^2 / S^2 times a value of x: the window's overlapping loads hit in L1) and
folds it into the running max or sum. Positions in the padding are masked: -inf for a max, 0 for a sum, after the
ops before the pool (PyTorch pads the pool's input). An average divides by K^2, or with count_include_pad=False by
the count of the window's positions inside the plane.
"""

from __future__ import annotations

from contextlib import contextmanager

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import Plan, PlanStep, kernel_args
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper
from fusionforge.ops import Family

NEG_INF = "float('-inf')"
PLANE = ("IN_H", "IN_W", "OUT_H", "OUT_W")  # constexprs: divisions by them compile to multiplies


def emit(plan: Plan) -> Section:
    task = plan.task
    pool = next(s for s in plan.steps if s.op.family is Family.POOL)
    before, after = list(plan.steps[:pool.index - 1]), list(plan.steps[pool.index:])
    body = Code()
    _windows(body, pool, before, task.dtype)
    pointwise_steps(body, after, Layout({"full": "out_offsets"}, mask="out_mask"), task.dtype)
    body("tl.store(out_ptr + out_offsets, h.to(out_ptr.dtype.element_ty), mask=out_mask)")
    kernel = Kernel(
        "fused_kernel_triton", [*kernel_args(task.inputs), "out_ptr"], [("n_outputs", "out.numel()")],
        [*PLANE, "KERNEL_SIZE", "STRIDE", "PADDING", "BLOCK_SIZE"],
        [f"{chain_text(plan.steps)}: {shape_text(task.inputs[0])} -> [{', '.join(map(str, task.output_shape))}].",
         "BLOCK_SIZE consecutive outputs a program, the output read as one flat run; each offset of the window "
         "loads one masked block of x, applies the ops before the pool to it and folds it in; fp32 math, one cast "
         "on store."],
        body)

    params = pool.params
    code = wrapper(plan)
    code(f"KERNEL_SIZE, STRIDE, PADDING = {params['kernel_size']}, {params['stride']}, {params['padding']}",
         "in_h, in_w = x.shape[-2:]",
         *output_plane("KERNEL_SIZE"),
         "out = torch.empty((*x.shape[:-2], out_h, out_w), dtype=x.dtype, device=x.device)",
         f"BLOCK_SIZE = {tuning.POOL_BLOCK}  # on {tuning.POOL_WARPS} warps ({tuning.see('pool-tiles')})",
         "grid = (triton.cdiv(out.numel(), BLOCK_SIZE),)")
    code.call("fused_kernel_triton[grid](", [
        *(i.name for i in task.inputs), "out", *kernel.size_args(), "IN_H=in_h", "IN_W=in_w", "OUT_H=out_h",
        "OUT_W=out_w", "KERNEL_SIZE=KERNEL_SIZE", "STRIDE=STRIDE", "PADDING=PADDING", "BLOCK_SIZE=BLOCK_SIZE",
        f"num_warps={tuning.POOL_WARPS}"])
    code("return out")
    return Section([kernel], [], code)


def _fold(body: Code, pool: PlanStep, inside: str | None) -> None:
    """Fold ``h`` at one window offset into ``acc``, positions outside the plane (``inside`` false) as padding;
    ``inside`` None: every position is in the plane."""
    if inside is None:
        body("acc = tl.maximum(acc, h)" if pool.op.name == "max_pool2d" else "acc += h")
    elif pool.op.name == "max_pool2d":
        body("# the padding: -inf, never the max", f"acc = tl.maximum(acc, tl.where({inside}, h, {NEG_INF}))")
    else:
        body("# the padding: zeros", f"acc += tl.where({inside}, h, 0.0)")


def _finish(body: Code, pool: PlanStep) -> None:
    """``h`` = the pooled value from ``acc``: the max, or the sum over K^2 or over the window's positions inside
    the plane."""
    if pool.op.name == "max_pool2d":
        body("h = acc")
    elif pool.params["padding"] and not pool.params["count_include_pad"]:
        body("# count_include_pad=False: the window's positions inside the plane",
             "rows_inside = tl.minimum(top + KERNEL_SIZE, IN_H) - tl.maximum(top, 0)",
             "cols_inside = tl.minimum(left + KERNEL_SIZE, IN_W) - tl.maximum(left, 0)",
             "h = acc / (rows_inside * cols_inside).to(tl.float32)")
    else:
        body("h = acc / (KERNEL_SIZE * KERNEL_SIZE)")


def output_plane(window: str, dilated: bool = False) -> list[str]:
    """The wrapper's out_h and out_w: the windows of ``window`` taps (DILATION apart when ``dilated``) that fit an
    in_h x in_w plane padded by PADDING at STRIDE."""
    if dilated:
        return [f"out_{d} = (in_{d} + 2 * PADDING - DILATION * ({window} - 1) - 1) // STRIDE + 1" for d in "hw"]
    return [f"out_{d} = (in_{d} + 2 * PADDING - {window}) // STRIDE + 1" for d in "hw"]


def flat_outputs(body: Code) -> None:
    """A block of BLOCK_SIZE consecutive outputs of a windowed op, the output [B, C, P, Q] read flat: their offsets,
    mask, rows (plane P + p), planes and the windows' first rows and columns (the planes' sides OUT_H, OUT_W,
    STRIDE and PADDING constexprs, so the divisions are multiplies)."""
    body("out_offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)  # [BLOCK_SIZE]",
         "out_mask = out_offsets < n_outputs",
         "rows = out_offsets // OUT_W  # plane P + p",
         "plane = (rows // OUT_H).to(tl.int64)  # b C + c",
         "top = (rows % OUT_H) * STRIDE - PADDING  # [BLOCK_SIZE] the windows' first rows in their planes",
         "left = (out_offsets % OUT_W) * STRIDE - PADDING  # [BLOCK_SIZE] the windows' first columns")


@contextmanager
def window_taps(body: Code, size: str, padded: bool, dilation: str | None = None, value: str = "h"):
    """The loops over a ``size`` x ``size`` window's offsets (i, j) (``dilation`` apart where given) of the block's
    outputs (``flat_outputs``), each loading ``value`` from x in fp32, masked in the padding; what is emitted inside
    the ``with`` runs at each offset, given the mask the load used."""
    apart = f" * {dilation}" if dilation else ""
    with body.block(f"for i in tl.static_range({size}):"):
        body(f"in_row = top + i{apart}")
        if padded:
            body("row_inside = out_mask & (in_row >= 0) & (in_row < IN_H)")
        with body.block(f"for j in tl.static_range({size}):"):
            body(f"in_col = left + j{apart}")
            if padded:
                body("mask = row_inside & (in_col >= 0) & (in_col < IN_W)")
            mask = "mask" if padded else "out_mask"
            body("offsets = (plane * IN_H + in_row) * IN_W + in_col  # [BLOCK_SIZE]",
                 f"{value} = tl.load(x_ptr + offsets, mask={mask}, other=0.0).to(tl.float32)")
            yield mask


def _windows(body: Code, pool: PlanStep, before: list[PlanStep], dtype: str) -> None:
    """The block's outputs, the loop over the window's offsets (the ops before the pool at each), the pooled ``h``
    and where it is stored (``out_offsets`` under ``out_mask``). Unpadded, every window lies inside its plane: only
    the block's tail is masked."""
    largest = pool.op.name == "max_pool2d"
    padded = pool.params["padding"] > 0
    flat_outputs(body)
    body(pool.comment(f"the window's {'max' if largest else 'sum'}, one offset (i, j) at a time"),
         f"acc = tl.full((BLOCK_SIZE,), {NEG_INF if largest else '0.0'}, dtype=tl.float32)")
    with window_taps(body, "KERNEL_SIZE", padded) as mask:
        pointwise_steps(body, before, Layout({"full": "offsets"}, mask=mask), dtype)
        _fold(body, pool, mask if padded else None)
    _finish(body, pool)
