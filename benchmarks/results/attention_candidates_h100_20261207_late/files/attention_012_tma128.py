"""Fused Kernels: scaled dot-product attention (causal=True, scale=0.0625) -> minimum a scalar (float16)"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# <PYTHON>
TASK = {
    'id': 'ff-dfc1f7178f6b',
    'seed': 12,
    'difficulty': 'hard',
    'dtype': 'float16',
    'description': 'scaled dot-product attention (causal=True, scale=0.0625) -> minimum a scalar (float16)',
    'signature': 'float16|r4|attention(causal=True,scale=0.0625)>minimum(operand=scalar)',
    'ops': [{'op': 'attention', 'params': {'causal': True, 'scale': 0.0625}, 'inputs': ['k', 'v']},
            {'op': 'minimum', 'params': {'operand': 'scalar'}, 'inputs': ['alpha1']}],
    'inputs': [{'name': 'q', 'role': 'query', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'k', 'role': 'key', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'v', 'role': 'value', 'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'float16',
                'init': {'dist': 'normal', 'mean': 0.0, 'std': 1.0, 'clip': 4.0}},
               {'name': 'alpha1', 'role': 'scalar', 'shape': [], 'dtype': 'python_float',
                'init': {'dist': 'uniform', 'low': -1.0, 'high': 1.0}}],
    'output': {'shape': ['B', 'NH', 'S', 'D'], 'dtype': 'float16'},
    'shapes': {'test': [{'B': 1, 'NH': 3, 'S': 61, 'D': 64}, {'B': 1, 'NH': 2, 'S': 64, 'D': 64},
                        {'B': 1, 'NH': 1, 'S': 130, 'D': 128}, {'B': 1, 'NH': 1, 'S': 1031, 'D': 64}],
               'bench': [{'B': 8, 'NH': 32, 'S': 1024, 'D': 128}]},
}


def fused_kernel_pytorch(q, k, v, alpha1):
    """scaled dot-product attention (causal=True, scale=0.0625) -> minimum a scalar (float16)"""
    h = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.0625)
    h = torch.clamp(h, max=alpha1)
    return h
# </PYTHON>

# <TRITON>
from triton.tools.tensor_descriptor import TensorDescriptor


def descriptor_blocks(nargs):
    """A config's pre-launch hook (the autotuner runs it before each launch): its tiles as the host-side tensor
    descriptors' blocks (the TMA boxes) over [B NH, S, D]."""
    queries, keys = [1, nargs["BLOCK_M"], nargs["HEAD_DIM"]], [1, nargs["BLOCK_N"], nargs["HEAD_DIM"]]
    nargs["q_desc"].block_shape, nargs["out_desc"].block_shape = queries, queries
    nargs["k_desc"].block_shape, nargs["v_desc"].block_shape = keys, keys


def attention_configs():
    """Hopper tiles through TMA: (BLOCK_M queries, BLOCK_N keys a step, warps, stages, register cap), 128 queries a
    program and 8 warps (a warpgroup of 64 query rows each). Head dim 128: 128x64 capped at 128 registers with 2
    stages (96 KiB of shared memory) so that two programs share an SM, and uncapped or 3 stages one a SM. Head dim
    64: 128x64 and 128x128 (docs/tuning.md#attention-tiles)."""
    tiles = ((128, 64, 8, 2, 128), (128, 64, 8, 3, 128), (128, 64, 8, 2, None), (128, 64, 8, 3, None),
             (128, 128, 8, 2, None), (128, 128, 8, 3, None))
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s, maxnreg=r,
                          pre_hook=descriptor_blocks) for m, n, w, s, r in tiles]


def head_dim_tiles(configs, nargs, **kwargs):
    """The configs for the launch's head dim: key blocks of at most 8192 elements (128x128 for head dim 64 only;
    at head dim 128 its k and v stages leave no room for a second program, and its scores no registers)."""
    return [c for c in configs if c.kwargs["BLOCK_N"] * kwargs["HEAD_DIM"] <= 8192]


@triton.jit
def attention_step(q, k_desc, v_desc, head, start, rows, seq_len, qk_scale, row_max, row_sum, acc,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr):
    """One block of BLOCK_N keys from `start` into the online softmax: (row_max, row_sum, acc) updated. MASKED: the
    keys past seq_len and (causal) past each query are dropped (-inf scores)."""
    k = k_desc.load([head, start, 0]).reshape(BLOCK_N, HEAD_DIM)  # [BLOCK_N, HEAD_DIM], zero past S
    s = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N]
    if MASKED:
        keys = start + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        seen = (keys < seq_len)[None, :]
        if CAUSAL:
            seen = seen & (keys[None, :] <= rows[:, None])
        s = tl.where(seen, s, float('-inf'))
    new_max = tl.maximum(row_max, tl.max(s, axis=1) * qk_scale)  # log2 units
    rescale = tl.exp2(row_max - new_max)  # 0 on the first block
    p = tl.exp2(s * qk_scale - new_max[:, None])  # one multiply-add a score
    row_sum = row_sum * rescale + tl.sum(p, axis=1)
    v = v_desc.load([head, start, 0]).reshape(BLOCK_N, HEAD_DIM)
    acc = tl.dot(p.to(v.dtype), v, acc * rescale[:, None])  # rescaled, then accumulated
    return new_max, row_sum, acc


