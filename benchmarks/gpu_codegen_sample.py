"""Bench generated tasks on a GPU: implement with the built-in code generator, then `bench_file`.

    PYTHONPATH=src python benchmarks/gpu_codegen_sample.py --out FILE [--first 0] [--count 200] [--budget SECONDS]

Seeds first.. in order (difficulty and dtype chosen by each seed) until --count tasks are done or
the time budget is spent; writes the results after every task.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from fusionforge.bench import bench_file
from fusionforge.implement import UnsupportedTask, generate
from fusionforge.tasks import TaskGenerator


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--budget", type=float, default=3600.0)
    args = parser.parse_args()
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.first, args.first + args.count):
            if time.perf_counter() - start > args.budget:
                break
            task = TaskGenerator().generate(seed)
            row = {"seed": seed, "task": task.id, "difficulty": task.difficulty, "dtype": task.dtype,
                   "description": task.description}
            try:
                path = Path(folder) / f"{seed:04d}_fused_kernels.py"
                path.write_text(generate(task))
            except UnsupportedTask as e:
                rows.append({**row, "status": "refused", "message": str(e)})
                continue
            d = bench_file(path, task=task).to_dict()
            t, r = d["timings"], d["roofline"]
            row.update({"status": d["status"], "category": d["failure"]["category"] if d["failure"] else None,
                        "message": d["failure"]["message"][:200] if d["failure"] else "",
                        "speedup": d["speedup"], "speedup_vs_compile": d["speedup_vs_compile"],
                        **{f"{k}_ms": v["median_ms"] for k, v in t.items()},
                        **{k: v for k, v in r.items() if "fraction" in k}, "suspicious": d["suspicious"]})
            rows.append(row)
            speed = (f"x{row['speedup']:.2f} eager x{row['speedup_vs_compile']:.2f} compile, Triton "
                     f"{row['triton_fraction_of_floor']:.0%} of floor" if row.get("speedup") else row["message"][:120])
            print(f"{seed:4d} {task.difficulty:<6} {task.dtype:<8} {row['status']:<10} {speed}  "
                  f"{task.description[:70]}", flush=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - start}, indent=1))
    Path(args.out).write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - start}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
