"""The roofline: the device's measured ceilings, cached per device, and the floor time of a task.

floor = max(bytes / copy bandwidth, FLOPs / matmul rate at the dtype). Bytes are the fewest a fused
kernel must move (each input read once, each output written once); the copy bandwidth counts bytes
read plus bytes written of a large device-to-device copy; matmul rates come from PyTorch's own
matmul (cuBLAS) at 8192^3 (fp16, bf16) and 4096^3 (fp32 with TF32 off, and TF32). The float32
ceiling is the faster of two ways that keep float32 accuracy: cuBLAS's fp32 matmul, or three TF32
tensor-core passes (a third of the TF32 rate), which the code generator's ``tf32x3`` variant uses.

A ceiling measured while other work shares the GPU is too low, and a floor made from it is too high:
honest kernels then look "past physics". So the ceilings are measured in a child process of their
own (``python -m fusionforge.bench.roofline REQUEST``), by callers that hold the GPU alone (timings'
gate), each rate SAMPLES times, interleaved; they are cached only when plausible: no other process on
the GPU (children paused for the timing, or ready and waiting for their turn, hold memory there but run
nothing, and do not count) and every rate's samples within RATE_AGREEMENT of each other. Otherwise they are measured
again (up to ATTEMPTS times); a last implausible measurement is used once, marked ``contended``, and
never cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fusionforge.verify.sandbox import idle_on_gpu, run_child

CACHE = Path(os.environ.get("FUSIONFORGE_CACHE", Path.home() / ".cache" / "fusionforge")) / "device_rates.json"
RATES = ("copy_GBs", "matmul_TFLOPs_float16", "matmul_TFLOPs_bfloat16", "matmul_TFLOPs_float32", "matmul_TFLOPs_tf32")
SAMPLES = 3
RATE_AGREEMENT = 1.10  # the largest sample of a rate over its smallest
ATTEMPTS = 3
# The matmul ceilings are cuBLAS's rates at one large size, at the clocks that size's power draw allows: a
# kernel of another shape may run at higher clocks or simply beat cuBLAS (seen on the H200: a persistent
# TMA bf16 kernel at 1.07x cuBLAS's 8192^3 rate). Work is past physics only when it is faster than the
# floor by more than this on its matmul part (still under the chip's peak: 1.25 x 680 TFLOP/s bf16 on
# an H200 whose datasheet gives 989).
MATMUL_HEADROOM = 1.25
MEASURE_TIMEOUT = 300.0


def _copy_GBs() -> float:
    import torch
    from triton.testing import do_bench

    src = torch.empty(1024**3, dtype=torch.float16, device="cuda").normal_()  # 2 GiB
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * src.numel() * 2 / copy_ms / 1e6  # bytes read + written


def _matmul_TFLOPs(dtype: str, n: int, tf32: bool) -> float:
    import torch
    from triton.testing import do_bench

    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
        b = torch.randn(n, n, device="cuda").to(getattr(torch, dtype))
        ms = do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 / ms / 1e9


def measure_samples(samples: int = SAMPLES) -> dict[str, list[float]]:
    """Every rate ``samples`` times, the rates interleaved so that a burst of other work hits one sample."""
    measures = {"copy_GBs": _copy_GBs,
                "matmul_TFLOPs_float16": lambda: _matmul_TFLOPs("float16", 8192, False),
                "matmul_TFLOPs_bfloat16": lambda: _matmul_TFLOPs("bfloat16", 8192, False),
                "matmul_TFLOPs_float32": lambda: _matmul_TFLOPs("float32", 4096, False),
                "matmul_TFLOPs_tf32": lambda: _matmul_TFLOPs("float32", 4096, True)}
    out: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(samples):
        for name, measure in measures.items():
            out[name].append(measure())
    return out


def gpu_processes(uuid: str | None = None) -> list[int] | None:
    """The process ids nvidia-smi sees on the GPU ``uuid`` (on every GPU without one), or None when it
    cannot tell. nvidia-smi lists every GPU of the machine whatever ``CUDA_VISIBLE_DEVICES`` says."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    pids = []
    for line in done.stdout.splitlines():
        pid, _, gpu = (part.strip() for part in line.partition(","))
        if pid.isdigit() and (uuid is None or gpu.removeprefix("GPU-") == uuid.removeprefix("GPU-")):
            pids.append(int(pid))
    return pids


