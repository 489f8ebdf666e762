"""Fused Kernels: instance_norm -> minimum a per-row vector (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-200f3169cd35',
    'seed': 128,
    'difficulty': 'medium',
    'dtype': 'bfloat16',
    'description': 'instance_norm -> minimum a per-row vector (bfloat16)',
    'signature': 'bfloat16|r3|instance_norm(eps=1e-05)>minimum(operand=row)',
    'ops': [{'op': 'instance_norm', 'params': {'eps': 1e-05}, 'inputs': ['gamma0', 'beta0']},
            {'op': 'minimum', 'params': {'operand': 'row'}, 'inputs': ['rowvec1']}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['B', 'M', 'N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'gamma0', 'role': 'weight', 'shape': ['M'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 1.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'beta0', 'role': 'bias', 'shape': ['M'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'rowvec1', 'role': 'rowvec', 'shape': ['B', 'M'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}}],
    'output': {'shape': ['B', 'M', 'N'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'B': 2, 'M': 11, 'N': 131}, {'B': 2, 'M': 4, 'N': 64}, {'B': 3, 'M': 13, 'N': 300}],
               'bench': [{'B': 245, 'M': 128, 'N': 2048}]},
}


def fused_kernel_pytorch(x, gamma0, beta0, rowvec1):
    """instance_norm -> minimum a per-row vector (bfloat16)"""
    h = F.instance_norm(x, weight=gamma0, bias=beta0, eps=1e-05)
    h = torch.minimum(h, rowvec1.unsqueeze(-1))
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
def fused_kernel_triton(x_ptr, gamma0_ptr, beta0_ptr, rowvec1_ptr, out_ptr, row_len, n_chan, BLOCK_N: tl.constexpr):
    """instance_norm -> minimum a per-row vector; x [B, M, N].

    One row of the last dimension per program, held in registers (BLOCK_N lanes, masked); fp32 math, one cast on store.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    mask = cols < row_len
    h = tl.load(x_ptr + row * row_len + cols, mask=mask, other=0.0).to(tl.float32)
    # 1. instance_norm: per sample and channel (dim 1): (x - mean) / sqrt(var + eps) * gamma + beta over the last dim
    gamma = tl.load(gamma0_ptr + row % n_chan).to(tl.float32)
    beta = tl.load(beta0_ptr + row % n_chan).to(tl.float32)
    row_mean = tl.sum(tl.where(mask, h, 0.0), axis=0) / row_len
    centered = tl.where(mask, h - row_mean, 0.0)
    # the rounding of the mean, taken back: what the centered values still sum to (corrected two-pass)
    centered = tl.where(mask, centered - tl.sum(centered, axis=0) / row_len, 0.0)
    h = centered * tl.rsqrt(tl.sum(centered * centered, axis=0) / row_len + 1e-05)
    h = h * gamma + beta
    rowvec1 = tl.load(rowvec1_ptr + row).to(tl.float32)
    # 2. minimum a per-row vector: min(x, y)
    h = tl.minimum(h, rowvec1)
    tl.store(out_ptr + row * row_len + cols, h.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x, gamma0, beta0, rowvec1):
    """x [B, M, N], gamma0 [M], beta0 [M], rowvec1 [B, M] -> [B, M, N]: allocate, launch."""
    x = x.contiguous()
    gamma0 = gamma0.contiguous()
    beta0 = beta0.contiguous()
    rowvec1 = rowvec1.contiguous()
    out = torch.empty_like(x)
    row_len = x.shape[-1]
    BLOCK_N = triton.next_power_of_2(row_len)  # warps: docs/tuning.md#row-warps
    fused_kernel_triton[(x.numel() // row_len,)](x, gamma0, beta0, rowvec1, out, row_len, x.shape[1], BLOCK_N=BLOCK_N)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 245, 'M': 128, 'N': 2048} if DEVICE == "cuda" else {'B': 2, 'M': 11, 'N': 131}
    x = (torch.randn((dims['B'], dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    gamma0 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2 + 1.0).to(torch.bfloat16)
    beta0 = (torch.randn((dims['M'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2).to(torch.bfloat16)
    rowvec1 = (torch.randn((dims['B'], dims['M']), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.bfloat16)
    return [x, gamma0, beta0, rowvec1]


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
