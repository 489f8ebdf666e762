"""The convolution plans: a convolution, its bias and the pointwise ops after it, in one kernel.

``conv`` (a causal depthwise conv1d): the output [B, M, N] is read as rows (one batch's channel: B * M of them) by N
positions, a [BLOCK_R, BLOCK_N] tile a program. Tap t of the T loads one masked tile of x shifted back T - 1 - t
positions (zeros before the sequence's start; a tile's first positions read the last ones of the tile before it, which
the cache holds) and adds it times each row's weight for that tap; then the bias, the ops after it in registers, one
cast on store.

``conv2d`` (and an inference batch norm after it): an implicit GEMM. Each group of a conv2d is a product [B P Q, J R R]
x [J R R, C / G]: its rows the output positions (b, p, q), its reduction a window's (j, r, s) in the weight's own order,
its columns the group's output channels. A program computes a [BLOCK_M, BLOCK_N] tile of one group's: each step gathers
a [BLOCK_M, BLOCK_K] tile of x (x_b,(g J + j),(p S - pad + r dil),(q S - pad + s dil), zeros in the padding) and loads
the weight's [BLOCK_K, BLOCK_N] tile, one tl.dot with fp32 accumulation; the bias and the ops after it in registers (a
batch norm's statistics loaded per output channel, a tile's columns), one cast on store to [B, C, P, Q]. A group of many
input channels is walked tap (r, s) by tap, BLOCK_K channels a step, the tap's offsets and padding mask computed once
for the tile's positions, and its weight laid out [R, R, J, C] by the wrapper (a tap's tile is then rows of
consecutive output channels); a group of few, a window's J R R values flattened, so that a 3 x 3 window of 4 channels
fills one step instead of nine mostly masked ones.

``depthwise`` (a conv2d of groups = channels, and an inference batch norm after it): the pooling plan's flat blocks of
BLOCK_SIZE consecutive outputs; each tap (i, j) loads one block of x (masked in the padding) and adds it times each
output's channel's weight.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, epilogue_steps, pointwise_steps
from fusionforge.codegen.plan import Plan, PlanStep, kernel_args, step_inputs, tap_loop
from fusionforge.codegen.pooling import PLANE, flat_outputs, output_plane, window_taps
from fusionforge.codegen.rows import row_kernel
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper
from fusionforge.tasks import InputSpec

SIZES = (("n_rows", "n_rows"), ("n_cols", "n_cols"), ("n_chan", "n_chan"))
SIZES_2D = ("n_out", "out_h", "out_w", "in_chan", "in_h", "in_w", "n_chan", "group_in", "group_out")
SIZES_TRANSPOSED = ("n_out", "out_h", "out_w", "sub_h", "sub_w", "in_chan", "in_h", "in_w", "n_chan")


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


def emit_2d(plan: Plan) -> Section:
    task = plan.task
    conv, after, inputs, result = _split(plan)
    dot = _dot(plan)
    body = Code()
    body("rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] output positions (b P + p) Q + q",
         "in_group = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] the group's output channels",
         "group = tl.program_id(2)",
         "chans = group * group_out + in_group  # [BLOCK_N] output channels",
         "row_mask = rows < n_out",
         "chan_mask = in_group < group_out",
         "batch = (rows // (out_h * out_w)).to(tl.int64)",
         "position = rows % (out_h * out_w)  # p Q + q",
         "top = position // out_w * STRIDE - PADDING  # [BLOCK_M] the windows' first rows",
         "left = position % out_w * STRIDE - PADDING  # [BLOCK_M] the windows' first columns",
         "x_rows = x_ptr + (batch * in_chan + group * group_in) * in_h * in_w  # [BLOCK_M] the group's first channel",
         "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    by_tap = tap_loop(task)
    if by_tap:
        _channel_blocks(body, conv, dot)
    else:
        _window_blocks(body, conv, dot)
    _epilogue(body, after, task.dtype, "position[:, None]")
    shapes = [shape_text(i) for i in inputs[:3]]
    if by_tap:
        shapes[1] = "weight [R, R, J, C] (the wrapper's copy)"
    kernel = _gemm_kernel(plan, [conv, *after], inputs, shapes, SIZES_2D, body,
                          "An implicit GEMM a group: a [BLOCK_M, BLOCK_N] tile of output positions by the group's "
                          "output channels a program, each step a gathered [BLOCK_M, BLOCK_K] tile of x's windows "
                          "times the weight's [BLOCK_K, BLOCK_N]")

    params = conv.params
    code = wrapper(plan)
    code(f"STRIDE, PADDING, DILATION, GROUPS = {params['stride']}, {params['padding']}, {params['dilation']}, "
         f"{params['groups']}",
         "batch, in_chan, in_h, in_w = x.shape",
         "n_chan, group_in, ksize = weight.shape[:3]",
         *(["weight = weight.permute(2, 3, 1, 0).contiguous()  # [R, R, J, C]: a tap's channels by output channels"]
           if by_tap else []),
         *output_plane("ksize", dilated=True),
         f"{result} = torch.empty((batch, n_chan, out_h, out_w), dtype=x.dtype, device=x.device)",
         "n_out, group_out = batch * out_h * out_w, n_chan // GROUPS",
         "grid = lambda meta: (triton.cdiv(n_out, meta[\"BLOCK_M\"]), triton.cdiv(group_out, meta[\"BLOCK_N\"]), "
         "GROUPS)")
    code.call("fused_kernel_triton[grid](", [
        *(i.name for i in inputs), result, *kernel.size_args(), "KSIZE=ksize", "STRIDE=STRIDE",
        "PADDING=PADDING", "DILATION=DILATION"])
    return _sections(plan, kernel, code)


def emit_transposed(plan: Plan) -> Section:
    task = plan.task
    conv, after, inputs, result = _split(plan)
    body = Code()
    body("rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] a phase's positions (b P' + i) Q' + j",
         "chans = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output channels",
         "phase = tl.program_id(2)  # the outputs (i S + phase_h, j S + phase_w)",
         "phase_h, phase_w = phase // STRIDE, phase % STRIDE",
         "batch = (rows // (sub_h * sub_w)).to(tl.int64)",
         "sub_row = rows % (sub_h * sub_w) // sub_w  # [BLOCK_M] i",
         "sub_col = rows % sub_w  # [BLOCK_M] j",
         "out_row, out_col = sub_row * STRIDE + phase_h, sub_col * STRIDE + phase_w  # [BLOCK_M] p, q",
         "row_mask = (rows < n_out) & (out_row < out_h) & (out_col < out_w)",
         "chan_mask = chans < n_chan",
         "x_rows = x_ptr + batch * in_chan * in_h * in_w  # [BLOCK_M] each position's sample",
         "channels = tl.arange(0, BLOCK_K)  # [BLOCK_K]",
         "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
         conv.comment("p takes x at (p + pad - r dil) / S where S divides it: a tap serves all of a phase or none"))
    with body.block("for r in tl.static_range(KSIZE):"):
        body("shift_h = phase_h + PADDING - r * DILATION  # p + pad - r dil = i S + shift_h")
        with body.block("for s in tl.static_range(KSIZE):"):
            body("shift_w = phase_w + PADDING - s * DILATION")
            with body.block("if (shift_h % STRIDE == 0) & (shift_w % STRIDE == 0):"):
                body("in_row = sub_row + shift_h // STRIDE  # [BLOCK_M]",
                     "in_col = sub_col + shift_w // STRIDE",
                     "inside = row_mask & (in_row >= 0) & (in_row < in_h) & (in_col >= 0) & (in_col < in_w)",
                     "x_tap = x_rows + in_row * in_w + in_col  # [BLOCK_M] the tap's value in the first channel",
                     "w_tap = weight_ptr + (r * KSIZE + s) * in_chan * n_chan + chans  # [BLOCK_N] the tap's row k = 0")
                with body.block("for start in range(0, in_chan, BLOCK_K):"):
                    body("k = start + channels",
                         "k_mask = k < in_chan",
                         "a = tl.load(x_tap[:, None] + k[None, :] * (in_h * in_w), mask=inside[:, None] & "
                         "k_mask[None, :], other=0.0)",
                         "w = tl.load(w_tap[None, :] + k[:, None] * n_chan, mask=k_mask[:, None] & chan_mask[None, :], "
                         "other=0.0)",
                         _dot(plan))
    _epilogue(body, after, task.dtype, "(out_row * out_w + out_col)[:, None]")
    shapes = [shape_text(inputs[0]), "weight [R, R, K, C] (the wrapper's copy)", shape_text(inputs[2])]
    kernel = _gemm_kernel(plan, [conv, *after], inputs, shapes, SIZES_TRANSPOSED, body,
                          "An implicit GEMM a phase (p mod S, q mod S) of the output: a [BLOCK_M, BLOCK_N] tile of a "
                          "phase's positions by output channels a program; each tap that serves the phase gathers "
                          "[BLOCK_M, BLOCK_K] tiles of x times the weight's [BLOCK_K, BLOCK_N]")

    params = conv.params
    code = wrapper(plan)
    code(f"STRIDE, PADDING, DILATION = {params['stride']}, {params['padding']}, {params['dilation']}",
         "batch, in_chan, in_h, in_w = x.shape",
         "n_chan, ksize = weight.shape[1], weight.shape[-1]",
         "weight = weight.permute(2, 3, 0, 1).contiguous()  # [R, R, K, C]: a tap's input channels by output channels",
         *[f"out_{d} = (in_{d} - 1) * STRIDE - 2 * PADDING + DILATION * (ksize - 1) + 1" for d in "hw"],
         f"{result} = torch.empty((batch, n_chan, out_h, out_w), dtype=x.dtype, device=x.device)",
         "sub_h, sub_w = triton.cdiv(out_h, STRIDE), triton.cdiv(out_w, STRIDE)  # a phase's rows and columns, at most",
         "n_out = batch * sub_h * sub_w",
         "grid = lambda meta: (triton.cdiv(n_out, meta[\"BLOCK_M\"]), triton.cdiv(n_chan, meta[\"BLOCK_N\"]), "
         "STRIDE * STRIDE)")
    code.call("fused_kernel_triton[grid](", [
        *(i.name for i in inputs), result, *kernel.size_args(), "KSIZE=ksize", "STRIDE=STRIDE",
        "PADDING=PADDING", "DILATION=DILATION"])
    return _sections(plan, kernel, code)


def _gemm_kernel(plan: Plan, fused: list[PlanStep], inputs: list[InputSpec], shapes: list[str], sizes: tuple,
                 body: Code, how: str) -> Kernel:
    """A 2D convolution's autotuned kernel: ``fused`` its steps, ``shapes`` its inputs in words, ``how`` (a sentence
    without its end) the way it walks the product."""
    return Kernel(
        "fused_kernel_triton", [*kernel_args(inputs), "out_ptr"], [(name, name) for name in sizes],
        ["KSIZE", "STRIDE", "PADDING", "DILATION", "BLOCK_M", "BLOCK_N", "BLOCK_K"],
        [f"{chain_text(fused)}: {', '.join(shapes)} -> [B, C, P, Q].",
         f"{how} (tl.dot, products in {_products(plan)}, fp32 accumulation); the ops after it in registers, one cast "
         "on store."],
        body, tuning.conv2d_configs("float32" if plan.dtype == "float32" else "16bit"))


def _dot(plan: Plan) -> str:
    """The step's tl.dot: float32 in the plan's variant (tf32x3 or ieee), 16-bit inputs as they are."""
    return "acc = tl.dot(a, w, acc)" if plan.dtype != "float32" else \
        f'acc = tl.dot(a, w, acc, input_precision="{plan.variant}")'


def _products(plan: Plan) -> str:
    return "three TF32 passes" if plan.variant == "tf32x3" else "IEEE fp32" if plan.dtype == "float32" else \
        "the inputs' dtype"


def _split(plan: Plan) -> tuple[PlanStep, list[PlanStep], list[InputSpec], str]:
    """A 2D convolution's steps: the convolution, the ops its kernel fuses, that kernel's inputs, and the tensor it
    writes: the output, or the input of a second kernel (a norm or a spatial reduction: ``plan.rows``)."""
    second = plan.rows.step if plan.rows else None
    after = [s for s in plan.steps[1:] if second is None or s.index < second.index]
    return plan.steps[0], after, [plan.task.inputs[0], *plan.steps[0].inputs, *step_inputs(after)], \
        "h" if second else "out"


def _epilogue(body: Code, after: list[PlanStep], dtype: str, position: str) -> None:
    """The bias, the ops after the convolution and the store of a [BLOCK_M, BLOCK_N] tile at ``position`` ([BLOCK_M,
    1]: p Q + q) of each of its rows' planes."""
    body("bias = tl.load(bias_ptr + chans, mask=chan_mask, other=0.0).to(tl.float32)  # [BLOCK_N]",
         "h = acc + bias[None, :]",
         "mask = row_mask[:, None] & chan_mask[None, :]",
         f"offsets = (batch[:, None] * n_chan + chans[None, :]) * (out_h * out_w) + {position}  "
         "# [B, C, P, Q]")
    epilogue_steps(body, after, Layout({"full": "offsets"}, vectors={"chan": ("chans", "chan_mask", "[None, :]")}),
                   dtype)
    body("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")


