"""Fused Kernels: elu(alpha=1.5) -> var over the last dim -> add a full tensor -> l2norm over the last dim (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-99114e833650',
    'seed': 60,
    'difficulty': 'hard',
    'dtype': 'bfloat16',
    'description': 'elu(alpha=1.5) -> var over the last dim -> add a full tensor -> l2norm over the last dim (bfloat16)',
    'signature': 'bfloat16|r3|elu(alpha=1.5)>var(correction=0,keepdim=False)>add(operand=full)>l2norm(keepdim=False)',
    'ops': [{'op': 'elu', 'params': {'alpha': 1.5}, 'inputs': []},
            {'op': 'var', 'params': {'correction': 0, 'keepdim': False}, 'inputs': []},
            {'op': 'add', 'params': {'operand': 'full'}, 'inputs': ['residual2']},
            {'op': 'l2norm', 'params': {'keepdim': False}, 'inputs': []}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['B', 'M', 'N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'residual2', 'role': 'residual', 'shape': ['B', 'M'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}}],
    'output': {'shape': ['B'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'B': 2, 'M': 7, 'N': 97}, {'B': 2, 'M': 4, 'N': 128}, {'B': 3, 'M': 3, 'N': 500}],
               'bench': [{'B': 244, 'M': 512, 'N': 1024}]},
}


def fused_kernel_pytorch(x, residual2):
    """elu(alpha=1.5) -> var over the last dim -> add a full tensor -> l2norm over the last dim (bfloat16)"""
    h = F.elu(x, alpha=1.5)
    h = torch.var(h, dim=-1, keepdim=False, correction=0)
    h = h + residual2
    h = torch.linalg.vector_norm(h, dim=-1, keepdim=False)
    return h
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, residual2_ptr, part_sumsq_ptr, n_rows, n_cols, rows_per_split, n_splits,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """elu(alpha=1.5) -> var over the last dim -> add a full tensor -> l2norm over the last dim; x [B, M, N], a program
    per batch and slice of rows.

    Walks the [BLOCK_M, BLOCK_N] tiles of its rows_per_split rows (one tile unless M is long); stores the slice's fp32
    state of the second reduction.
    """
    program = tl.program_id(0)
    batch = (program // n_splits).to(tl.int64)
    split = program % n_splits
    cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    run_sumsq = 0.0
    row_end = tl.minimum((split + 1) * rows_per_split, n_rows)
    for start in tl.range(split * rows_per_split, row_end, BLOCK_M, num_stages=1):
        rows = start + tl.arange(0, BLOCK_M)  # [BLOCK_M]
        row_mask = rows < row_end
        mask = row_mask[:, None] & (cols[None, :] < n_cols)
        # a reduction reads its rows once: evict_first (docs/tuning.md#evict-first)
        h = tl.load(x_ptr + batch * n_rows * n_cols + rows[:, None] * n_cols + cols[None, :], mask=mask, other=0.0,
                    eviction_policy='evict_first').to(tl.float32)
        # 1. elu(alpha=1.5): x if x > 0 else alpha (exp(x) - 1)
        h = tl.where(h > 0.0, h, 1.5 * (tl.exp(h) - 1.0))
        # 2. var over the last dim (over N): sum_j (x_ij - mean_i)^2 / (N - correction)
        row_mean = tl.sum(tl.where(mask, h, 0.0), axis=1) / n_cols
        centered = tl.where(mask, h - row_mean[:, None], 0.0)
        row_m2 = tl.sum(centered * centered, axis=1)
        h = row_m2 / (n_cols - 0)
        residual2 = tl.load(residual2_ptr + batch * n_rows + rows, mask=row_mask, other=0.0).to(tl.float32)
        # 3. add a full tensor: x + y
        h = h + residual2
        # 4. l2norm over the last dim (over M): this slice's running state
        run_sumsq += tl.sum(tl.where(row_mask, h * h, 0.0), axis=0)
    tl.store(part_sumsq_ptr + batch * n_splits + split, run_sumsq)


@triton.jit
def l2norm_combine_kernel(part_sumsq_ptr, out_ptr, n_splits, BLOCK_S: tl.constexpr):
    """l2norm over the last dim: one program per batch.

    Merges its n_splits partial states (fp32), applies the later ops, one cast on store.
    """
    batch = tl.program_id(0).to(tl.int64)
    splits = tl.arange(0, BLOCK_S)  # [BLOCK_S]
    part_sumsq = tl.load(part_sumsq_ptr + batch * n_splits + splits, mask=splits < n_splits, other=0.0)
    # 4. l2norm over the last dim (over M): sqrt(sum_j x_ij^2)
    part_sumsq = tl.sum(part_sumsq, axis=0)
    h = tl.sqrt(part_sumsq)
    tl.store(out_ptr + batch, h.to(out_ptr.dtype.element_ty))


def fused_kernel_triton_wrapper(x, residual2):
    """x [B, M, N], residual2 [B, M] -> [B]: allocate, launch."""
    x = x.contiguous()
    residual2 = residual2.contiguous()
    n_batch, n_rows, n_cols = x.shape
    BLOCK_N = triton.next_power_of_2(n_cols)
    BLOCK_M = max(1, min(triton.next_power_of_2(n_rows), 2048 // BLOCK_N))
    # a program per tile, past 1024 tiles a batch each walks several (docs/tuning.md#two-reductions)
    rows_per_split = triton.cdiv(triton.cdiv(n_rows, BLOCK_M), 1024) * BLOCK_M
    n_splits = triton.cdiv(n_rows, rows_per_split)
    part_sumsq = torch.empty((n_batch, n_splits), dtype=torch.float32, device=x.device)
    fused_kernel_triton[(n_batch * n_splits,)](x, residual2, part_sumsq, n_rows, n_cols, rows_per_split, n_splits,
                                               BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=2)
    out = torch.empty((n_batch,), dtype=x.dtype, device=x.device)
    l2norm_combine_kernel[(n_batch,)](part_sumsq, out, n_splits, BLOCK_S=triton.next_power_of_2(n_splits))
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 244, 'M': 512, 'N': 1024} if DEVICE == "cuda" else {'B': 2, 'M': 7, 'N': 97}
    x = (torch.randn((dims['B'], dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    residual2 = (torch.randn((dims['B'], dims['M']), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.bfloat16)
    return [x, residual2]


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
