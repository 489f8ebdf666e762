"""The matmul plan: x @ w (linear, matmul, batched matmul) with its epilogue fused, fp32 accumulation.

``tiled``: a [BLOCK_M, BLOCK_N] tile of the product per program (and batch), tiles in grouped order (GROUP_M
row-tiles share each column of w while it is in L2), autotuned over Hopper tiles; float32 takes ``tf32x3``
dots (three TF32 tensor-core passes, fp32-accurate) first, IEEE dots on the retry. ``persistent`` (16-bit):
one program per SM strides over every batch's output tiles, TMA descriptor loads, the tile loop marked for
warp specialization. The epilogue holds the pointwise steps and inference batch norm (per channel). A
reduction after it never stores the [M, N] product: each tile stores its rows' partial states and a combine
kernel merges them; a normalization after it runs as the row plan's kernel over the product.
"""

from __future__ import annotations

from fusionforge.codegen import tuning
from fusionforge.codegen.combine import combine_kernel, partial_names
from fusionforge.codegen.layout import Layout, epilogue_steps, per_row
from fusionforge.codegen.plan import Plan, PlanStep, kernel_args, step_inputs
from fusionforge.codegen.reductions import REDUCTIONS, Phrases
from fusionforge.codegen.rows import row_kernel
from fusionforge.codegen.source import Code, Kernel, wrap
from fusionforge.codegen.wrapper import Section, chain_text, wrapper
from fusionforge.tasks import InputSpec

TMA_OPERAND = '''def _tma_operand(t):
    """t if TMA can address it (unit last stride, 16-byte aligned base and rows), else such a copy."""
    if t.stride(-1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0:
        return t
    align = 16 // t.element_size()
    padded = torch.empty((t.shape[0], triton.cdiv(t.shape[1], align) * align), dtype=t.dtype, device=t.device)
    return padded[:, :t.shape[1]].copy_(t)'''


def grouped_order(code: Code, tile: str) -> None:
    """(pid_m, pid_n) of output tile number ``tile`` in grouped order: GROUP_M row-tiles walk each column."""
    code("# grouped order: GROUP_M row-tiles share each column of w while it is in L2",
         f"first_m = ({tile} // (GROUP_M * tiles_n)) * GROUP_M",
         "group_m = tl.minimum(tiles_m - first_m, GROUP_M)",
         f"pid_m = first_m + ({tile} % (GROUP_M * tiles_n)) % group_m",
         f"pid_n = ({tile} % (GROUP_M * tiles_n)) // group_m")


