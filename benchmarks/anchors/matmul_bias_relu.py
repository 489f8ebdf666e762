"""Fused Kernels: relu(a @ w + b), b a per-column bias (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
def fused_kernel_pytorch(a, w, b):
    """relu(a @ w + b): a [M, K] float16, w [K, N] float16, b [N] float16 -> [M, N] float16."""
    return torch.relu(a @ w + b)
# </PYTHON>

# <TRITON>
# Hopper-suited tiles: two consumer warpgroups of wgmma, 3-4 TMA stages in shared memory. Triton's CPU interpreter
# has no benchmarker to autotune with, so there the first config runs alone.
MATMUL_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_SIZE_M": 8}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_SIZE_M": 8}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_SIZE_M": 8}, num_stages=4, num_warps=8),
]


@triton.autotune(configs=MATMUL_CONFIGS if DEVICE == "cuda" else MATMUL_CONFIGS[:1], key=["M", "N", "K"])
@triton.jit
def fused_kernel_triton(a_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_am, stride_wk, stride_om,
                        NUM_SMS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_SIZE_M: tl.constexpr):
    """out = relu(a @ w + b): a [M, K], w [K, N], out [M, N] row-major with 16-byte aligned rows (TMA); b [N].

    Persistent and warp-specialized: NUM_SMS programs stride over the [BLOCK_M, BLOCK_N] output tiles, taken in
    groups of GROUP_SIZE_M tile-rows so that concurrent tiles share A and W panels in L2. A producer warp issues
    the TMA loads (zero-filled past the edges: no masks) while two consumer warpgroups run fp16 tl.dot (wgmma)
    into an fp32 accumulator. Bias and relu are fused into the epilogue, one cast on store; the TMA store clips
    at the edges. The descriptors are built on the device.
    """
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_am, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[K, N], strides=[stride_wk, 1], block_shape=[BLOCK_K, BLOCK_N])
    out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[stride_om, 1], block_shape=[BLOCK_M, BLOCK_N])
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS, flatten=True, warp_specialize=True):
        first_pid_m = (tile_id // num_pid_in_group) * GROUP_SIZE_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
        pid_m = first_pid_m + (tile_id % num_pid_in_group) % group_size_m
        pid_n = (tile_id % num_pid_in_group) // group_size_m

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            w = w_desc.load([k * BLOCK_K, pid_n * BLOCK_N])
            acc = tl.dot(a, w, acc)

        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        b = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        out = tl.maximum(acc + b[None, :], 0.0)
        out_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], out.to(out_desc.dtype))


def _empty_tma(rows, cols, like):
    """An empty [rows, cols] tensor whose rows start 16-byte aligned, as TMA needs (a view of a padded buffer
    when cols * element size is not a multiple of 16 bytes)."""
    align = 16 // like.element_size()
    return torch.empty((rows, triton.cdiv(cols, align) * align), device=like.device, dtype=like.dtype)[:, :cols]


def _tma_operand(t):
    """t itself if TMA can address it (unit column stride, 16-byte aligned base and rows), else such a copy."""
    if t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0:
        return t
    return _empty_tma(*t.shape, t).copy_(t)


def fused_kernel_triton_wrapper(a, w, b):
    M, K = a.shape
    N = w.shape[1]
    a, w = _tma_operand(a), _tma_operand(w)
    out = _empty_tma(M, N, a)
    num_sms = torch.cuda.get_device_properties(a.device).multi_processor_count if a.is_cuda else 4

    def grid(meta):
        return (min(num_sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)

    # Device-side TMA descriptors live in a little global scratch memory that Triton asks this allocator for.
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, device=a.device, dtype=torch.int8))
    fused_kernel_triton[grid](a, w, b.contiguous(), out, M, N, K, a.stride(0), w.stride(0), out.stride(0),
                              NUM_SMS=num_sms)
    return out.contiguous()
# </TRITON>

# <TEST>
def get_inputs():
    """The anchor shape (8192^3) on a GPU; a small odd shape (M, K, N = 64, 48, 80) on the CPU (interpreter)."""
    M, K, N = (8192, 8192, 8192) if DEVICE == "cuda" else (64, 48, 80)
    a = torch.randn(M, K, device=DEVICE, dtype=torch.float16)
    w = torch.randn(K, N, device=DEVICE, dtype=torch.float16)
    b = torch.randn(N, device=DEVICE, dtype=torch.float16)
    return [a, w, b]


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