def _sections(plan: Plan, kernel: Kernel, code: Code) -> Section:
    """The file's kernels and wrapper: the convolution's kernel alone, or with the second kernel it feeds."""
    if plan.rows is None:
        code("return out")
        return Section([kernel], [], code)
    second = plan.rows.step
    norm = plan.rows.rank == 3  # a norm reads the planes as [B, C, P Q]; a spatial reduction, as they are
    planes = InputSpec("h", "activation", ["B", "C", "P Q"] if norm else ["B", "C", "P", "Q"], plan.dtype, {})
    rest = [s for s in plan.steps if s.index >= second.index]
    row, launch, host = row_kernel(plan, plan.rows, rest, f"{second.op.name}_kernel", "h",
                                   [planes, *step_inputs(rest)])
    if norm:
        code(f"h = h.view(batch, n_chan, out_h * out_w)  # the {second.op.name}'s rows read [B, C, P Q]")
    code.extend(launch)
    code("return out.view(batch, n_chan, out_h, out_w)" if norm else "return out")
    return Section([kernel, row], host, code)


def _window_blocks(body: Code, conv, dot: str) -> None:
    """The reduction over a window's values flattened, BLOCK_K at a time: each value's (j, r, s) from its index."""
    body("n_red = group_in * KSIZE * KSIZE  # a window's values: J R R",
         "w_cols = weight_ptr + chans.to(tl.int64) * n_red  # [BLOCK_N] each output channel's window",
         conv.comment("a window's values (j, r, s) BLOCK_K at a time"))
    with body.block("for start in range(0, n_red, BLOCK_K):"):
        body("ks = start + tl.arange(0, BLOCK_K)  # [BLOCK_K] j R R + r R + s, the weight's order",
             "k_mask = ks < n_red",
             "j = ks // (KSIZE * KSIZE)",
             "r = ks // KSIZE % KSIZE",
             "s = ks % KSIZE",
             "in_row = top[:, None] + (r * DILATION)[None, :]  # [BLOCK_M, BLOCK_K]",
             "in_col = left[:, None] + (s * DILATION)[None, :]",
             "inside = (in_row >= 0) & (in_row < in_h) & (in_col >= 0) & (in_col < in_w)",
             "mask = row_mask[:, None] & k_mask[None, :] & inside  # the padding reads as zeros",
             "a = tl.load(x_rows[:, None] + (j[None, :] * in_h + in_row) * in_w + in_col, mask=mask, other=0.0)",
             "w = tl.load(w_cols[None, :] + ks[:, None], mask=k_mask[:, None] & chan_mask[None, :], other=0.0)",
             dot)


