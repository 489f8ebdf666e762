"""Host time of one Triton launch, bare and under the launch monitor the checker and the timer install.

    PYTHONPATH=src python benchmarks/launch_overhead.py [--out OUT.json]

Kernels of 1, 6 and 10 arguments (one store each) are launched on a one-program grid; each figure is
the median over 400 launches of the host time until the launch returns (a synchronize every 50). The
timer flushes L2 before each timed call (about 85 us on an H100): a wrapper whose launches take longer
than that on the host leaves the GPU waiting inside the timed region.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

from fusionforge.verify.launches import LaunchMonitor


@triton.jit
def one_arg_kernel(a_ptr):
    tl.store(a_ptr, 1.0)


@triton.jit
def six_arg_kernel(a_ptr, b_ptr, c_ptr, n, m, p):
    tl.store(a_ptr, 1.0)


@triton.jit
def ten_arg_kernel(a_ptr, b_ptr, c_ptr, d_ptr, n, m, p, q, R: tl.constexpr, S: tl.constexpr):
    tl.store(a_ptr, 1.0)


def host_us(fn, calls: int = 400) -> float:
    times = []
    for k in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if k % 50 == 49:
            torch.cuda.synchronize()
    return round(statistics.median(times) * 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    a = torch.empty(16, device="cuda")
    cases = {"1 argument": lambda: one_arg_kernel[(1,)](a),
             "6 arguments": lambda: six_arg_kernel[(1,)](a, a, a, 5, 6, 7),
             "10 arguments": lambda: ten_arg_kernel[(1,)](a, a, a, a, 5, 6, 7, 8, R=4, S=8, num_warps=4),
             "torch.empty": lambda: torch.empty((3, 435, 2), device="cuda")}
    for fn in cases.values():
        fn()
    bare = {name: host_us(fn) for name, fn in cases.items()}
    LaunchMonitor().install()
    for fn in cases.values():
        fn()
    monitored = {name: host_us(fn) for name, fn in cases.items()}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
              "host_us_bare": bare, "host_us_under_monitor": monitored}
    for name in cases:
        print(f"{name:14s} bare {bare[name]:6.1f} us   under the monitor {monitored[name]:6.1f} us")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
