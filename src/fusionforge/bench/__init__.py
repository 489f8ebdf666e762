"""Benchmarking: trustworthy GPU timing against PyTorch eager and torch.compile, with a roofline."""

from fusionforge.bench.benchmark import BenchResult, bench_file, bench_files, render_report, time_checked

__all__ = ["BenchResult", "bench_file", "bench_files", "render_report", "time_checked"]
