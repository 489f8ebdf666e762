"""Fused Kernels: mish -> group_norm(4 groups) (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-c3633ebf1478',
    'seed': 84,
    'difficulty': 'medium',
    'dtype': 'float16',
    'description': 'mish -> group_norm(4 groups) (float16)',
    'signature': 'float16|r3|mish>group_norm(eps=1e-06,groups=4)',
    'ops': [{'op': 'mish', 'params': {}, 'inputs': []},
            {'op': 'group_norm', 'params': {'groups': 4, 'eps': 1e-06}, 'inputs': ['gamma1', 'beta1']}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['B', 'M', 'N'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'gamma1', 'role': 'weight', 'shape': ['M'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 1.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'beta1', 'role': 'bias', 'shape': ['M'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.2, 'clip': 0.6}}],
    'output': {'shape': ['B', 'M', 'N'], 'dtype': 'float16'},
    'shapes': {'test': [{'B': 2, 'M': 12, 'N': 97}, {'B': 2, 'M': 8, 'N': 64}, {'B': 3, 'M': 4, 'N': 500},
                        {'B': 1, 'M': 164, 'N': 500}], 'bench': [{'B': 245, 'M': 256, 'N': 1024}]},
}


def fused_kernel_pytorch(x, gamma1, beta1):
    """mish -> group_norm(4 groups) (float16)"""
    h = F.mish(x)
    h = F.group_norm(h, 4, gamma1, beta1, eps=1e-06)
    return h
# </PYTHON>

# <TRITON>
@triton.jit
def tanh_softplus(x):
    """tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2): no log and nothing to cancel; 1 in fp32 above x = 20."""
    u = tl.exp(tl.minimum(x, 20.0))
    n = u * (u + 2.0)
    return n / (n + 2.0)


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
    return min(args["TILE"] // args["BLOCK_N"], triton.next_power_of_2(args["n_chan"] // 4))


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
def fused_kernel_triton(x_ptr, gamma1_ptr, beta1_ptr, out_ptr, row_len, n_cols, n_chan, TILE: tl.constexpr,
                        C_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """mish -> group_norm(4 groups); x [B, M, N].

    Rows are one group of 4 per sample: [B, M, N] -> [B * 4, (M / 4) * N], walked in [C_BLOCK, BLOCK_N] tiles of its
    channels and positions (rows too long for registers); fp32 math, one cast on store.
    """
    row = tl.program_id(0).to(tl.int64)
    # 2. group_norm(4 groups): per sample and group of channels (dim 1): (x - mean) / sqrt(var + eps) * gamma + beta
    tl.static_assert(C_BLOCK * BLOCK_N <= TILE)  # the heuristics keep a tile within its budget
    group_chans = n_chan // 4
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
        # 1. mish: x * tanh(softplus(x))
        h = h * tanh_softplus(h)
        block_count = tl.sum(mask.to(tl.float32), axis=None)
        block_mean = tl.sum(tl.where(mask, h, 0.0), axis=None) / block_count
        block_m2 = tl.sum(tl.where(mask, (h - block_mean) * (h - block_mean), 0.0), axis=None)
        run_shift = tl.where(run_count == 0, block_mean, run_shift)
        delta = (block_mean - run_shift) - run_offset
        run_offset += delta * block_count / (run_count + block_count)
        run_m2 += block_m2 + delta * delta * run_count * block_count / (run_count + block_count)
        run_count += block_count
        run_mean = run_shift + run_offset
    rstd = tl.rsqrt(run_m2 / row_len + 1e-06)
    # pass 2: normalize, affine, the ops after it, store
    for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):
        chans = (tile // n_blocks) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]
        pos = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        mask = (chans < group_chans)[:, None] & (pos < n_cols)[None, :]
        h = tl.load(x_ptr + row * row_len + chans[:, None] * n_cols + pos[None, :], mask=mask, other=0.0).to(tl.float32)
        # 1. mish: x * tanh(softplus(x))
        h = h * tanh_softplus(h)
        gamma = tl.load(gamma1_ptr + (row % 4) * group_chans + chans, mask=chans < group_chans,
                        other=0.0).to(tl.float32)[:, None]
        beta = tl.load(beta1_ptr + (row % 4) * group_chans + chans, mask=chans < group_chans,
                       other=0.0).to(tl.float32)[:, None]
        h = (h - run_mean) * rstd * gamma + beta
        tl.store(out_ptr + row * row_len + chans[:, None] * n_cols + pos[None, :], h.to(out_ptr.dtype.element_ty),
                 mask=mask)


def fused_kernel_triton_wrapper(x, gamma1, beta1):
    """x [B, M, N], gamma1 [M], beta1 [M] -> [B, M, N]: allocate, launch."""
    x = x.contiguous()
    gamma1 = gamma1.contiguous()
    beta1 = beta1.contiguous()
    out = torch.empty_like(x)
    row_len = (x.shape[1] // 4) * x.shape[-1]
    fused_kernel_triton[(x.numel() // row_len,)](x, gamma1, beta1, out, row_len, x.shape[-1], x.shape[1])
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 245, 'M': 256, 'N': 1024} if DEVICE == "cuda" else {'B': 2, 'M': 12, 'N': 97}
    x = (torch.randn((dims['B'], dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float16)
    gamma1 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2 + 1.0).to(torch.float16)
    beta1 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2).to(torch.float16)
    return [x, gamma1, beta1]


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
