"""Which backend PyTorch's scaled_dot_product_attention takes at the attention files' bench shapes, and each
backend's time: the eager baseline the attention family is judged against.

    PYTHONPATH=src python benchmarks/sdpa_backends.py OUT.json

CUDA events, L2 flushed before each call, the median of 50 calls; ``choice`` is torch._fused_sdp_choice's answer
(1 flash, 2 memory-efficient, 3 cuDNN in torch 2.11).
"""

import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"008": (8, 32, 1024, 128, torch.bfloat16, True), "017": (4, 16, 4096, 128, torch.bfloat16, True),
          "003": (31, 16, 1024, 64, torch.bfloat16, True), "010": (4, 32, 4096, 64, torch.bfloat16, False),
          "005": (2, 16, 4096, 128, torch.float32, True), "019": (4, 16, 2048, 128, torch.float32, False)}


def median_ms(fn, calls: int = 50) -> float:
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    for _ in range(3):
        fn()
    pairs = []
    for _ in range(calls):
        flush.zero_()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        pairs.append((begin, end))
    torch.cuda.synchronize()
    times = sorted(b.elapsed_time(e) for b, e in pairs)
    return times[len(times) // 2]


def main() -> None:
    out = {}
    for name, (batch, heads, seq, dim, dtype, causal) in SHAPES.items():
        q, k, v = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=dtype) for _ in range(3))

        def attend(q=q, k=k, v=v, causal=causal):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        row = {"default_ms": median_ms(attend), "choice": str(torch._fused_sdp_choice(q, k, v, None, 0.0, causal))}
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel(backend):
                    row[backend.name] = median_ms(attend)
            except RuntimeError as exc:
                row[backend.name] = f"n/a: {str(exc).splitlines()[0][:80]}"
        row["default_tflops"] = 4 * batch * heads * seq * seq * dim / (2 if causal else 1) / row["default_ms"] / 1e9
        out[name] = row
        print(name, row, flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
