"""Fused Kernels: gelu(x + b) * 0.5, b a per-column bias (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
def fused_kernel_pytorch(x, b):
    """0.5 * gelu(x + b): x [M, D] float16, b [D] float16 -> [M, D] float16 (gelu with erf)."""
    return F.gelu(x + b) * 0.5
# </PYTHON>

# <TRITON>
@triton.jit
def _erfc_nonneg(z):
    """erfc(z) for z >= 0: the Numerical Recipes Chebyshev fit, relative error < 1.2e-7 for every z >= 0 (far
    below float16 rounding), in one reciprocal, one exp and ten FMAs: cheaper than libdevice's erff."""
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -0.82215223 + t * 0.17087277
    poly = 1.48851587 + t * poly
    poly = -1.13520398 + t * poly
    poly = 0.27886807 + t * poly
    poly = -0.18628806 + t * poly
    poly = 0.09678418 + t * poly
    poly = 0.37409196 + t * poly
    poly = 1.00002368 + t * poly
    return t * tl.exp(-z * z - 1.26551223 + t * poly)


@triton.jit
def fused_kernel_triton(x_ptr, b_ptr, out_ptr, n_rows, n_cols,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[i, j] = 0.5 * gelu(x[i, j] + b[j]), gelu(h) = 0.5 * h * (1 + erf(h / sqrt(2))).

    x, out: [n_rows, n_cols] contiguous; b: [n_cols]. One [BLOCK_M, BLOCK_N] tile per program, so the
    bias slice is loaded once per tile and no per-element modulo is needed. fp32 math, one cast on store. On an
    H100 the kernel is bound by instruction issue as much as by memory, hence the cheaper erfc.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    h = x + b[None, :]
    # gelu(h) = h * Phi(h), Phi(h) = 0.5 * erfc(-h / sqrt(2)): one erfc of |h| / sqrt(2) serves both signs.
    erfc = _erfc_nonneg(tl.abs(h) * 0.7071067811865476)
    cdf = tl.where(h >= 0.0, 1.0 - 0.5 * erfc, 0.5 * erfc)
    out = 0.5 * h * cdf  # 0.5 * gelu(h)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x, b):
    x = x.contiguous()
    b = b.contiguous()
    n_cols = x.shape[-1]
    x2d = x.view(-1, n_cols)
    out = torch.empty_like(x2d)
    # 8192 elements (16 KiB of fp16 in, 16 KiB out) per program: 4 x 16-byte loads per thread at 8 warps.
    BLOCK_N = min(1024, triton.next_power_of_2(n_cols))
    BLOCK_M = max(1, 8192 // BLOCK_N)
    grid = (triton.cdiv(x2d.shape[0], BLOCK_M), triton.cdiv(n_cols, BLOCK_N))
    fused_kernel_triton[grid](x2d, b, out, x2d.shape[0], n_cols, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=8)
    return out.view(x.shape)
# </TRITON>

# <TEST>
def get_inputs():
    """The anchor shape (M = D = 8192) on a GPU; a small odd shape on the CPU (Triton's interpreter)."""
    M, D = (8192, 8192) if DEVICE == "cuda" else (37, 300)
    x = torch.randn(M, D, device=DEVICE, dtype=torch.float16)
    b = torch.randn(D, device=DEVICE, dtype=torch.float16)
    return [x, b]


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
    if not errors:
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
