"""The roofline: the device's measured ceilings, cached per device, and the floor time of a task.

floor = max(bytes / copy bandwidth, FLOPs / matmul rate at the dtype). Bytes are the fewest a fused
kernel must move (each input read once, each output written once); the copy bandwidth counts bytes
read plus bytes written of a large device-to-device copy; matmul rates come from PyTorch's own
matmul (cuBLAS) at 8192^3 (fp16, bf16) and 4096^3 (fp32 with TF32 off, and TF32). The float32
ceiling is the faster of two ways that keep float32 accuracy: cuBLAS's fp32 matmul, or three TF32
tensor-core passes (a third of the TF32 rate), which the code generator's ``tf32x3`` variant uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CACHE = Path(os.environ.get("FUSIONFORGE_CACHE", Path.home() / ".cache" / "fusionforge")) / "device_rates.json"
RATES = ("copy_GBs", "matmul_TFLOPs_float16", "matmul_TFLOPs_bfloat16", "matmul_TFLOPs_float32", "matmul_TFLOPs_tf32")


def _copy_GBs() -> float:
    import torch
    from triton.testing import do_bench

    src = torch.empty(1024**3, dtype=torch.float16, device="cuda").normal_()  # 2 GiB
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * src.numel() * 2 / copy_ms / 1e6  # bytes read + written


def measure_rates() -> dict:
    import torch
    from triton.testing import do_bench

    rates = {"copy_GBs": _copy_GBs()}
    previous = torch.backends.cuda.matmul.allow_tf32
    try:  # name, dtype, n, TF32 allowed
        for name, dtype, n, tf32 in (("float16", "float16", 8192, False), ("bfloat16", "bfloat16", 8192, False),
                                     ("float32", "float32", 4096, False), ("tf32", "float32", 4096, True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
            b = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
            ms = do_bench(lambda a=a, b=b: a @ b, warmup=50, rep=300, return_mode="median")
            rates[f"matmul_TFLOPs_{name}"] = 2 * n**3 / ms / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return rates


def device_rates(refresh: bool = False) -> dict:
    """The current GPU's ceilings, measured once and cached (keyed by device, torch and triton)."""
    import torch
    import triton

    key = f"{torch.cuda.get_device_name(0)}|torch {torch.__version__}|triton {triton.__version__}"
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if refresh or not set(RATES) <= set(cache.get(key, {})):
        cache[key] = measure_rates()
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(CACHE)
    return {"device_key": key, **cache[key]}


def matmul_TFLOPs(dtype: str, rates: dict) -> float:
    """The matmul ceiling at ``dtype``'s accuracy (float32: cuBLAS fp32 or a third of TF32, the faster)."""
    if dtype == "float32":
        return max(rates["matmul_TFLOPs_float32"], rates.get("matmul_TFLOPs_tf32", 0.0) / 3)
    return rates[f"matmul_TFLOPs_{dtype}"]


def floor_ms(nbytes: float, flops: float, dtype: str, rates: dict) -> float:
    memory = nbytes / (rates["copy_GBs"] * 1e9) * 1e3
    compute = flops / (matmul_TFLOPs(dtype, rates) * 1e12) * 1e3 if flops else 0.0
    return max(memory, compute)
