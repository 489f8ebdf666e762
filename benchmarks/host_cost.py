"""Host time per call of a kernel file's wrapper: bare, then under the timer's launch monitor and stack watch.

    PYTHONPATH=src python benchmarks/host_cost.py FILE      # on a CUDA GPU

The median wall time of 3,000 calls (the GPU synchronized every 20), at the file's own get_inputs(). A
call whose host time is near or above its GPU time is host-bound: its CUDA-event time follows the host.
"""
import importlib.util
import sys
import time

import torch

path = sys.argv[1]
spec = importlib.util.spec_from_file_location("candidate", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
args = module.get_inputs()


def host_ms(fn, n=3000):
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
    times.sort()
    return round(times[len(times) // 2] * 1e3, 4)


print("bare wrapper", host_ms(module.fused_kernel_triton_wrapper))
from fusionforge.verify.hostguard import StackWatch  # noqa: E402
from fusionforge.verify.launches import LaunchMonitor  # noqa: E402

monitor = LaunchMonitor()
monitor.install()
print("launch monitor", host_ms(module.fused_kernel_triton_wrapper))
watch = StackWatch(monitor, path)
watch.install()
print("monitor + stack watch", host_ms(watch.watched(module.fused_kernel_triton_wrapper)))
