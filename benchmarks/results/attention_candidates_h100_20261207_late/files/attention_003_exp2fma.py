"""Fused Kernels: scaled dot-product attention (causal=True, scale=0.0625) (bfloat16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-cbe3e1083357',
    'seed': 3,
    'difficulty': 'hard',
    'dtype': 'bfloat16',
    'description': 'scaled dot-product attention (causal=True, scale=0.0625) (bfloat16)',
    'signature': 'bfloat16|r4|attention(causal=True,scale=0.0625)',
    'ops': [{'op': 'attention', 'params': {'causal': True, 'scale': 0.0625}, 'inputs': ['k', 'v']}],
    'inputs': [{'name': 'q', 'role': 'query', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'k', 'role': 'key', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'v', 'role': 'value', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'bfloat16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}}],
    'output': {'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'bfloat16'},
    'shapes': {'test': [{'B': 2, 'NH': 2, 'S': 37, 'D': 64}, {'B': 1, 'NH': 2, 'S': 64, 'D': 128},
                        {'B': 1, 'NH': 2, 'S': 130, 'D': 128}, {'B': 1, 'NH': 1, 'S': 1031, 'D': 64}],
               'bench': [{'B': 31, 'NH': 16, 'S': 1024, 'D': 64}]},
}


def fused_kernel_pytorch(q, k, v):
    """scaled dot-product attention (causal=True, scale=0.0625) (bfloat16)"""
    h = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.0625)
    return h
# </PYTHON>

# <TRITON>
def attention_configs():
    """Hopper tiles: (BLOCK_M queries, BLOCK_N keys a step, warps, stages) (docs/tuning.md#attention-tiles)."""
    tiles = ((128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3),
             (128, 64, 8, 4), (64, 128, 4, 3), (128, 128, 4, 3), (64, 64, 4, 4))
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in tiles]


@triton.jit
def exp2_fma(x):
    """2^x for x <= 0 on the FMA and integer pipes, not the MUFU one (FA3/FA4's software exp2): x = j + f with j =
    round(x) (the 1.5 2^23 shift leaves j in the low mantissa bits) and f in [-0.5, 0.5], 2^f by a minimax cubic
    (relative error 7.5e-5, under bfloat16's rounding), j added to its exponent bits. x is clamped at -125, so -inf
    (a masked score) gives 2^-125, not NaN."""
    x = tl.maximum(x, -125.0)
    shifted = x + 12582912.0  # 1.5 * 2^23: round(x) in the low bits
    frac = x - (shifted - 12582912.0)  # x - round(x), in [-0.5, 0.5]
    p = 0.055171433836221695 * frac + 0.24261081218719482
    p = p * frac + 0.6932609677314758
    p = p * frac + 0.9999281167984009  # 2^frac in [0.70, 1.42]
    bits = p.to(tl.int32, bitcast=True) + (shifted.to(tl.int32, bitcast=True) << 23)  # exponent + round(x)
    return bits.to(tl.float32, bitcast=True)


@triton.autotune(configs=attention_configs(), key=["seq_len", "HEAD_DIM"])
@triton.jit
def fused_kernel_triton(q_ptr, k_ptr, v_ptr, out_ptr, seq_len, scale, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """scaled dot-product attention (causal=True, scale=0.0625): q [B, NH, S, D], k [B, NH, S, D], v [B, NH, S, D] ->
    [B, NH, S, D].

    BLOCK_M queries of one (batch, head) a program, the keys walked BLOCK_N at a time with an online softmax (flash
    attention); fp32 scores and accumulation, the ops after it in registers, one cast on store. Half the exp2s (the
    odd key columns) run on the FMA pipe (exp2_fma), beside the MUFU unit's.
    """
    head = tl.program_id(1).to(tl.int64)  # batch * NH + head
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] the program's queries
    dims = tl.arange(0, HEAD_DIM)  # [HEAD_DIM]
    mask = (rows < seq_len)[:, None]
    offsets = (head * seq_len + rows[:, None]) * HEAD_DIM + dims[None, :]  # [BLOCK_M, HEAD_DIM]
    q = tl.load(q_ptr + offsets, mask=mask, other=0.0)
    # 1. scaled dot-product attention (causal=True, scale=0.0625): an online softmax over blocks of keys
    qk_scale = scale * 1.4426950408889634  # exp2 below: log2(e) folded in
    row_max = tl.full((BLOCK_M,), float('-inf'), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # of exp2(s qk_scale - row_max)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)  # sum of p v
    # causal: no key past the block's last query
    end = tl.minimum(seq_len, (tl.program_id(0) + 1) * BLOCK_M) if CAUSAL else seq_len
    # masks only from the first block holding a key past seq_len or (causal) past the block's first query
    mask_from = tl.minimum(seq_len, tl.program_id(0) * BLOCK_M + 1) if CAUSAL else seq_len
    key_offsets = (head * seq_len + tl.arange(0, BLOCK_N)[:, None]) * HEAD_DIM + dims[None, :]
    k_ptrs, v_ptrs = k_ptr + key_offsets, v_ptr + key_offsets  # [BLOCK_N, HEAD_DIM], moved a block a step
    for start in range(0, end, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        key_inside = keys < seq_len
        k = tl.load(k_ptrs, mask=key_inside[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N]
        if start + BLOCK_N > mask_from:
            seen = key_inside[None, :]
            if CAUSAL:
                seen = seen & (keys[None, :] <= rows[:, None])
            s = tl.where(seen, s, float('-inf'))
        new_max = tl.maximum(row_max, tl.max(s, axis=1) * qk_scale)  # log2 units
        rescale = tl.exp2(row_max - new_max)  # 0 on the first block
        x = s * qk_scale - new_max[:, None]  # one multiply-add a score
        # the even columns through MUFU.EX2, the odd ones through exp2_fma: each thread holds the accumulator's
        # columns in adjacent pairs, so the split and join stay in registers
        x_even, x_odd = tl.split(x.reshape(BLOCK_M, BLOCK_N // 2, 2))
        p = tl.join(tl.exp2(x_even), exp2_fma(x_odd)).reshape(BLOCK_M, BLOCK_N)
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        v = tl.load(v_ptrs, mask=key_inside[:, None], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * rescale[:, None])  # rescaled, then accumulated
        row_max = new_max
        k_ptrs += BLOCK_N * HEAD_DIM
        v_ptrs += BLOCK_N * HEAD_DIM
    h = acc / row_sum[:, None]
    tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)


def fused_kernel_triton_wrapper(q, k, v):
    """q [B, NH, S, D], k [B, NH, S, D], v [B, NH, S, D] -> [B, NH, S, D]: allocate, launch."""
    q = q.contiguous()
    k = k.contiguous()
    v = v.contiguous()
    out = torch.empty_like(q)
    seq_len, head_dim = q.shape[-2:]
    scale = 0.0625
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"head dim {head_dim}: the kernel takes powers of two from 16")
    grid = lambda meta: (triton.cdiv(seq_len, meta["BLOCK_M"]), q.numel() // (seq_len * head_dim))
    fused_kernel_triton[grid](q, k, v, out, seq_len, scale, HEAD_DIM=head_dim, CAUSAL=True)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 31, 'NH': 16, 'S': 1024, 'D': 64} if DEVICE == "cuda" else {'B': 2, 'NH': 2, 'S': 37, 'D': 64}
    q = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    k = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    v = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.bfloat16)
    return [q, k, v]


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
