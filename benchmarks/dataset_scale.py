"""`data stats`, `data export` and one more kept kernel, on a synthetic data/ of N records (default 100,000).

    PYTHONPATH=src python benchmarks/dataset_scale.py [-n 100000] [--out results.json]

Writes N kernel files and their index records into a temporary data/ (the sources are the built-in
generator's files for 20 tasks, each record as large as a real one: the task, four checks, three timings),
then times, in this process: reading the index, `data stats`, `data export` as JSON lines and as a
Hugging Face-ready folder, `report`, and one `Dataset.add` at that size (the duplicate lookup reads the whole
index).
These are host-side file and Python costs; nothing here is a kernel's speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from fusionforge import cli
from fusionforge.dataset import INDEX, Dataset, code_hash
from fusionforge.implement.builtin import BuiltinImplementer
from fusionforge.tasks import TaskGenerator, classify

SOURCES = 20


def synthetic(root: Path, n: int) -> int:
    """N files and records in ``root`` (written directly, as `Dataset.add` would leave them); the index's bytes."""
    tasks = [TaskGenerator().generate(seed) for seed in range(SOURCES)]
    sources = [BuiltinImplementer().implement(task, 1, []).source for task in tasks]
    hashes = [code_hash(source) for source in sources]
    root.mkdir(parents=True)
    with open(root / INDEX, "w") as index:
        for k in range(n):
            task, source = tasks[k % SOURCES], sources[k % SOURCES]
            name = f"{k + 1:06d}_fused_kernels.py"
            (root / name).write_text(source)
            ops = [s.op for s in task.steps]
            timings = {c: {"median_ms": 0.1 * (j + 1), "p20_ms": 0.099 * (j + 1), "p80_ms": 0.101 * (j + 1),
                           "calls": 150, "wall_median_ms": 0.12 * (j + 1), "host_median_ms": 0.05}
                       for j, c in enumerate(("triton", "compile", "eager"))}
            record = {"id": f"{task.id}-{k:08x}", "file": name, "task": task.to_dict(), "description": task.description,
                      "ops": ops, "family": classify(ops).family, "dtype": task.dtype, "shapes": task.shapes,
                      "signature": f"{task.signature}#{k}", "implementer": "builtin", "model": None, "attempts": 1,
                      "run": "synthetic", "usage": {}, "checks": [{"label": f"test[{j}]", "rel_err": 1e-4,
                      "tolerance": 1e-3, "max_abs_err": 1e-3, "max_abs_tolerance": 1e-2, "torch_rel_err": 2e-4}
                      for j in range(4)], "check_device": "cuda", "timed": True, "note": "", "timings": timings,
                      "timer": "CUDA events", "flush_bytes": 268435456, "speedup": 3.0, "speedup_vs_compile": 2.0,
                      "faster_than_compile": True, "roofline": {"floor_ms": 0.05, "triton_fraction_of_floor": 0.5},
                      "device": "NVIDIA H200", "driver": "580", "torch": "2.11.0", "triton": "3.6.0",
                      "created": "2026-12-04T00:00:00+00:00", "code_hash": hashes[k % SOURCES]}
            index.write(json.dumps(record) + "\n")
    return (root / INDEX).stat().st_size


def timed(label: str, results: dict, action):
    start = time.perf_counter()
    value = action()
    results[label] = round(time.perf_counter() - start, 2)
    print(f"{label:<34}{results[label]:>8.2f} s", file=sys.stderr, flush=True)
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="records (default 100000)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    results: dict = {"records": args.n, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                     f"{platform.python_version()}",
                     "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="dataset-scale-") as scratch:
        root = Path(scratch) / "data"
        results["index_bytes"] = timed("write the synthetic data/", results, lambda: synthetic(root, args.n))
        dataset = Dataset(root)
        timed("read the index", results, dataset.records)
        with contextlib.redirect_stdout(io.StringIO()):
            timed("data stats --json", results, lambda: cli.main(["data", "stats", "--json", "--data", str(root),
                                                                   "--runs", str(Path(scratch) / "runs")]))
            timed("data export --format jsonl", results, lambda: dataset.export(Path(scratch) / "all.jsonl", "jsonl"))
            timed("data export --format hf", results, lambda: dataset.export(Path(scratch) / "hub", "hf"))
            page = ["report", "--data", str(root), "--runs", str(Path(scratch) / "runs"), "-o", f"{scratch}/r.html"]
            timed("report", results, lambda: cli.main(page))
        extra = Path(scratch) / "extra.py"
        extra.write_text((root / "000001_fused_kernels.py").read_text() + "\n# one more\n")
        record = {**json.loads((root / INDEX).read_text().splitlines()[0]), "signature": "new", "code_hash": "new"}
        timed("Dataset.add of one more kernel", results, lambda: dataset.add(extra, record))
        results["hf_bytes"] = sum(p.stat().st_size for p in (Path(scratch) / "hub").rglob("*") if p.is_file())
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
