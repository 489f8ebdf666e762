"""Fused Kernels: batched matmul x @ w -> add a per-row vector -> cos -> group_norm(2 groups) -> clamp(-0.5, 1.0) (float32)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-1e474da531e7',
    'seed': 420,
    'difficulty': 'hard',
    'dtype': 'float32',
    'description': 'batched matmul x @ w -> add a per-row vector -> cos -> group_norm(2 groups) -> clamp(-0.5, 1.0) (float32)',
    'signature': 'float32|r3|bmm>add(operand=row)>cos>group_norm(eps=1e-05,groups=2)>clamp(max_val=1.0,min_val=-0.5)',
    'ops': [{'op': 'bmm', 'params': {}, 'inputs': ['w']},
            {'op': 'add', 'params': {'operand': 'row'}, 'inputs': ['rowvec1']},
            {'op': 'cos', 'params': {}, 'inputs': []},
            {'op': 'group_norm', 'params': {'groups': 2, 'eps': 1e-05}, 'inputs': ['gamma3', 'beta3']},
            {'op': 'clamp', 'params': {'min_val': -0.5, 'max_val': 1.0}, 'inputs': []}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['B', 'M', 'K'], 'dtype': 'float32',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'w', 'role': 'weight', 'shape': ['B', 'K', 'N'], 'dtype': 'float32',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'fan_in': 'K', 'clip': 4.0}},
               {'name': 'rowvec1', 'role': 'rowvec', 'shape': ['B', 'M'], 'dtype': 'float32',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}},
               {'name': 'gamma3', 'role': 'weight', 'shape': ['M'], 'dtype': 'float32',
                'init': {'dist': 'normal', 'mean': 1.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'beta3', 'role': 'bias', 'shape': ['M'], 'dtype': 'float32',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.2, 'clip': 0.6}}],
    'output': {'shape': ['B', 'M', 'N'], 'dtype': 'float32'},
    'shapes': {'test': [{'B': 3, 'M': 12, 'N': 97, 'K': 29}, {'B': 2, 'M': 4, 'N': 64, 'K': 32},
                        {'B': 1, 'M': 14, 'N': 300, 'K': 97}, {'B': 1, 'M': 134, 'N': 300, 'K': 97}],
               'bench': [{'B': 18, 'M': 2048, 'N': 1024, 'K': 512}]},
}


def fused_kernel_pytorch(x, w, rowvec1, gamma3, beta3):
    """batched matmul x @ w -> add a per-row vector -> cos -> group_norm(2 groups) -> clamp(-0.5, 1.0) (float32)"""
    h = torch.bmm(x, w)
    h = h + rowvec1.unsqueeze(-1)
    h = torch.cos(h)
    h = F.group_norm(h, 2, gamma3, beta3, eps=1e-05)
    h = torch.clamp(h, min=-0.5, max=1.0)
    return h
# </PYTHON>

# <TRITON>
def matmul_configs():
    """Hopper tiles: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), GROUP_M 8 (docs/tuning.md#matmul-tiles)."""
    tiles = ((128, 128, 32, 8, 3), (64, 128, 32, 4, 4), (128, 64, 32, 4, 4))
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=w, num_stages=s)
            for m, n, k, w, s in tiles]


