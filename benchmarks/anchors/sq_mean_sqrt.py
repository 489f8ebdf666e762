"""Fused Kernels: sqrt(mean(x^2)) over the last dim in float32, from float16 x"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
def fused_kernel_pytorch(x):
    """sqrt(mean(x^2, dim=-1)) in float32: x [M, D] float16 -> [M] float32."""
    return torch.sqrt((x.float() * x.float()).mean(-1))
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, out_ptr, n_rows, n_cols,
                        ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[i] = sqrt(sum_j x[i, j]^2 / n_cols), float32.

    x: [n_rows, n_cols] contiguous float16; out: [n_rows] float32. ROWS whole rows per program
    (BLOCK_N >= n_cols) in registers: x is read once. fp32 math; sqrt_rn is the correctly rounded sqrt of torch.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    mask = row_mask[:, None] & (cols < n_cols)[None, :]
    # Read once, never again: evict_first keeps the stream from displacing other lines in L2.
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    out = tl.sqrt_rn(tl.sum(x * x, axis=1) / n_cols)
    tl.store(out_ptr + rows, out, mask=row_mask)


def fused_kernel_triton_wrapper(x):
    x = x.contiguous()
    n_cols = x.shape[-1]
    x2d = x.view(-1, n_cols)
    out = torch.empty(x2d.shape[0], device=x.device, dtype=torch.float32)
    BLOCK_N = triton.next_power_of_2(n_cols)
    ROWS = max(1, 2048 // BLOCK_N)  # short rows: several per program
    num_warps = 16 if BLOCK_N >= 8192 else 8 if BLOCK_N >= 4096 else 4
    grid = (triton.cdiv(x2d.shape[0], ROWS),)
    fused_kernel_triton[grid](x2d, out, x2d.shape[0], n_cols, ROWS=ROWS, BLOCK_N=BLOCK_N, num_warps=num_warps)
    return out.view(x.shape[:-1])
# </TRITON>

# <TEST>
def get_inputs():
    """The anchor shape (M = D = 8192) on a GPU; a small odd shape on the CPU (Triton's interpreter)."""
    M, D = (8192, 8192) if DEVICE == "cuda" else (37, 300)
    x = torch.randn(M, D, device=DEVICE, dtype=torch.float16)
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
