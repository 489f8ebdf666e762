"""Fused Kernels: linear x @ w^T -> batch_norm (inference, running stats) -> hardswish -> minimum a full tensor (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-4235debe0bf8',
    'seed': 4,
    'difficulty': 'hard',
    'dtype': 'bfloat16',
    'description': 'linear x @ w^T -> batch_norm (inference, running stats) -> hardswish -> minimum a full tensor (bfloat16)',
    'signature': 'bfloat16|r2|linear>batch_norm(eps=1e-05)>hardswish>minimum(operand=full)',
    'ops': [{'op': 'linear', 'params': {}, 'inputs': ['w']},
            {'op': 'batch_norm', 'params': {'eps': 1e-05},
             'inputs': ['running_mean1', 'running_var1', 'gamma1', 'beta1']},
            {'op': 'hardswish', 'params': {}, 'inputs': []},
            {'op': 'minimum', 'params': {'operand': 'full'}, 'inputs': ['residual3']}],
    'inputs': [{'name': 'x', 'role': 'activation', 'shape': ['M', 'K'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'w', 'role': 'weight', 'shape': ['N', 'K'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'fan_in': 'K', 'clip': 4.0}},
               {'name': 'running_mean1', 'role': 'stat', 'shape': ['N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}},
               {'name': 'running_var1', 'role': 'stat', 'shape': ['N'], 'dtype': 'bfloat16',
                'init': {'dist': 'uniform', 'low': 0.5, 'high': 2.0}},
               {'name': 'gamma1', 'role': 'weight', 'shape': ['N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 1.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'beta1', 'role': 'bias', 'shape': ['N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.2, 'clip': 0.6}},
               {'name': 'residual3', 'role': 'residual', 'shape': ['M', 'N'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 0.5, 'clip': 2.0}}],
    'output': {'shape': ['M', 'N'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'M': 31, 'N': 251, 'K': 37}, {'M': 64, 'N': 256, 'K': 32}, {'M': 3, 'N': 500, 'K': 97}],
               'bench': [{'M': 5888, 'N': 4096, 'K': 8192}]},
}


def fused_kernel_pytorch(x, w, running_mean1, running_var1, gamma1, beta1, residual3):
    """linear x @ w^T -> batch_norm (inference, running stats) -> hardswish -> minimum a full tensor (bfloat16)"""
    h = F.linear(x, w)
    h = F.batch_norm(h, running_mean1, running_var1, gamma1, beta1, training=False, eps=1e-05)
    h = F.hardswish(h)
    h = torch.minimum(h, residual3)
    return h
# </PYTHON>

# <TRITON>
def matmul_configs():
    """Hopper tiles: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), GROUP_M 8 (docs/tuning.md#persistent-matmul)."""
    tiles = ((128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4))
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=w, num_stages=s)
            for m, n, k, w, s in tiles]


