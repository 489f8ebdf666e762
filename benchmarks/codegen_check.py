"""Implement generated tasks with the built-in code generator and check every file.

    python benchmarks/codegen_check.py [--first 0] [--count 500] [--jobs 2] [--out FILE] [--device cpu|cuda]
                                       [--variant persistent|tf32x3|tiled|...] [--family scan|loss|...]

Seeds first..first+count-1, difficulty and dtype chosen by each seed (with --family, tasks of that family;
several, comma-separated, take turns); each task's first variant, or with --variant, only the tasks that
have that variant of their plan. Reports how many pass the
checker, fail it (with their categories) or are refused (no plan yet), by plan, difficulty and dtype.
"""

import argparse
import collections
import datetime
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def one(seed: int, device: str, folder: str, variant: str | None, family: str | None) -> dict | None:
    from fusionforge.codegen import UnsupportedTask, resolve, variants, write
    from fusionforge.tasks import TaskGenerator
    from fusionforge.verify import check_file

    task = TaskGenerator().generate(seed, family=family)
    row = {"seed": seed, "task": task.id, "family": task.family, "difficulty": task.difficulty, "dtype": task.dtype,
           "signature": task.signature}
    try:
        if variant is not None and variant not in variants(task):
            return None
        plan = resolve(task, variant)
    except UnsupportedTask as e:
        return {**row, "status": "refused", "message": str(e)}
    row.update(plan=plan.kind, variant=plan.variant)
    source = write(plan)
    path = Path(folder) / f"{seed:04d}_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, device=device, timeout=600)
    failure = verdict.failure
    return {**row, "status": "pass" if verdict.passed else failure.category, "seconds": round(verdict.seconds, 2),
            "message": failure.message[:300] if failure else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seeds", help="a comma-separated list of seeds instead of --first/--count")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="benchmarks/results/codegen_check_cpu.json")
    parser.add_argument("--variant", help="the plan variant to write (default: each task's first)")
    parser.add_argument("--family", help="tasks of these families (comma-separated: seed k takes the k-th in turn)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(args.jobs) as pool:
        seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
                 else list(range(args.first, args.first + args.count)))
        rows = []
        n = len(seeds)
        families = args.family.split(",") if args.family else [None]
        turns = [families[k % len(families)] for k in range(n)]
        for k, row in enumerate(pool.map(one, seeds, [args.device] * n, [folder] * n, [args.variant] * n, turns),
                                start=1):
            if row is not None:
                rows.append(row)
            if k % 25 == 0:
                print(f"  {k}/{len(seeds)}: {dict(collections.Counter(r['status'] for r in rows))}", flush=True)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "variant": args.variant, "family": args.family,
        "seeds": args.seeds or f"{args.first}..{args.first + args.count - 1}",
        "seconds": round(time.perf_counter() - start, 1),
        "status": dict(collections.Counter(r["status"] for r in rows)),
        "by_family": {f: dict(collections.Counter(r["status"] for r in rows if r["family"] == f))
                      for f in sorted({r["family"] for r in rows})},
        "by_plan": {p: dict(collections.Counter(r["status"] for r in rows if r.get("plan") == p))
                    for p in sorted({r.get("plan", "none") for r in rows})},
        "by_difficulty": {d: dict(collections.Counter(r["status"] for r in rows if r["difficulty"] == d))
                          for d in ("easy", "medium", "hard")},
        "by_dtype": {d: dict(collections.Counter(r["status"] for r in rows if r["dtype"] == d))
                     for d in ("float32", "float16", "bfloat16")},
        "not_passing": [r for r in rows if r["status"] != "pass"],
    }
    Path(args.out).write_text(json.dumps({**summary, "rows": rows}, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "not_passing"}, indent=1))
    for r in summary["not_passing"]:
        print(r["seed"], r["status"], r["signature"], r["message"][:160])
    return 0 if summary["status"].get("pass", 0) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
