"""Fused Kernels: 1 / (|h| + 0.5) -> var over the last dim -> neg (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-f2ce11739480',
    'seed': 67,
    'difficulty': 'medium',
    'dtype': 'bfloat16',
    'description': '1 / (|h| + 0.5) -> var over the last dim -> neg (bfloat16)',
    'signature': 'bfloat16|r3|reciprocal(shift=0.5)>var(correction=1,keepdim=False)>neg',
    'ops': [{'op': 'reciprocal', 'params': {'shift': 0.5}, 'inputs': []},
            {'op': 'var', 'params': {'correction': 1, 'keepdim': False}, 'inputs': []},
            {'op': 'neg', 'params': {}, 'inputs': []}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['B', 'M', 'N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}}],
    'output': {'shape': ['B', 'M'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'B': 2, 'M': 5, 'N': 97}, {'B': 2, 'M': 8, 'N': 64}, {'B': 3, 'M': 13, 'N': 300}],
               'bench': [{'B': 244, 'M': 1024, 'N': 512}]},
}


def fused_kernel_pytorch(x):
    """1 / (|h| + 0.5) -> var over the last dim -> neg (bfloat16)"""
    h = torch.reciprocal(torch.abs(x) + 0.5)
    h = torch.var(h, dim=-1, keepdim=False, correction=1)
    h = torch.neg(h)
    return h
# </PYTHON>

# <TRITON>
def row_configs():
    """A row kernel's warps (docs/tuning.md#row-warps)."""
    return [triton.Config({}, num_warps=warps) for warps in (1, 2, 4, 8, 16)]


def row_warps(configs, named_args, **kwargs):
    """The configs worth timing at this BLOCK_N: 1-4 warps up to 1024 lanes, 4 and 8 up to 4096, 4-16 at 8192,
    16 above."""
    block = kwargs["BLOCK_N"]
    warps = (1, 2, 4) if block <= 1024 else (4, 8) if block <= 4096 else (4, 8, 16) if block == 8192 else (16,)
    return [config for config in configs if config.num_warps in warps]


@triton.autotune(configs=row_configs(), key=["row_len"], prune_configs_by={"early_config_prune": row_warps})
@triton.jit
def fused_kernel_triton(x_ptr, out_ptr, n_rows, row_len, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """1 / (|h| + 0.5) -> var over the last dim -> neg; x [B, M, N].

    ROWS rows of the last dimension per program, a [ROWS, BLOCK_N] tile held in registers (masked); fp32 math, one cast
    on store.
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # [ROWS]
    cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < row_len)
    # a reduction reads its rows once: evict_first (docs/tuning.md#evict-first)
    h = tl.load(x_ptr + rows[:, None] * row_len + cols[None, :], mask=mask, other=0.0,
                eviction_policy='evict_first').to(tl.float32)
    # 1. 1 / (|h| + 0.5): 1 / (|x| + shift)
    h = 1.0 / (tl.abs(h) + 0.5)
    # 2. var over the last dim: sum_j (x_ij - mean_i)^2 / (N - correction)
    row_mean = tl.sum(tl.where(mask, h, 0.0), axis=1) / row_len
    centered = tl.where(mask, h - row_mean[:, None], 0.0)
    row_m2 = tl.sum(centered * centered, axis=1)
    h = row_m2 / (row_len - 1)
    # 3. neg: -x
    h = -h
    tl.store(out_ptr + rows, h.to(out_ptr.dtype.element_ty), mask=row_mask)


def fused_kernel_triton_wrapper(x):
    """x [B, M, N] -> [B, M]: allocate, launch."""
    x = x.contiguous()
    out = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
    row_len = x.shape[-1]
    BLOCK_N = triton.next_power_of_2(row_len)  # warps: docs/tuning.md#row-warps
    n_rows = x.numel() // row_len
    ROWS = max(1, 2048 // BLOCK_N)  # rows under 2048 bytes: docs/tuning.md#short-rows
    fused_kernel_triton[(triton.cdiv(n_rows, ROWS),)](x, out, n_rows, row_len, ROWS=ROWS, BLOCK_N=BLOCK_N)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 244, 'M': 1024, 'N': 512} if DEVICE == "cuda" else {'B': 2, 'M': 5, 'N': 97}
    x = (torch.randn((dims['B'], dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    return [x]


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
