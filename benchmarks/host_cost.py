"""Host time per call of a kernel file's wrapper: bare, then under the timer's launch monitor and stack watch.

    PYTHONPATH=src python benchmarks/host_cost.py FILE      # on a CUDA GPU

The median wall time of 3,000 calls (the GPU synchronized every 20), at the file's own get_inputs(). A
call whose host time is near or above its GPU time is host-bound: its CUDA-event time follows the host.
"""

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch


def load(path: str):
    """The kernel file at ``path`` as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def host_ms(fn, args: list, n: int = 3000) -> float:
    """The median host time of ``fn(*args)`` in ms, after 100 warm-up calls."""
    for _ in range(100):
        fn(*args)
    torch.cuda.synchronize()
    times = []
    for k in range(n):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
        if k % 20 == 19:
            torch.cuda.synchronize()
    return round(statistics.median(times) * 1e3, 5)


def main(path: str) -> int:
    from fusionforge.verify.hostguard import StackWatch
    from fusionforge.verify.launches import LaunchMonitor

    module = load(path)
    args = module.get_inputs()
    print("bare wrapper", host_ms(module.fused_kernel_triton_wrapper, args))
    monitor = LaunchMonitor()
    monitor.install()
    print("launch monitor", host_ms(module.fused_kernel_triton_wrapper, args))
    watch = StackWatch(monitor, path)
    watch.install()
    print("monitor + stack watch", host_ms(watch.watched(module.fused_kernel_triton_wrapper), args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
