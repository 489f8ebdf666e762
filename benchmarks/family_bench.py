"""`fusionforge bench` over generated tasks of the new families, written by the built-in code generator.

    PYTHONPATH=src python benchmarks/family_bench.py --family scan,loss [--count 24] [--first 0] [--jobs 8]
                                                     [--out family_bench.json] [--tuning LOSS_TILE=8192 ...]

Per family: seeds first..first+count-1 of that family (dtype drawn by each seed), one file each; every file
checked and timed at its bench shape against eager and torch.compile (bench_files, the timing alone on the
GPU); ``--tuning`` sets constants of fusionforge.codegen.tuning first (an A/B of a tile size). The summary per
family: files passing, the fraction faster than eager (beyond the spread), the geometric mean of the speedups
over eager and over torch.compile, and the mean fraction of the roofline floor.
"""

import argparse
import datetime
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summary(rows: list[dict]) -> dict:
    timed = [r for r in rows if r.get("speedup")]
    return {"files": len(rows), "passed": sum(r["status"] in ("pass", "faster", "slower") for r in rows),
            "status": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
            "faster_than_eager": sum(bool(r.get("faster")) for r in rows) / max(len(rows), 1),
            "geomean_vs_eager": geomean([r["speedup"] for r in timed]),
            "geomean_vs_compile": geomean([r["speedup_vs_compile"] for r in timed if r.get("speedup_vs_compile")]),
            "mean_roofline_fraction": (sum(r["roofline_fraction"] for r in timed if r.get("roofline_fraction"))
                                       / max(len([r for r in timed if r.get("roofline_fraction")]), 1))}


def main() -> int:
    import torch
    import triton

    from fusionforge import codegen
    from fusionforge.bench import bench_files
    from fusionforge.tasks import TaskGenerator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, help="comma-separated families")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--out", default="family_bench.json")
    parser.add_argument("--keep", help="a folder to keep the kernel files in")
    parser.add_argument("--tuning", nargs="*", default=[], metavar="NAME=INT", help="tuning constants to set")
    args = parser.parse_args()
    from fusionforge.codegen import tuning

    for item in args.tuning:
        name, _, value = item.partition("=")
        if not hasattr(tuning, name):
            parser.error(f"fusionforge.codegen.tuning has no {name}")
        setattr(tuning, name, int(value))
    start = time.perf_counter()
    folder = Path(args.keep or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    tasks, paths = [], []
    for family in args.family.split(","):
        for seed in range(args.first, args.first + args.count):
            task = TaskGenerator().generate(seed, family=family)
            path = folder / f"{family}_{seed:03d}_fused_kernels.py"
            path.write_text(codegen.generate(task))
            tasks.append(task)
            paths.append(path)

    rows: list[dict | None] = [None] * len(paths)

    def write_report() -> dict:
        """The report of the files done so far (written after each one: a run cut off keeps what it timed)."""
        done_rows = [r for r in rows if r is not None]
        families = sorted({r["family"] for r in done_rows})
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  "python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
                  "timer": "fusionforge bench (CUDA events, L2 flushed, medians)", "tuning": args.tuning,
                  "seconds": round(time.perf_counter() - start, 1), "files_done": len(done_rows),
                  "files": len(paths),
                  "by_family": {f: summary([r for r in done_rows if r["family"] == f]) for f in families},
                  "rows": done_rows}
        Path(args.out).write_text(json.dumps(report, indent=1))
        return report

    def done(k: int, result) -> None:
        d = result.to_dict()
        t = d.get("timings") or {}
        roof = d.get("roofline") or {}
        task = tasks[k]
        rows[k] = {"file": paths[k].name, "family": task.family, "dtype": task.dtype, "description": task.description,
                   "bench": task.shapes["bench"][0], "status": d["status"],
                   "category": (d.get("failure") or {}).get("category"),
                   "message": ((d.get("failure") or {}).get("message") or "")[:300],
                   **{f"{name}_ms": v["median_ms"] for name, v in t.items()},
                   "speedup": d.get("speedup"), "speedup_vs_compile": d.get("speedup_vs_compile"),
                   "faster": d.get("faster"), "faster_than_compile": d.get("faster_than_compile"),
                   "roofline_fraction": roof.get("triton_fraction_of_floor")}
        print(f"  {paths[k].name}: {d['status']} eager x{d.get('speedup') or 0:.2f} "
              f"compile x{d.get('speedup_vs_compile') or 0:.2f} {rows[k]['message'][:120]}", flush=True)
        write_report()

    bench_files(paths, tasks, jobs=args.jobs, done=done)
    print(json.dumps(write_report()["by_family"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