def emit(plan: Plan) -> Section:
    root, steps = plan.steps[0], list(plan.steps)
    tail = next((s for s in steps[1:] if not s.pointwise and s.op.name != "batch_norm"), None)
    epilogue = [s for s in steps[1:] if tail is None or s.index < tail.index]
    rest = [s for s in steps if tail is not None and s.index >= tail.index]
    batched, linear, persistent = root.op.name == "bmm", root.op.name.startswith("linear"), plan.variant == "persistent"
    partials = tail is not None and tail.reduces
    epilogue_inputs = step_inputs(epilogue)
    args = ["x_ptr", "w_ptr", *(["bias_ptr"] if root.op.name == "linear_bias" else []), *kernel_args(epilogue_inputs)]
    rn, rm = ("rn", "rn < N", "[None, :]"), (("batch * M + " if batched else "") + "rm", "rm < M", "[:, None]")
    layout = Layout({"full": ("batch * M * N + " if batched else "") + "rm[:, None] * N + rn[None, :]"},
                    vectors={"col": rn, "row": rm, "chan": ("rm", "rm < M", "[:, None]") if batched else rn})

    out = Code()
    out(root.comment(), "h = acc  # [BLOCK_M, BLOCK_N]")
    if root.op.name == "linear_bias":
        out(layout.load("bias", "col"), "h = h + bias")
    epilogue_steps(out, epilogue, layout, plan.dtype)
    if partials:
        phrases = Phrases(REDUCTIONS[tail.op.name], "part_", tail.params, axis=1, bcast="[:, None]")
        outputs, results = [f"{part}_ptr" for part, _ in phrases.parts] + ["n_parts"], [p for p, _ in phrases.parts]
        out(tail.comment("this tile's partial state of each of its rows"), *phrases(phrases.reduction.block),
            *(f"tl.store({part}_ptr + {'(batch * M + rm)' if batched else 'rm'} * n_parts + pid_n, {part}, "
              "mask=rm < M)" for part in results))
        results.append("n_parts")
    else:
        outputs, results = ["out_ptr"], ["h" if tail else "out"]
        out(f"tl.store(out_ptr + {layout.index['full']}, h.to(out_ptr.dtype.element_ty), mask=mask)")
    ending = "the rows' partial states stored in fp32, never the product" if partials else "one cast on store"
    fused = chain_text([root, *epilogue])

    code = wrapper(plan)
    if persistent:
        kernel = _persistent(plan, args + outputs, out, fused, ending)
        if batched:
            code("B, M, K = x.shape", "N = w.shape[2]",
                 "# every batch's rows as one 2-D operand for the TMA helper (a padded copy keeps the 3-D view)",
                 "x = _tma_operand(x.reshape(B * M, K)).view(B, M, K)",
                 "w = _tma_operand(w.reshape(B * K, N)).view(B, K, N)")
        else:
            code("x, w = _tma_operand(x), _tma_operand(w)", "M, K = x.shape", f"N = w.shape[{0 if linear else 1}]")
    else:
        kernel = _tiled(plan, args + outputs, out, fused, ending)
        code("M, K = x.shape[-2], x.shape[-1]", f"N = w.shape[{0 if linear else -1}]")
    _outputs(code, results, batched)
    launch = ["x", "w", *(["bias"] if root.op.name == "linear_bias" else []), *(i.name for i in epilogue_inputs),
              *results]
    if persistent:
        code("# a program per SM; a CPU (Triton's interpreter) has none: two programs, each walking several tiles",
             "num_sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2",
             f"grid = lambda meta: (min(num_sms, {'B * ' if batched else ''}triton.cdiv(M, meta[\"BLOCK_M\"]) * "
             "triton.cdiv(N, meta[\"BLOCK_N\"])), )",
             "# device-side TMA descriptors live in a little global scratch memory Triton asks this allocator for",
             "triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, "
             "device=x.device))")
        launch += [*(["B"] if batched else []), "M", "N", "K",
                   *(["x.stride(0)", "x.stride(1)", "w.stride(0)", "w.stride(1)"] if batched else
                     ["x.stride(0)", "w.stride(0)"]), "NUM_SMS=num_sms"]
    else:
        code("grid = lambda meta: (triton.cdiv(M, meta[\"BLOCK_M\"]) * triton.cdiv(N, meta[\"BLOCK_N\"]), "
             + ("x.shape[0])" if batched else ")"))
        w_strides = {"bmm": ["w.stride(0)", "w.stride(1)", "w.stride(2)"], "matmul": ["w.stride(0)", "w.stride(1)"]}
        launch += ["M", "N", "K", *(["x.stride(0)", "x.stride(1)", "x.stride(2)"] if batched else
                                    ["x.stride(0)", "x.stride(1)"]),
                   *w_strides.get(root.op.name, ["w.stride(1)", "w.stride(0)"])]
    code.call("fused_kernel_triton[grid](", launch)
    kernels, host = [kernel], [TMA_OPERAND] if persistent else []
    if rest:
        kernel, helpers = _after(plan, tail, rest, code)
        kernels.append(kernel)
        host += helpers
    code("return out")
    return Section(kernels, host, code)


def _outputs(code: Code, results: list[str], batched: bool) -> None:
    """Wrapper lines allocating what the matmul kernel writes: its [.., M, N] output, or the partials."""
    if results[-1] != "n_parts":
        code(f"{results[0]} = torch.empty({'(x.shape[0], M, N)' if batched else '(M, N)'}, dtype=x.dtype, "
             "device=x.device)")
        return
    code("# one partial per row and tile of N: room for the smallest BLOCK_N among the configs",
         "n_parts = triton.cdiv(N, min(config.kwargs[\"BLOCK_N\"] for config in fused_kernel_triton.configs))",
         *(f"{part} = torch.empty(({'x.shape[0] * M' if batched else 'M'}, n_parts), dtype=torch.float32, "
           "device=x.device)" for part in results[:-1]))