@triton.autotune(configs=matmul_configs(), key=["M", "N", "K"])
@triton.jit
def fused_kernel_triton(x_ptr, w_ptr, rowvec1_ptr, out_ptr, M, N, K, stride_xb, stride_xm, stride_xk, stride_wb,
                        stride_wk, stride_wn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr):
    """batched matmul x @ w -> add a per-row vector -> cos: a [M, N] tile of x @ w per program and batch, the epilogue
    fused.

    fp32 accumulation in tl.dot; one cast on store.
    """
    pid = tl.program_id(0)
    batch = tl.program_id(1)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    # grouped order: GROUP_M row-tiles share each column of w while it is in L2
    first_m = (pid // (GROUP_M * tiles_n)) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_m
    pid_n = (pid % (GROUP_M * tiles_n)) // group_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    rk = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    x_ptrs = x_ptr + batch * stride_xb + rm[:, None] * stride_xm + rk[None, :] * stride_xk
    w_ptrs = w_ptr + batch * stride_wb + rk[:, None] * stride_wk + rn[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(x_ptrs, mask=(rm[:, None] < M) & (rk[None, :] + k < K), other=0.0)  # [BLOCK_M, BLOCK_K]
        b = tl.load(w_ptrs, mask=(rk[:, None] + k < K) & (rn[None, :] < N), other=0.0)  # [BLOCK_K, BLOCK_N]
        acc = tl.dot(a, b, acc, input_precision="tf32x3")
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    # 1. batched matmul x @ w: x @ w per batch: [B, M, K] x [B, K, N] -> [B, M, N]
    h = acc  # [BLOCK_M, BLOCK_N]
    rowvec1 = tl.load(rowvec1_ptr + batch * M + rm, mask=rm < M, other=0.0).to(tl.float32)[:, None]
    # 2. add a per-row vector: x + y
    h = h + rowvec1
    # 3. cos: cos(x)
    h = tl.cos(h)
    tl.store(out_ptr + batch * M * N + rm[:, None] * N + rn[None, :], h.to(out_ptr.dtype.element_ty), mask=mask)


def group_configs():
    """TILE values of a group's channels and positions on num_warps (docs/tuning.md#group-norm-tiles)."""
    return [triton.Config({"TILE": tile}, num_warps=warps) for tile, warps in ((16384, 16), (8192, 8), (4096, 4))]


def tile_width(args):
    """BLOCK_N: the widest power of two that divides N (no padding) if it is 128 wide or all of N, else N
    padded to a power of two; TILE at most."""
    block_n = min(args["n_cols"] & -args["n_cols"], args["TILE"])
    if block_n < min(128, args["n_cols"]):
        block_n = min(triton.next_power_of_2(args["n_cols"]), args["TILE"])
    return block_n


def tile_channels(args):
    """C_BLOCK: the channels that fill TILE, at most a group's channel count padded to a power of two."""
    return min(args["TILE"] // args["BLOCK_N"], triton.next_power_of_2(args["n_chan"] // 2))


def distinct_tiles(configs, named_args, **kwargs):
    """The configs worth timing: where a group fits a smaller TILE, the larger ones give the same [C_BLOCK,
    BLOCK_N] tile (the same kernel); the smallest TILE of each tile is kept."""
    kept = {}
    for config in configs:
        args = {**named_args, **config.kwargs}
        args["BLOCK_N"] = tile_width(args)
        kept[args["BLOCK_N"], tile_channels(args)] = config
    return list(kept.values())


@triton.autotune(configs=group_configs(), key=["row_len", "n_cols", "n_chan"],
                 prune_configs_by={"early_config_prune": distinct_tiles})
@triton.heuristics({"BLOCK_N": tile_width, "C_BLOCK": tile_channels})
@triton.jit
def group_norm_kernel(x_ptr, gamma3_ptr, beta3_ptr, out_ptr, row_len, n_cols, n_chan, TILE: tl.constexpr,
                      C_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """group_norm(2 groups) -> clamp(-0.5, 1.0); x [B, M, N].

    Rows are one group of 2 per sample: [B, M, N] -> [B * 2, (M / 2) * N], walked in [C_BLOCK, BLOCK_N] tiles of its
    channels and positions (rows too long for registers); fp32 math, one cast on store.
    """
    row = tl.program_id(0).to(tl.int64)
    # 4. group_norm(2 groups): per sample and group of channels (dim 1): (x - mean) / sqrt(var + eps) * gamma + beta
    tl.static_assert(C_BLOCK * BLOCK_N <= TILE)  # the heuristics keep a tile within its budget
    group_chans = n_chan // 2
    n_blocks = tl.cdiv(n_cols, BLOCK_N)
    # pass 1: the row's count, mean and M2 (Chan's combination), tile by tile
    run_count = 0.0
    run_mean = 0.0
    run_m2 = 0.0
    run_shift = 0.0
    run_offset = 0.0
    for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):
        chans = (tile // n_blocks) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]
        pos = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        mask = (chans < group_chans)[:, None] & (pos < n_cols)[None, :]
        h = tl.load(x_ptr + row * row_len + chans[:, None] * n_cols + pos[None, :], mask=mask, other=0.0).to(tl.float32)
        block_count = tl.sum(mask.to(tl.float32), axis=None)
        block_mean = tl.sum(tl.where(mask, h, 0.0), axis=None) / block_count
        block_m2 = tl.sum(tl.where(mask, (h - block_mean) * (h - block_mean), 0.0), axis=None)
        run_shift = tl.where(run_count == 0, block_mean, run_shift)
        delta = (block_mean - run_shift) - run_offset
        run_offset += delta * block_count / (run_count + block_count)
        run_m2 += block_m2 + delta * delta * run_count * block_count / (run_count + block_count)
        run_count += block_count
        run_mean = run_shift + run_offset
    rstd = tl.rsqrt(run_m2 / row_len + 1e-05)
    # pass 2: normalize, affine, the ops after it, store
    for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):
        chans = (tile // n_blocks) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]
        pos = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        mask = (chans < group_chans)[:, None] & (pos < n_cols)[None, :]
        h = tl.load(x_ptr + row * row_len + chans[:, None] * n_cols + pos[None, :], mask=mask, other=0.0).to(tl.float32)
        gamma = tl.load(gamma3_ptr + (row % 2) * group_chans + chans, mask=chans < group_chans,
                        other=0.0).to(tl.float32)[:, None]
        beta = tl.load(beta3_ptr + (row % 2) * group_chans + chans, mask=chans < group_chans,
                       other=0.0).to(tl.float32)[:, None]
        h = (h - run_mean) * rstd * gamma + beta
        # 5. clamp(-0.5, 1.0): min(max(x, min_val), max_val)
        h = tl.minimum(tl.maximum(h, -0.5), 1.0)
        tl.store(out_ptr + row * row_len + chans[:, None] * n_cols + pos[None, :], h.to(out_ptr.dtype.element_ty),
                 mask=mask)


def fused_kernel_triton_wrapper(x, w, rowvec1, gamma3, beta3):
    """x [B, M, K], w [B, K, N], rowvec1 [B, M], gamma3 [M], beta3 [M] -> [B, M, N]: allocate, launch."""
    x = x.contiguous()
    w = w.contiguous()
    rowvec1 = rowvec1.contiguous()
    gamma3 = gamma3.contiguous()
    beta3 = beta3.contiguous()
    M, K = x.shape[-2], x.shape[-1]
    N = w.shape[-1]
    h = torch.empty((x.shape[0], M, N), dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), x.shape[0])
    fused_kernel_triton[grid](x, w, rowvec1, h, M, N, K, x.stride(0), x.stride(1), x.stride(2), w.stride(0),
                              w.stride(1), w.stride(2))
    out = torch.empty_like(h)
    row_len = (h.shape[1] // 2) * h.shape[-1]
    group_norm_kernel[(h.numel() // row_len,)](h, gamma3, beta3, out, row_len, h.shape[-1], h.shape[1])
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 18, 'M': 2048, 'N': 1024, 'K': 512} if DEVICE == "cuda" else {'B': 3, 'M': 12, 'N': 97, 'K': 29}
    x = (torch.randn((dims['B'], dims['M'], dims['K']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float32)
    w = (torch.randn((dims['B'], dims['K'], dims['N']), device=DEVICE).clamp(-4.0, 4.0) * (1.0 / dims['K'] ** 0.5)).to(torch.float32)
    rowvec1 = (torch.randn((dims['B'], dims['M']), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.float32)
    gamma3 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2 + 1.0).to(torch.float32)
    beta3 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2).to(torch.float32)
    return [x, w, rowvec1, gamma3, beta3]


def test_performance(pytorch_func, triton_func, inputs, num_runs=50):
    """Total seconds for `num_runs` calls of each function, timed with CUDA events after a warm-up.

    A quick standalone figure; `fusionforge bench` is the trusted measurement. (None, None) on the CPU.
    """
    if not torch.cuda.is_available():
        return None, None
    totals = []
    for func in (pytorch_func, triton_func):
        for _ in range(3):
            func(*inputs)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(num_runs):
            func(*inputs)
        end.record()
        torch.cuda.synchronize()
        totals.append(start.elapsed_time(end) / 1000.0)
    return totals[0], totals[1]
# </TEST>

if __name__ == '__main__':
    import os
    import sys

    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit(f"No CUDA GPU here: fusionforge check {sys.argv[0]} checks it on the CPU (Triton's interpreter)")
    ATTEMPT = 1
    NUM_RUNS = 50
    print(f"=== ATTEMPT {ATTEMPT}: {__doc__.split(':', 1)[1].strip()} ===")
    inputs = get_inputs()
    outputs, errors = {}, {}
    for name, func in (("PyTorch", fused_kernel_pytorch), ("Triton", fused_kernel_triton_wrapper)):
        try:
            outputs[name] = func(*inputs)
        except Exception as exc:  # report every failure, then stop
            errors[name] = f"{type(exc).__name__}: {exc}"
    if not errors and isinstance(outputs["PyTorch"], tuple):  # fp8 values and their scales
        got = outputs["Triton"] if isinstance(outputs["Triton"], tuple) else (outputs["Triton"],)
        # a value may round to its e4m3 neighbour (1/8 of it at most); a 16-bit chain's rounding moves the scales
        tols = [0.125 if ref.dtype == torch.float8_e4m3fn else 5e-2 for ref in outputs["PyTorch"]]
        if len(got) != len(tols) or not all(out.shape == ref.shape and torch.allclose(out.float(), ref.float(),
                                                                                      rtol=tol, atol=tol)
                                            for out, ref, tol in zip(got, outputs["PyTorch"], tols)):
            errors["Triton"] = "outputs do not match PyTorch"
    elif not errors and not outputs["PyTorch"].is_floating_point():
        # indices: against PyTorch on float64 inputs, as a 16-bit near-tie may be picked either way
        ref = fused_kernel_pytorch(*[v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                     for v in inputs])
        out = outputs["Triton"]
        if out.shape != ref.shape or (out != ref).float().mean() > 0.01:
            errors["Triton"] = "indices differ from PyTorch's (in float64) in over 1% of rows"
    elif not errors:
        ref, out = outputs["PyTorch"].float(), outputs["Triton"].float()
        tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(outputs["PyTorch"].dtype, 1e-2)
        if out.shape != ref.shape or not torch.allclose(out, ref, rtol=tol, atol=tol):
            errors["Triton"] = "output does not match PyTorch"
    print("=" * 60)
    print(f"FINAL TEST REPORT - ATTEMPT {ATTEMPT}")
    print("=" * 60)
    for name in ("PyTorch", "Triton"):
        status = "\u2713 SUCCESS" if name not in errors else f"\u274c FAILED ({errors[name]})"
        print(f"{name + ' Implementation:':<24}{status}")
    if not errors:
        pytorch_time, triton_time = test_performance(fused_kernel_pytorch, fused_kernel_triton_wrapper, inputs,
                                                     NUM_RUNS)
        if pytorch_time is None:
            print("\nPyTorch Time: not timed (timing needs a CUDA GPU)")
            print("Triton Time:  not timed (timing needs a CUDA GPU)")
        else:
            print(f"\nPyTorch Time: {pytorch_time:.4f}s ({pytorch_time / NUM_RUNS * 1000:.2f}ms per run)")
            print(f"Triton Time:  {triton_time:.4f}s ({triton_time / NUM_RUNS * 1000:.2f}ms per run)")
            ratio = pytorch_time / triton_time
            verdict = f"{ratio:.2f}x FASTER" if ratio > 1 else f"{1 / ratio:.2f}x SLOWER"
            print(f"\n\U0001f3c6 RESULT: Triton is {verdict} than PyTorch")
        print("\n\u2705 SUCCESS: Both implementations completed successfully!")
    sys.exit(1 if errors else 0)
