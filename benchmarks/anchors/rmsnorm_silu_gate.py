"""Fused Kernels: silu(gate) * rms_norm(x) * g over the last dim, eps 1e-6 (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
def fused_kernel_pytorch(x, gt, g):
    """silu(gt) * (x * rsqrt(mean(x^2, -1) + 1e-6) * g): x, gt [R, H] float16, g [H] float16 -> [R, H] float16."""
    return F.silu(gt) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g)
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, gt_ptr, g_ptr, out_ptr, n_rows, n_cols, eps,
                        ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[i, :] = silu(gt[i, :]) * x[i, :] * rsqrt(mean(x[i, :]^2) + eps) * g, silu(v) = v * sigmoid(v).

    x, gt, out: [n_rows, n_cols] contiguous; g: [n_cols]. ROWS whole rows per program (BLOCK_N >= n_cols) in
    registers: x and gt are read once, out written once. fp32 math, one cast on store.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    gt = tl.load(gt_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    out = gt * tl.sigmoid(gt) * (x * rstd[:, None] * g[None, :])
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x, gt, g):
    x = x.contiguous()
    gt = gt.contiguous()
    n_cols = x.shape[-1]
    x2d = x.view(-1, n_cols)
    out = torch.empty_like(x2d)
    BLOCK_N = triton.next_power_of_2(n_cols)
    ROWS = max(1, 2048 // BLOCK_N)  # short rows: several per program
    num_warps = 16 if BLOCK_N >= 8192 else 8 if BLOCK_N >= 4096 else 4
    grid = (triton.cdiv(x2d.shape[0], ROWS),)
    fused_kernel_triton[grid](x2d, gt.view(-1, n_cols), g.contiguous(), out, x2d.shape[0], n_cols, 1e-6,
                              ROWS=ROWS, BLOCK_N=BLOCK_N, num_warps=num_warps)
    return out.view(x.shape)
# </TRITON>

# <TEST>
def get_inputs():
    """The anchor shape (R = 16384, H = 4096) on a GPU; a small odd shape on the CPU (Triton's interpreter)."""
    R, H = (16384, 4096) if DEVICE == "cuda" else (37, 300)
    x = torch.randn(R, H, device=DEVICE, dtype=torch.float16)
    gt = torch.randn(R, H, device=DEVICE, dtype=torch.float16)
    g = torch.randn(H, device=DEVICE, dtype=torch.float16)
    return [x, gt, g]


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