def plausible(samples: dict[str, list[float]], others: list[int] | None) -> tuple[dict | None, str]:
    """(rates, "") when the samples are a measurement of the GPU alone, else (None, why not).

    Other work only ever lowers a rate, so a rate is its best sample; it is trusted when no other
    process holds the GPU and its samples agree within RATE_AGREEMENT.
    """
    if others:
        return None, f"other processes use the GPU (pids {', '.join(map(str, others[:5]))})"
    for name, values in samples.items():
        if not values or min(values) <= 0:
            return None, f"{name} was not measured"
        if max(values) / min(values) > RATE_AGREEMENT:
            return None, (f"{name} samples disagree ({min(values):.0f} to {max(values):.0f}): the GPU was busy with "
                          "other work")
    return {name: max(values) for name, values in samples.items()}, ""


def device_key(index: int = 0) -> str:
    import torch
    import triton

    return f"{torch.cuda.get_device_name(index)}|torch {torch.__version__}|triton {triton.__version__}"


def _measure_in_child() -> tuple[dict | None, list[int] | None, str]:
    with tempfile.TemporaryDirectory(prefix="fusionforge-rates-") as scratch:
        raw, returncode, tail = run_child("fusionforge.bench.roofline", {"out_dir": scratch}, Path(scratch), "cuda",
                                          MEASURE_TIMEOUT)
    if raw is None or "forged" in raw:
        last = raw["forged"] if raw else tail.strip().splitlines()[-1] if tail.strip() else "no output"
        return None, None, f"the measurement failed (exit {returncode}): {last}"
    return raw["samples"], raw["others"], ""


def device_rates(index: int = 0, refresh: bool = False) -> dict:
    """The ceilings of GPU ``index`` (this process's numbering; the lane's GPU, where the measuring child
    runs), measured once alone and cached (keyed by device model, torch and triton).

    Call it with the GPU to yourself (the timings' gate). A measurement that is not plausible is taken
    again; after ATTEMPTS, the last is returned with ``contended`` set (and its reason), uncached.
    """
    key = device_key(index)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if not refresh and set(RATES) <= set(cache.get(key, {})):
        return {"device_key": key, **cache[key]}
    why = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(5.0)
        samples, others, why = _measure_in_child()
        if samples is None:
            continue
        rates, why = plausible(samples, [pid for pid in others or [] if pid != os.getpid() and not idle_on_gpu(pid)])
        if rates is not None:
            cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
            cache[key] = rates
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(CACHE)
            return {"device_key": key, **rates}
    if samples is None:
        raise RuntimeError(f"could not measure the GPU's ceilings: {why}")
    return {"device_key": key, **{name: max(values) for name, values in samples.items()}, "contended": why}


def forget(key: str) -> None:
    """Drop a device's cached ceilings (a floor made from them proved wrong): they are measured again."""
    if not CACHE.exists():
        return
    cache = json.loads(CACHE.read_text())
    if cache.pop(key, None) is not None:
        tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(CACHE)


def matmul_TFLOPs(dtype: str, rates: dict) -> float:
    """The matmul ceiling at ``dtype``'s accuracy (float32: cuBLAS fp32 or a third of TF32, the faster)."""
    if dtype == "float32":
        return max(rates["matmul_TFLOPs_float32"], rates.get("matmul_TFLOPs_tf32", 0.0) / 3)
    return rates[f"matmul_TFLOPs_{dtype}"]


def floor_ms(nbytes: float, flops: float, dtype: str, rates: dict, matmul_headroom: float = 1.0) -> float:
    """The roofline floor in ms; with ``matmul_headroom``, the least time physics allows (the FLOPs at that
    multiple of the measured matmul ceiling)."""
    memory = nbytes / (rates["copy_GBs"] * 1e9) * 1e3
    compute = flops / (matmul_TFLOPs(dtype, rates) * matmul_headroom * 1e12) * 1e3 if flops else 0.0
    return max(memory, compute)


def main(request_path: str) -> int:
    """The measuring child: the samples, and which processes hold the GPU once they are taken."""
    from fusionforge.verify.sandbox import Seal

    seal = Seal()
    request = json.loads(Path(request_path).read_text())
    import torch

    samples = measure_samples()
    on_this_gpu = gpu_processes(str(torch.cuda.get_device_properties(0).uuid))
    others = [pid for pid in on_this_gpu or [] if pid != os.getpid()]
    seal.write(Path(request["out_dir"]), {"samples": samples, "others": others})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