@triton.autotune(configs=attention_configs(), key=["seq_len", "HEAD_DIM"],
                 prune_configs_by={"early_config_prune": head_dim_tiles})
@triton.jit
def fused_kernel_triton(q_desc, k_desc, v_desc, alpha1, out_desc, seq_len, scale, HEAD_DIM: tl.constexpr,
                        CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """scaled dot-product attention (causal=True, scale=0.0625) -> minimum a scalar: q [B, NH, S, D], k [B, NH, S, D], v
    [B, NH, S, D] -> [B, NH, S, D].

    BLOCK_M queries of one (batch, head) a program, the keys walked BLOCK_N at a time with an online softmax (flash
    attention): first the blocks no mask touches, then the masked ones (causal: the diagonal). q, k, v and out move
    through host-side tensor descriptors (TMA) over [B NH, S, D]: a head's rows past S are zero-filled on load and
    dropped on store. Causal: the query blocks with the most keys start first. fp32 scores and accumulation, the ops
    after it in registers, one cast on store.
    """
    head = tl.program_id(1)  # batch * NH + head
    # causal: the last query block (the most keys) first, so the short ones fill the launch's tail
    block = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    first = block * BLOCK_M  # the program's first query
    rows = first + tl.arange(0, BLOCK_M)  # [BLOCK_M] the program's queries
    q = q_desc.load([head, first, 0]).reshape(BLOCK_M, HEAD_DIM)  # rows past S zero-filled
    # 1. scaled dot-product attention (causal=True, scale=0.0625): an online softmax over blocks of keys
    qk_scale = scale * 1.4426950408889634  # exp2 below: log2(e) folded in
    row_max = tl.full((BLOCK_M,), float('-inf'), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # of exp2(s qk_scale - row_max)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)  # sum of p v
    # causal: no key past the block's last query
    end = tl.minimum(seq_len, first + BLOCK_M) if CAUSAL else seq_len
    # masks only from the first block holding a key past seq_len or (causal) past the block's first query
    mask_from = tl.minimum(seq_len, first + 1) if CAUSAL else seq_len
    unmasked_end = mask_from // BLOCK_N * BLOCK_N
    for start in range(0, unmasked_end, BLOCK_N):  # keys every query of the block sees: no mask
        row_max, row_sum, acc = attention_step(q, k_desc, v_desc, head, start, rows, seq_len, qk_scale, row_max,
                                               row_sum, acc, HEAD_DIM, BLOCK_N, CAUSAL, False)
    for start in range(unmasked_end, end, BLOCK_N):  # (causal) the diagonal blocks, the block past seq_len: masked
        row_max, row_sum, acc = attention_step(q, k_desc, v_desc, head, start, rows, seq_len, qk_scale, row_max,
                                               row_sum, acc, HEAD_DIM, BLOCK_N, CAUSAL, True)
    h = acc / row_sum[:, None]
    # 2. minimum a scalar: min(x, y)
    h = tl.minimum(h, alpha1)
    out_desc.store([head, first, 0], h.to(out_desc.dtype).reshape(1, BLOCK_M, HEAD_DIM))  # rows past S dropped


def fused_kernel_triton_wrapper(q, k, v, alpha1):
    """q [B, NH, S, D], k [B, NH, S, D], v [B, NH, S, D], alpha1 -> [B, NH, S, D]: allocate, launch."""
    q = q.contiguous()
    k = k.contiguous()
    v = v.contiguous()
    out = torch.empty_like(q)
    seq_len, head_dim = q.shape[-2:]
    scale = 0.0625
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"head dim {head_dim}: the kernel takes powers of two from 16")
    heads = q.numel() // (seq_len * head_dim)  # B * NH
    # [B NH, S, D] views; each config's pre-hook sets the blocks (descriptor_blocks)
    q_desc, k_desc, v_desc, out_desc = [
        TensorDescriptor(x, shape=[heads, seq_len, head_dim], strides=[seq_len * head_dim, head_dim, 1],
                         block_shape=[1, 16, head_dim]) for x in (q, k, v, out)]
    grid = lambda meta: (triton.cdiv(seq_len, meta["BLOCK_M"]), heads)
    fused_kernel_triton[grid](q_desc, k_desc, v_desc, alpha1, out_desc, seq_len, scale, HEAD_DIM=head_dim, CAUSAL=True)
    return out
# </TRITON>

# <TEST>
def get_inputs():
    """One call's arguments, drawn like the task's: the bench shape on a GPU, a test shape on the CPU."""
    dims = {'B': 8, 'NH': 32, 'S': 1024, 'D': 128} if DEVICE == "cuda" else {'B': 1, 'NH': 3, 'S': 61, 'D': 64}
    q = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float16)
    k = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float16)
    v = (torch.randn((dims['B'], dims['NH'], dims['S'], dims['D']), device=DEVICE).clamp(-4.0, 4.0)).to(torch.float16)
    alpha1 = float(torch.rand((), device=DEVICE) * 2.0 + -1.0)
    return [q, k, v, alpha1]


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