@triton.autotune(configs=matmul_configs(), key=["M", "N", "K"])
@triton.jit
def fused_kernel_triton(x_ptr, w_ptr, running_mean1_ptr, running_var1_ptr, gamma1_ptr, beta1_ptr, residual3_ptr,
                        out_ptr, M, N, K, stride_xm, stride_wn, NUM_SMS: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """linear x @ w^T -> batch_norm (inference, running stats) -> hardswish -> minimum a full tensor: x [M, K], w [N,
    K]; persistent over [M, N] output tiles.

    NUM_SMS programs stride over the tiles in grouped order; the k-loop's TMA loads and tl.dot (wgmma, fp32 accumulator)
    are software-pipelined, the tile loop marked for warp specialization (a request Triton honours where the target
    supports it); the epilogue is fused; one cast on store.
    """
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[stride_xm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[stride_wn, 1], block_shape=[BLOCK_N, BLOCK_K])
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, NUM_SMS, flatten=True, warp_specialize=True):
        # grouped order: GROUP_M row-tiles share each column of w while it is in L2
        first_m = (tile // (GROUP_M * tiles_n)) * GROUP_M
        group_m = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (tile % (GROUP_M * tiles_n)) % group_m
        pid_n = (tile % (GROUP_M * tiles_n)) // group_m
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])  # [BLOCK_M, BLOCK_K], zero-filled past the edges
            b = w_desc.load([pid_n * BLOCK_N, k * BLOCK_K]).T  # [BLOCK_K, BLOCK_N]
            acc = tl.dot(a, b, acc)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        # 1. linear x @ w^T: [M, K] x [N, K] -> [M, N]
        h = acc  # [BLOCK_M, BLOCK_N]
        # 2. batch_norm (inference, running stats): (x - running_mean) / sqrt(running_var + eps) * gamma + beta per
        # channel (dim 1)
        running_mean = tl.load(running_mean1_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        running_var = tl.load(running_var1_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        gamma = tl.load(gamma1_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        beta = tl.load(beta1_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        h = (h - running_mean) * tl.rsqrt(running_var + 1e-05) * gamma + beta
        # 3. hardswish: x * relu6(x + 3) / 6
        h = h * tl.minimum(tl.maximum(h + 3.0, 0.0), 6.0) / 6.0
        residual3 = tl.load(residual3_ptr + rm[:, None] * N + rn[None, :], mask=mask, other=0.0).to(tl.float32)
        # 4. minimum a full tensor: min(x, y)
        h = tl.minimum(h, residual3)
        tl.store(out_ptr + rm[:, None] * N + rn[None, :], h.to(out_ptr.dtype.element_ty), mask=mask)


def _tma_operand(t):
    """t if TMA can address it (unit last stride, 16-byte aligned base and rows), else such a copy."""
    if t.stride(-1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0:
        return t
    align = 16 // t.element_size()
    padded = torch.empty((t.shape[0], triton.cdiv(t.shape[1], align) * align), dtype=t.dtype, device=t.device)
    return padded[:, :t.shape[1]].copy_(t)


def fused_kernel_triton_wrapper(x, w, running_mean1, running_var1, gamma1, beta1, residual3):
    """x [M, K], w [N, K], running_mean1 [N], running_var1 [N], gamma1 [N], beta1 [N], residual3 [M, N] -> [M, N]:
    allocate, launch.
    """
    x = x.contiguous()
    w = w.contiguous()
    running_mean1 = running_mean1.contiguous()
    running_var1 = running_var1.contiguous()
    gamma1 = gamma1.contiguous()
    beta1 = beta1.contiguous()
    residual3 = residual3.contiguous()
    x, w = _tma_operand(x), _tma_operand(w)
    M, K = x.shape
    N = w.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    # a program per SM; a CPU (Triton's interpreter) has none: two programs, each walking several tiles
    num_sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2
    grid = lambda meta: (min(num_sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])), )
    # device-side TMA descriptors live in a little global scratch memory Triton asks this allocator for
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=x.device))
    fused_kernel_triton[grid](x, w, running_mean1, running_var1, gamma1, beta1, residual3, out, M, N, K, x.stride(0),
                              w.stride(0), NUM_SMS=num_sms)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'M': 5888, 'N': 4096, 'K': 8192} if DEVICE == "cuda" else {'M': 31, 'N': 251, 'K': 37}
    x = (torch.randn((dims['M'], dims['K']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    w = (torch.randn((dims['N'], dims['K']), device=DEVICE).clamp(-4.0, 4.0) * (1.0 / dims['K'] ** 0.5)).to(torch.bfloat16)
    running_mean1 = (torch.randn((dims['N'],), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.bfloat16)
    running_var1 = (torch.rand((dims['N'],), device=DEVICE) * 1.5 + 0.5).to(torch.bfloat16)
    gamma1 = (torch.randn((dims['N'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2 + 1.0).to(torch.bfloat16)
    beta1 = (torch.randn((dims['N'],), device=DEVICE).clamp(-0.6, 0.6) * 0.2).to(torch.bfloat16)
    residual3 = (torch.randn((dims['M'], dims['N']), device=DEVICE).clamp(-2.0, 2.0) * 0.5).to(torch.bfloat16)
    return [x, w, running_mean1, running_var1, gamma1, beta1, residual3]


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