def _channel_blocks(body: Code, conv, dot: str) -> None:
    """The reduction over (tap, block of BLOCK_K input channels) steps in one loop, so that the loads are pipelined
    across taps (a loop a tap would drain the pipeline every J / BLOCK_K steps). The weight comes as [R, R, J, C],
    so a step's [BLOCK_K, BLOCK_N] tile is BLOCK_K rows of BLOCK_N consecutive output channels (in [C, J, R, R] each
    value would be R R apart). x's tile is a gather of single values, which Triton's pipeliner leaves synchronous:
    each step loads the next step's tile into registers before its product, so the gather overlaps the tensor cores'
    work (docs/tuning.md#conv2d-tiles)."""

    def x_tile(name: str, in_row: str, in_col: str, j: str) -> list[str]:
        return ["# the padding reads as zeros",
                f"inside = row_mask & ({in_row} >= 0) & ({in_row} < in_h) & ({in_col} >= 0) & ({in_col} < in_w)",
                f"x_offsets = ({in_row} * in_w + {in_col})[:, None] + {j}[None, :] * (in_h * in_w)  "
                "# [BLOCK_M, BLOCK_K]",
                f"{name} = tl.load(x_rows[:, None] + x_offsets, mask=inside[:, None] & ({j} < group_in)[None, :], "
                "other=0.0)"]

    body(conv.comment("(tap, BLOCK_K input channels) a step"),
         "channels = tl.arange(0, BLOCK_K)  # [BLOCK_K]",
         "blocks = tl.cdiv(group_in, BLOCK_K)  # channel blocks a tap",
         "steps = KSIZE * KSIZE * blocks",
         "# step 0: tap (0, 0), the first BLOCK_K channels",
         *x_tile("a", "top", "left", "channels"))
    with body.block("for step in range(0, steps):"):
        body("tap = step // blocks  # r R + s",
             "j = (step % blocks) * BLOCK_K + channels  # [BLOCK_K] the group's input channels",
             "w_mask = (j < group_in)[:, None] & chan_mask[None, :]  # [BLOCK_K, BLOCK_N]",
             "w = tl.load(weight_ptr + (tap * group_in + j)[:, None] * n_chan + chans[None, :], mask=w_mask, "
             "other=0.0)",
             "# the next step's tile of x, gathered while this step's product runs (the last step's is its own)",
             "after = tl.minimum(step + 1, steps - 1)",
             "after_tap = after // blocks",
             "after_j = (after % blocks) * BLOCK_K + channels",
             "in_row = top + after_tap // KSIZE * DILATION  # [BLOCK_M]",
             "in_col = left + after_tap % KSIZE * DILATION",
             *x_tile("a_next", "in_row", "in_col", "after_j"),
             dot,
             "a = a_next")


