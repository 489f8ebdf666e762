"""The attention plan: scaled dot-product attention, then pointwise ops, in one flash-attention kernel.

A program holds BLOCK_M queries of one (batch, head) and walks the keys BLOCK_N at a time: s = q k^T scale in fp32
(tl.dot), the running row max and row sum of the online softmax, and acc = sum p v rescaled as the max grows (exp2
with log2(e) folded into the scale, one multiply-add a score). Causal attention stops at the block holding the
program's last query; masks apply only to the blocks that need them, the diagonal's (keys past a query) and the last
(keys past S). Head dims are powers of two (a tile's width, no masks across it). The output rows are acc / row_sum,
the pointwise ops applied in registers, one cast on store: the [S, S] scores never reach memory. 16-bit tasks take p
in the inputs' dtype into the second product, as flash attention does; float32 tasks take three TF32 passes a
product (fp32-accurate on the tensor cores), IEEE fp32 products on the retry. With rotary embeddings (x cos +
rotate_half(x) sin in fp32, cast back to the inputs' dtype for tl.dot), a first kernel rotates the keys once, where
each of a head's S / BLOCK_M programs would rotate every key again; q is rotated as it loads, rotate_half's other
half read from the same rows.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.layout import Layout, pointwise_steps
from fusionforge.codegen.plan import Plan, kernel_args
from fusionforge.codegen.source import Code, Kernel
from fusionforge.codegen.tuning import see
from fusionforge.codegen.wrapper import Section, chain_text, shape_text, wrapper

LOG2_E = 1.4426950408889634


def emit(plan: Plan) -> Section:
    task = plan.task
    attention, after = plan.steps[0], list(plan.steps[1:])
    precision = f', input_precision="{plan.variant}"' if task.dtype == "float32" else ""
    rotary = attention.op.name == "rotary_attention"
    body = Code()
    body("head = tl.program_id(1).to(tl.int64)  # batch * NH + head",
         "rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] the program's queries",
         "dims = tl.arange(0, HEAD_DIM)  # [HEAD_DIM]",
         "mask = (rows < seq_len)[:, None]",
         "offsets = (head * seq_len + rows[:, None]) * HEAD_DIM + dims[None, :]  # [BLOCK_M, HEAD_DIM]",
         "q = tl.load(q_ptr + offsets, mask=mask, other=0.0)")
    if rotary:
        lines, rotated = _rotary("q", "rows")
        body("# rotary embeddings: x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1] of x's halves", *lines,
             f"q = ({rotated}).to(q_ptr.dtype.element_ty)")
    body(attention.comment("an online softmax over blocks of keys"),
         f"qk_scale = scale * {LOG2_E}  # exp2 below: log2(e) folded in",
         "row_max = tl.full((BLOCK_M,), float('-inf'), dtype=tl.float32)",
         "row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # of exp2(s qk_scale - row_max)",
         "acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)  # sum of p v",
         "# causal: no key past the block's last query",
         "end = tl.minimum(seq_len, (tl.program_id(0) + 1) * BLOCK_M) if CAUSAL else seq_len",
         "# masks only from the first block holding a key past seq_len or (causal) past the block's first query",
         "mask_from = tl.minimum(seq_len, tl.program_id(0) * BLOCK_M + 1) if CAUSAL else seq_len",
         "key_offsets = (head * seq_len + tl.arange(0, BLOCK_N)[:, None]) * HEAD_DIM + dims[None, :]",
         "k_ptrs, v_ptrs = k_ptr + key_offsets, v_ptr + key_offsets  # [BLOCK_N, HEAD_DIM], moved a block a step")
    with body.block("for start in range(0, end, BLOCK_N):"):
        body("keys = start + tl.arange(0, BLOCK_N)  # [BLOCK_N]",
             "key_inside = keys < seq_len",
             "k = tl.load(k_ptrs, mask=key_inside[:, None], other=0.0)",
             f"s = tl.dot(q, tl.trans(k){precision})  # [BLOCK_M, BLOCK_N]")
        with body.block("if start + BLOCK_N > mask_from:"):
            body("seen = key_inside[None, :]")
            with body.block("if CAUSAL:"):
                body("seen = seen & (keys[None, :] <= rows[:, None])")
            body("s = tl.where(seen, s, float('-inf'))")
        body("new_max = tl.maximum(row_max, tl.max(s, axis=1) * qk_scale)  # log2 units",
             "rescale = tl.exp2(row_max - new_max)  # 0 on the first block",
             "p = tl.exp2(s * qk_scale - new_max[:, None])  # one multiply-add a score",
             "row_sum = row_sum * rescale + tl.sum(p, axis=1)",
             "v = tl.load(v_ptrs, mask=key_inside[:, None], other=0.0)",
             f"acc = tl.dot(p.to(v.dtype), v, acc * rescale[:, None]{precision})  # rescaled, then accumulated",
             "row_max = new_max",
             "k_ptrs += BLOCK_N * HEAD_DIM",
             "v_ptrs += BLOCK_N * HEAD_DIM")
    body("h = acc / row_sum[:, None]")
    pointwise_steps(body, after, Layout({"full": "offsets"}), task.dtype)
    body("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")
    shapes = [shape_text(i) for i in task.inputs[:3]]
    if rotary:
        shapes[1] += " (rotated by rotary_kernel)"
    kernel = Kernel(
        "fused_kernel_triton", [*kernel_args(task.inputs), "out_ptr"], [("seq_len", "seq_len"), ("scale", "scale")],
        ["HEAD_DIM", "CAUSAL", "BLOCK_M", "BLOCK_N"],
        [f"{chain_text(plan.steps)}: {', '.join(shapes)} -> [{', '.join(map(str, task.output_shape))}].",
         "BLOCK_M queries of one (batch, head) a program, the keys walked BLOCK_N at a time with an online softmax "
         "(flash attention); fp32 scores and accumulation, the ops after it in registers, one cast on store."],
        body, tuning.attention_configs("float32" if task.dtype == "float32" else "16bit"))

    params = attention.params
    scale = "head_dim ** -0.5  # 1 / sqrt(D)" if params["scale"] is None else repr(params["scale"])
    code = wrapper(plan)
    code("out = torch.empty_like(q)",
         "seq_len, head_dim = q.shape[-2:]",
         f"scale = {scale}")
    with code.block("if head_dim < 16 or head_dim & (head_dim - 1):"):
        code('raise ValueError(f"head dim {head_dim}: the kernel takes powers of two from 16")')
    kernels = [kernel]
    if rotary:
        kernels.insert(0, _rotary_kernel())
        code("k_rotated = torch.empty_like(k)",
             "n_rows = k.numel() // head_dim",
             f"BLOCK_R = {tuning.ROTARY_TILE} // head_dim  # [BLOCK_R, HEAD_DIM] tiles on "
             f"{tuning.ROTARY_WARPS} warps ({see('rotary-tiles')})")
        code.call("rotary_kernel[(triton.cdiv(n_rows, BLOCK_R),)](", [
            "k", "cos", "sin", "k_rotated", "n_rows", "seq_len", "HEAD_DIM=head_dim", "BLOCK_R=BLOCK_R",
            f"num_warps={tuning.ROTARY_WARPS}"])
    code("grid = lambda meta: (triton.cdiv(seq_len, meta[\"BLOCK_M\"]), q.numel() // (seq_len * head_dim))")
    code.call("fused_kernel_triton[grid](", [
        *("k_rotated" if rotary and i.name == "k" else i.name for i in task.inputs), "out", *kernel.size_args(),
        "HEAD_DIM=head_dim", f"CAUSAL={params['causal']}"])
    code("return out")
    return Section(kernels, [], code)


def _rotary(tensor: str, positions: str) -> tuple[list[str], str]:
    """The lines that ready rotary embeddings for a [rows, HEAD_DIM] tile of ``tensor`` (loaded as ``tensor``, at
    ``offsets`` under ``mask``; ``positions`` its rows' places in the sequence): the dim rotate_half reads and its
    sign, the cos and sin of each value, the partner values; and the fp32 expression x cos + rotate_half(x) sin."""
    half = f"tl.load({tensor}_ptr + offsets + partner[None, :], mask=mask, other=0.0).to(tl.float32)"
    return ["partner = (dims + HEAD_DIM // 2) % HEAD_DIM - dims  # [HEAD_DIM] the offset of the dim rotate_half reads",
            "sign = tl.where(dims < HEAD_DIM // 2, -1.0, 1.0)[None, :]",
            f"table = {positions}[:, None] * HEAD_DIM + dims[None, :]  # into cos and sin [S, D]",
            "cos = tl.load(cos_ptr + table, mask=mask, other=0.0).to(tl.float32)",
            "sin = tl.load(sin_ptr + table, mask=mask, other=0.0).to(tl.float32)",
            f"{tensor}_half = {half}"], \
        f"{tensor}.to(tl.float32) * cos + sign * {tensor}_half * sin"


def _rotary_kernel() -> Kernel:
    """The keys' rotary embeddings, once: [BLOCK_R, HEAD_DIM] tiles of k's rows."""
    body = Code()
    body("rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] rows (b NH + n) S + s",
         "dims = tl.arange(0, HEAD_DIM)  # [HEAD_DIM]",
         "mask = (rows < n_rows)[:, None]",
         "offsets = rows[:, None].to(tl.int64) * HEAD_DIM + dims[None, :]  # [BLOCK_R, HEAD_DIM]",
         "x = tl.load(x_ptr + offsets, mask=mask, other=0.0)")
    lines, rotated = _rotary("x", "(rows % seq_len)")
    body(*lines, f"tl.store(out_ptr + offsets, ({rotated}).to(out_ptr.dtype.element_ty), mask=mask)")
    return Kernel("rotary_kernel", ["x_ptr", "cos_ptr", "sin_ptr", "out_ptr", "n_rows", "seq_len"], [],
                  ["HEAD_DIM", "BLOCK_R"],
                  ["Rotary embeddings of the keys: x [B, NH, S, D], cos [S, D], sin [S, D] -> [B, NH, S, D], x cos + "
                   "rotate_half(x) sin with rotate_half(x) = [-x2, x1] of x's halves.",
                   "A [BLOCK_R, HEAD_DIM] tile of rows a program; fp32 math, one cast on store."], body)
