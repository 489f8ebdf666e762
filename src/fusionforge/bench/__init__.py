"""Benchmarking: trustworthy GPU timing against PyTorch eager and torch.compile, with a roofline."""

from fusionforge.bench.benchmark import BenchResult, bench_file, bench_files, bench_in_lane, render_report, time_checked
from fusionforge.gpus import DeviceGate

__all__ = ["BenchResult", "DeviceGate", "bench_file", "bench_files", "bench_in_lane", "render_report", "time_checked"]
