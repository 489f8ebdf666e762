"""Fused Kernels: gelu(layer_norm(x + r)) over the last dim, weight g and bias be (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
def fused_kernel_pytorch(x, r, g, be):
    """gelu(layer_norm(x + r, weight=g, bias=be, eps=1e-5)) over the last dim: x, r [R, H] float16, g, be [H]
    float16 -> [R, H] float16 (the anchor writes the normalized shape as (H,); H = x.shape[-1] here)."""
    return F.gelu(F.layer_norm(x + r, (x.shape[-1],), g, be))
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, r_ptr, g_ptr, be_ptr, out_ptr, n_rows, n_cols, eps,
                        ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[i, :] = gelu((h - mean) * rsqrt(var + eps) * g + be), h = x[i, :] + r[i, :], gelu with erf.

    x, r, out: [n_rows, n_cols] contiguous; g, be: [n_cols]. ROWS whole rows per program (BLOCK_N >= n_cols)
    in registers: x and r are read once, out written once; the variance is the centred second pass over
    registers, not E[h^2] - mean^2. fp32 math, one cast on store.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    be = tl.load(be_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    h = x + r
    mean = tl.sum(h, axis=1) / n_cols
    d = tl.where(col_mask[None, :], h - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(d * d, axis=1) / n_cols + eps)
    y = d * rstd[:, None] * g[None, :] + be[None, :]
    out = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x, r, g, be):
    x = x.contiguous()
    r = r.contiguous()
    n_cols = x.shape[-1]
    x2d = x.view(-1, n_cols)
    out = torch.empty_like(x2d)
    BLOCK_N = triton.next_power_of_2(n_cols)
    ROWS = max(1, 2048 // BLOCK_N)  # short rows: several per program
    num_warps = 16 if BLOCK_N >= 8192 else 4  # 4 for the anchor's 4096 columns (measured best on an H100)
    grid = (triton.cdiv(x2d.shape[0], ROWS),)
    fused_kernel_triton[grid](x2d, r.view(-1, n_cols), g.contiguous(), be.contiguous(), out, x2d.shape[0], n_cols,
                              1e-5, ROWS=ROWS, BLOCK_N=BLOCK_N, num_warps=num_warps)
    return out.view(x.shape)
# </TRITON>

# <TEST>
def get_inputs():
    """The anchor shape (R = 16384, H = 4096) on a GPU; a small odd shape on the CPU (Triton's interpreter)."""
    R, H = (16384, 4096) if DEVICE == "cuda" else (37, 300)
    x = torch.randn(R, H, device=DEVICE, dtype=torch.float16)
    r = torch.randn(R, H, device=DEVICE, dtype=torch.float16)
    g = torch.randn(H, device=DEVICE, dtype=torch.float16)
    be = torch.randn(H, device=DEVICE, dtype=torch.float16)
    return [x, r, g, be]


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