def _tiled(plan: Plan, params: list[str], epilogue: Code, fused: str, ending: str) -> Kernel:
    batched = plan.steps[0].op.name == "bmm"
    dot = ("acc = tl.dot(a, b, acc)" if plan.dtype != "float32" else
           f"acc = tl.dot(a, b, acc, input_precision=\"{'tf32x3' if plan.variant == 'tf32x3' else 'ieee'}\")")
    batch_x, batch_w = ("batch * stride_xb + ", "batch * stride_wb + ") if batched else ("", "")
    body = Code()
    body("pid = tl.program_id(0)", *(["batch = tl.program_id(1)"] if batched else []),
         "tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)")
    grouped_order(body, "pid")
    body("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]",
         "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]",
         "rk = tl.arange(0, BLOCK_K)  # [BLOCK_K]",
         f"x_ptrs = x_ptr + {batch_x}rm[:, None] * stride_xm + rk[None, :] * stride_xk",
         f"w_ptrs = w_ptr + {batch_w}rk[:, None] * stride_wk + rn[None, :] * stride_wn",
         "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    with body.block("for k in range(0, K, BLOCK_K):"):
        body("a = tl.load(x_ptrs, mask=(rm[:, None] < M) & (rk[None, :] + k < K), other=0.0)  # [BLOCK_M, BLOCK_K]",
             "b = tl.load(w_ptrs, mask=(rk[:, None] + k < K) & (rn[None, :] < N), other=0.0)  # [BLOCK_K, BLOCK_N]",
             dot, "x_ptrs += BLOCK_K * stride_xk", "w_ptrs += BLOCK_K * stride_wk")
    body("mask = (rm[:, None] < M) & (rn[None, :] < N)")
    body.extend(epilogue)
    strides = (["stride_xb", "stride_xm", "stride_xk", "stride_wb", "stride_wk", "stride_wn"] if batched else
               ["stride_xm", "stride_xk", "stride_wk", "stride_wn"])
    doc = [f"{fused}: a [M, N] tile of x @ w per program{' and batch' if batched else ''}, the epilogue fused.",
           f"fp32 accumulation in tl.dot; {ending}."]
    which = "float32" if plan.dtype == "float32" else "16bit"
    return Kernel("fused_kernel_triton", [*params, "M", "N", "K", *strides], [],
                  ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"], doc, body,
                  [*tuning.matmul_configs(which), "", "", *tuning.MATMUL_AUTOTUNE])


def _persistent(plan: Plan, params: list[str], epilogue: Code, fused: str, ending: str) -> Kernel:
    """NUM_SMS programs stride over the output tiles (of every batch); TMA loads, the epilogue fused."""
    root = plan.steps[0].op.name
    linear, batched = root.startswith("linear"), root == "bmm"
    body = Code()
    if batched:  # 3-D descriptors: each batch's edges are zero-filled on their own
        for name, rows, cols, stride in (("x", "M", "K", "stride_xm"), ("w", "K", "N", "stride_wk")):
            body(*wrap(f"{name}_desc = tl.make_tensor_descriptor(",
                       [f"{name}_ptr", f"shape=[B, {rows}, {cols}]", f"strides=[stride_{name}b, {stride}, 1]",
                        f"block_shape=[1, BLOCK_{rows}, BLOCK_{cols}]"], ")", width=116))
        loads = ["# zero-filled past each batch's edges",
                 "a = x_desc.load([batch, pid_m * BLOCK_M, k * BLOCK_K]).reshape(BLOCK_M, BLOCK_K)",
                 "b = w_desc.load([batch, k * BLOCK_K, pid_n * BLOCK_N]).reshape(BLOCK_K, BLOCK_N)"]
        strides = ["stride_xb", "stride_xm", "stride_wb", "stride_wk"]
    else:
        body("x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[stride_xm, 1], "
             "block_shape=[BLOCK_M, BLOCK_K])",
             "w_desc = " + ("tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[stride_wn, 1], "
                            "block_shape=[BLOCK_N, BLOCK_K])" if linear else
                            "tl.make_tensor_descriptor(w_ptr, shape=[K, N], strides=[stride_wk, 1], "
                            "block_shape=[BLOCK_K, BLOCK_N])"))
        loads = ["a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])  # [BLOCK_M, BLOCK_K], zero-filled past the edges",
                 "b = " + ("w_desc.load([pid_n * BLOCK_N, k * BLOCK_K]).T" if linear else
                           "w_desc.load([k * BLOCK_K, pid_n * BLOCK_N])") + "  # [BLOCK_K, BLOCK_N]"]
        strides = ["stride_xm", "stride_wn" if linear else "stride_wk"]
    body("tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)")
    with body.block(f"for tile in tl.range(tl.program_id(0), {'B * ' if batched else ''}tiles_m * tiles_n, NUM_SMS, "
                    "flatten=True, warp_specialize=True):"):
        if batched:
            body("batch, in_batch = tile // (tiles_m * tiles_n), tile % (tiles_m * tiles_n)")
        grouped_order(body, "in_batch" if batched else "tile")
        body("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        with body.block("for k in range(0, tl.cdiv(K, BLOCK_K)):"):
            body(*loads, "acc = tl.dot(a, b, acc)")
        body("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]",
             "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]",
             "mask = (rm[:, None] < M) & (rn[None, :] < N)")
        body(*epilogue.lines)
    shapes = "x [B, M, K], w [B, K, N]" if batched else f"x [M, K], {'w [N, K]' if linear else 'w [K, N]'}"
    tiles = "every batch's [M, N] output tiles" if batched else "[M, N] output tiles"
    doc = [f"{fused}: {shapes}; persistent over {tiles}.",
           "NUM_SMS programs stride over the tiles in grouped order; the k-loop's TMA loads and tl.dot (wgmma, fp32 "
           "accumulator) are software-pipelined, the tile loop marked for warp specialization (a request Triton "
           f"honours where the target supports it); the epilogue is fused; {ending}."]
    return Kernel("fused_kernel_triton", [*params, *(["B"] if batched else []), "M", "N", "K", *strides], [],
                  ["NUM_SMS", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"], doc, body,
                  [*tuning.matmul_configs("persistent"), "", "", *tuning.MATMUL_AUTOTUNE])


def _after(plan: Plan, tail: PlanStep, rest: list[PlanStep], code: Code) -> tuple[Kernel, list[str]]:
    """The kernel after the product (a reduction's combine, or a normalization's row kernel) and the host-side
    helpers it needs; its launch is written into the wrapper ``code``."""
    batched = plan.steps[0].op.name == "bmm"
    if not tail.reduces:
        product = InputSpec("h", "activation", list(plan.task.step_shapes()[tail.index - 2]), plan.dtype, {})
        kernel, launch, host = row_kernel(plan, plan.rows, rest, f"{tail.op.name}_kernel", "h",
                                          [product, *step_inputs(rest)])
        code.extend(launch)
        return kernel, host
    rank = 3 if batched else 2
    kernel = combine_kernel(tail, rest[1:], plan.dtype, program="row", lanes="tiles", count="n_tiles",
                            stride="n_parts", block="BLOCK_T", n="n_reduced", after=per_row("row"),
                            sizes=[("n_tiles", "n_tiles"), ("n_parts", "n_parts"), ("n_reduced", "N"),
                                   *([("n_chan", "M")] if rank == 3 else [])], what="row of the matmul output")
    lead = "(x.shape[0], M)" if batched else "(M,)"
    code("# the tiles of N the autotuned matmul used, one partial each",
         "n_tiles = triton.cdiv(N, fused_kernel_triton.best_config.kwargs[\"BLOCK_N\"])",
         f"out = torch.empty({f'(*{lead}, 1)' if tail.params['keepdim'] else lead}, dtype=x.dtype, device=x.device)")
    code.call(f"{kernel.name}[({'x.shape[0] * M' if batched else 'M'},)](",
              [*(part for part, _ in partial_names(tail)), *(i.name for i in step_inputs(rest[1:])), "out",
               *kernel.size_args(), "BLOCK_T=triton.next_power_of_2(n_tiles)"])
    return kernel, []
