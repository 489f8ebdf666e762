"""Fused Kernels: 1 / (|h| + 0.5) -> celu(alpha=2.0) -> selu (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-0d297b77ad6e',
    'seed': 5,
    'difficulty': 'easy',
    'dtype': 'float16',
    'description': '1 / (|h| + 0.5) -> celu(alpha=2.0) -> selu (float16)',
    'signature': 'float16|r2|reciprocal(shift=0.5)>celu(alpha=2.0)>selu',
    'ops': [{'op': 'reciprocal', 'params': {'shift': 0.5}, 'inputs': []},
            {'op': 'celu', 'params': {'alpha': 2.0}, 'inputs': []}, {'op': 'selu', 'params': {}, 'inputs': []}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['M', 'N'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}}],
    'output': {'shape': ['M', 'N'], 'dtype': 'float16'},
    'shapes': {'test': [{'M': 13, 'N': 97}, {'M': 32, 'N': 64}, {'M': 5, 'N': 1000}],
               'bench': [{'M': 7872, 'N': 8192}]},
}


def fused_kernel_pytorch(x):
    """1 / (|h| + 0.5) -> celu(alpha=2.0) -> selu (float16)"""
    h = torch.reciprocal(torch.abs(x) + 0.5)
    h = F.celu(h, alpha=2.0)
    h = F.selu(h)
    return h
# </PYTHON>

# <TRITON>
@triton.jit
def fused_kernel_triton(x_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """1 / (|h| + 0.5) -> celu(alpha=2.0) -> selu: elementwise over x [M, N] flattened, BLOCK_SIZE elements a program.

    Full-tensor operands are read at the same offsets, scalars are arguments; fp32 math, one cast on store.
    """
    pid = tl.program_id(0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)  # [BLOCK_SIZE]
    mask = offsets < n_elements
    h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    # 1. 1 / (|h| + 0.5): 1 / (|x| + shift)
    h = 1.0 / (tl.abs(h) + 0.5)
    # 2. celu(alpha=2.0): x if x > 0 else alpha (exp(x / alpha) - 1)
    h = tl.where(h > 0.0, h, 2.0 * (tl.exp(h / 2.0) - 1.0))
    # 3. selu: scale * (x if x > 0 else alpha (exp(x) - 1))
    h = 1.0507009873554805 * tl.where(h > 0.0, h, 1.6732632423543772 * (tl.exp(h) - 1.0))
    tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(x):
    """x [M, N] -> [M, N]: allocate, launch."""
    x = x.contiguous()
    out = torch.empty_like(x)
    # blocks of 1024 on 4 warps (docs/tuning.md#pointwise-blocks)
    n_elements = out.numel()
    grid = (triton.cdiv(n_elements, 1024),)
    fused_kernel_triton[grid](x, out, n_elements, BLOCK_SIZE=1024, num_warps=4)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'M': 7872, 'N': 8192} if DEVICE == "cuda" else {'M': 13, 'N': 97}
    x = (torch.randn((dims['M'], dims['N']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float16)
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
