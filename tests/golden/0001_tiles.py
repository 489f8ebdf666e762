"""Fused Kernels: maximum a scalar -> square -> minimum a per-column vector (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-5eab5e6f9121',
    'seed': 1,
    'difficulty': 'easy',
    'dtype': 'bfloat16',
    'description': 'maximum a scalar -> square -> minimum a per-column vector (bfloat16)',
    'signature': 'bfloat16|r2|maximum(operand=scalar)>square>minimum(operand=col)',
    'ops': [{'op': 'maximum', 'params': {'operand': 'scalar'}, 'inputs': ['alpha0']},
            {'op': 'square', 'params': {}, 'inputs': []},
            {'op': 'minimum', 'params': {'operand': 'col'}, 'inputs': ['bias2']}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['M', 'N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'alpha0', 'role': 'scalar', 'shape': [], 'dtype': 'python_float',
                'init': {'dist': 'uniform', 'low': -1.0, 'high': 1.0}},
               {'name': 'bias2', 'role': 'bias', 'shape': ['N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}}],
    'output': {'shape': ['M', 'N'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'M': 41, 'N': 131}, {'M': 16, 'N': 64}, {'M': 3, 'N': 500}],
               'bench': [{'M': 62528, 'N': 1024}]},
}


def fused_kernel_pytorch(x, alpha0, bias2):
    """maximum a scalar -> square -> minimum a per-column vector (bfloat16)"""
    h = torch.clamp(x, min=alpha0)
    h = torch.square(h)
    h = torch.minimum(h, bias2)
    return h
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, alpha0, bias2_ptr, out_ptr, n_rows, n_cols, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    """maximum a scalar -> square -> minimum a per-column vector: elementwise over x [M, N] as [rows, N] in [BLOCK_M,
    BLOCK_N] tiles.

    Per-column vectors load once per tile ([BLOCK_N], broadcast down its rows), per-row vectors [BLOCK_M] across its
    columns; fp32 math, one cast on store.
    """
    # tiles in row-major order: neighbouring programs read neighbouring memory
    tiles_n = tl.cdiv(n_cols, BLOCK_N)
    rows = (tl.program_id(0) // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    cols = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]  # [BLOCK_M, BLOCK_N]
    h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    # 1. maximum a scalar: max(x, y)
    h = tl.maximum(h, alpha0)
    # 2. square: x^2
    h = h * h
    bias2 = tl.load(bias2_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    # 3. minimum a per-column vector: min(x, y)
    h = tl.minimum(h, bias2)
    tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x, alpha0, bias2):
    """x [M, N], alpha0, bias2 [N] -> [M, N]: allocate, launch."""
    x = x.contiguous()
    bias2 = bias2.contiguous()
    out = torch.empty_like(x)
    # [2048 // BLOCK_N, BLOCK_N] tiles on 4 warps (docs/tuning.md#pointwise-tiles)
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    BLOCK_N = min(1024, triton.next_power_of_2(n_cols))
    BLOCK_M = 2048 // BLOCK_N
    grid = (triton.cdiv(n_rows, BLOCK_M) * triton.cdiv(n_cols, BLOCK_N),)
    fused_kernel_triton[grid](x, alpha0, bias2, out, n_rows, n_cols, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=4)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'M': 62528, 'N': 1024} if DEVICE == "cuda" else {'M': 41, 'N': 131}
    x = (torch.randn((dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    alpha0 = float(torch.rand((), device=DEVICE) * 2.0 + -1.0)
    bias2 = (torch.randn((dims['N'],), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.bfloat16)
    return [x, alpha0, bias2]


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