def emit_depthwise(plan: Plan) -> Section:
    task = plan.task
    conv, after = plan.steps[0], list(plan.steps[1:])
    padded = conv.params["padding"] > 0
    body = Code()
    flat_outputs(body)
    body("channel = rows // OUT_H % N_CHAN  # [BLOCK_SIZE] each output's channel",
         "window = weight_ptr + channel * (KSIZE * KSIZE)  # [BLOCK_SIZE] each output's channel's R x R taps",
         conv.comment("tap (i, j) by tap"),
         "acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)")
    with window_taps(body, "KSIZE", padded, dilation="DILATION", value="x"):
        body("tap = tl.load(window + i * KSIZE + j, mask=out_mask, other=0.0).to(tl.float32)",
             "acc += x * tap")
    body("bias = tl.load(bias_ptr + channel, mask=out_mask, other=0.0).to(tl.float32)",
         "h = acc + bias")
    epilogue_steps(body, after, Layout({"full": "out_offsets"}, mask="out_mask",
                                       vectors={"chan": ("channel", "out_mask", "")}), task.dtype)
    body("tl.store(out_ptr + out_offsets, h.to(out_ptr.dtype.element_ty), mask=out_mask)")
    kernel = Kernel(
        "fused_kernel_triton", [*kernel_args(task.inputs), "out_ptr"], [("n_outputs", "out.numel()")],
        [*PLANE, "N_CHAN", "KSIZE", "STRIDE", "PADDING", "DILATION", "BLOCK_SIZE"],
        [f"{chain_text(plan.steps)}: {', '.join(shape_text(i) for i in task.inputs[:3])} -> "
         f"[{', '.join(map(str, task.output_shape))}].",
         "BLOCK_SIZE consecutive outputs a program, the output read as one flat run; each tap of the window loads "
         "one masked block of x and adds it times each output's channel's weight; fp32 math, one cast on store."],
        body)

    params = conv.params
    code = wrapper(plan)
    code(f"STRIDE, PADDING, DILATION = {params['stride']}, {params['padding']}, {params['dilation']}",
         "n_chan, in_h, in_w = x.shape[1:]",
         "ksize = weight.shape[-1]",
         *output_plane("ksize", dilated=True),
         "out = torch.empty((x.shape[0], n_chan, out_h, out_w), dtype=x.dtype, device=x.device)",
         f"BLOCK_SIZE = {tuning.DEPTHWISE_BLOCK}  # on {tuning.DEPTHWISE_WARPS} warps "
         f"({tuning.see('depthwise-tiles')})",
         "grid = (triton.cdiv(out.numel(), BLOCK_SIZE),)")
    code.call("fused_kernel_triton[grid](", [
        *(i.name for i in task.inputs), "out", *kernel.size_args(), "IN_H=in_h", "IN_W=in_w", "OUT_H=out_h",
        "OUT_W=out_w", "N_CHAN=n_chan", "KSIZE=ksize", "STRIDE=STRIDE", "PADDING=PADDING", "DILATION=DILATION",
        "BLOCK_SIZE=BLOCK_SIZE", f"num_warps={tuning.DEPTHWISE_WARPS}"])
    code("return out")
    return Section([kernel], [], code)
