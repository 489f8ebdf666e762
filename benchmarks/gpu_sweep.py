"""The built-in code generator on a GPU at bench shapes: checks in parallel, timing one file at a time.

    PYTHONPATH=src python benchmarks/gpu_sweep.py ROOT [--first 0 --count 200 | --seeds 3,8,13] [--jobs 12]
                                                  [--budget 540] [--stage check|time|all]
    python benchmarks/gpu_sweep.py ROOT --summary OUT.json [--tf32-TFLOPs RATE]
    python benchmarks/gpu_sweep.py --summary OUT.json --from SUMMARY.json...
    python benchmarks/gpu_sweep.py --summary OUT.json --run runs/RUN

check: every seed, --jobs at a time: the generator's first-attempt file goes to ROOT/files/ and is
       checked on the GPU (`check_file`, which compiles its kernels at the bench shape into Triton's
       on-disk cache). One JSON per seed in ROOT/check/.
time:  first, a check that failed while other checks shared the GPU is run again alone, and that result
       counts; then every seed whose check passed is timed, one at a time with the GPU to itself, by
       `time_checked` (the timing half of `fusionforge bench`). One JSON per seed in ROOT/time/.
Seeds with a result are skipped, so a later call on the same machine goes on where the last stopped;
no new seed starts after --budget seconds. Where PYTHONDONTWRITEBYTECODE is set, unset it and set
PYTHONPYCACHEPREFIX first: each child then reuses torch's compiled bytecode (README, Performance).
--summary: the figures from ROOT's JSONs: check pass rate, faster than eager, geometric-mean speedups
       over eager and torch.compile and median fractions of the roofline floor, by plan, matmul variant
       and dtype. With --from, instead of ROOT: the same figures over several summaries' rows, a later
       summary's row replacing an earlier one's for the same seed (sweeps of several sessions, or seeds
       timed again after a plan changed). With --run: the first attempts of a `fusionforge run` of the
       built-in implementer (the same files, checked and timed the same way).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from fusionforge.bench import roofline

MATMUL_PLANS = ("matmul",)


def file_of(root: Path, seed: int) -> Path:
    return root / "files" / f"{seed:04d}_fused_kernels.py"


def check_one(root: Path, seed: int, deadline: float, device: str, alone: bool = False) -> dict | None:
    """Write and check one seed's file; None when the budget ran out first."""
    if time.time() > deadline:
        return None
    from fusionforge.codegen import UnsupportedTask, resolve, write
    from fusionforge.tasks import TaskGenerator
    from fusionforge.verify import check_file

    task = TaskGenerator().generate(seed)
    row = {"seed": seed, "task": task.id, "difficulty": task.difficulty, "dtype": task.dtype,
           "description": task.description, "alone": alone}
    try:
        plan = resolve(task)
    except UnsupportedTask as e:
        row.update(status="refused", message=str(e))
        return _save(root / "check" / f"{seed:04d}.json", row)
    row.update(plan=plan.kind, variant=plan.variant)
    path = file_of(root, seed)
    path.write_text(write(plan))
    verdict = check_file(path, task=task, device=device, timeout=600)
    row.update(status="pass" if verdict.passed else verdict.failure.category, check_seconds=round(verdict.seconds, 2),
               message=verdict.failure.message[:400] if verdict.failure else "", verdict=verdict.to_dict())
    return _save(root / "check" / f"{seed:04d}.json", row)


def time_one(root: Path, checked: dict, device: str) -> dict:
    from fusionforge.bench import time_checked
    from fusionforge.tasks import TaskGenerator
    from fusionforge.verify import Verdict

    task = TaskGenerator().generate(checked["seed"])
    start = time.perf_counter()
    result = time_checked(Verdict.from_dict(checked["verdict"]), file_of(root, checked["seed"]), task=task,
                          timeout=600, device=device)
    row = {"seed": checked["seed"], "seconds": round(time.perf_counter() - start, 2), "result": result.to_dict()}
    return _save(root / "time" / f"{checked['seed']:04d}.json", row)


def _save(path: Path, row: dict) -> dict:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(path)
    return row


def _load(folder: Path) -> dict[int, dict]:
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _line(row: dict) -> str:
    return f"{row['seed']:4d} {row['difficulty']:<6} {row['dtype']:<8} {row.get('plan', '-'):<14}"


def stage_check(root: Path, seeds: list[int], jobs: int, deadline: float, device: str) -> None:
    done = _load(root / "check")
    todo = [s for s in seeds if s not in done]
    print(f"check: {len(todo)} seeds to go, {jobs} at a time", flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(check_one, root, seed, deadline, device) for seed in todo]
        for future in as_completed(futures):
            row = future.result()
            if row is not None:
                print(f"{_line(row)} check {row['status']:<8} {row.get('check_seconds', 0):6.1f}s "
                      f"{row.get('message', '')[:90]}", flush=True)


def stage_time(root: Path, seeds: list[int], deadline: float, device: str) -> None:
    from fusionforge.bench.roofline import device_rates

    checked = _load(root / "check")
    for seed in seeds:
        row = checked.get(seed)
        if row and row["status"] not in ("pass", "refused") and not row["alone"] and time.time() < deadline:
            checked[seed] = check_one(root, seed, deadline, device, alone=True)
            print(f"{_line(row)} checked again alone: {checked[seed]['status']}", flush=True)
    if device == "cuda":
        print("device rates:", device_rates(), flush=True)
    timed = _load(root / "time")
    for seed in seeds:
        row = checked.get(seed)
        if row is None or row["status"] != "pass" or seed in timed:
            continue
        if time.time() > deadline:
            break
        d = time_one(root, row, device)["result"]
        speed = (f"x{d['speedup']:.2f} eager x{d['speedup_vs_compile']:.2f} compile, "
                 f"{d['roofline']['triton_fraction_of_floor']:.0%} of floor" if d["timed"] else "")
        print(f"{_line(row)} {d['status']:<10} {speed} {(d['failure'] or {}).get('message', '')[:80]}", flush=True)


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def figures(rows: list[dict]) -> dict:
    """Counts and speed figures of a group of seeds (rows joined from check/ and time/)."""
    timed = [r for r in rows if r.get("timed")]
    return {
        "tasks": len(rows),
        "check_pass": sum(r["status"] == "pass" for r in rows),
        "timed": len(timed),
        "faster_than_eager": sum(r["faster"] for r in timed),
        "faster_than_compile": sum(r["faster_than_compile"] for r in timed),
        "geomean_vs_eager": geomean([r["speedup"] for r in timed]),
        "geomean_vs_compile": geomean([r["speedup_vs_compile"] for r in timed]),
        **{f"median_{k}_fraction_of_floor": statistics.median([r[f"{k}_fraction"] for r in timed]) if timed else None
           for k in ("triton", "compile", "eager")},
    }


def refloor(d: dict, tf32_TFLOPs: float) -> None:
    """Judge a float32 result again with the three-pass TF32 ceiling, for results timed before the roofline
    knew it (their floor counted cuBLAS fp32 only, so a tf32x3 kernel looked faster than physics)."""
    r = d["roofline"]
    if r["dtype"] != "float32" or not r["flops"]:
        return
    rates = {"copy_GBs": r["copy_GBs"], "matmul_TFLOPs_float32": r["matmul_TFLOPs"], "matmul_TFLOPs_tf32": tf32_TFLOPs}
    floor = roofline.floor_ms(r["bytes"], r["flops"], "float32", rates)
    r.update(floor_ms=floor, matmul_TFLOPs=roofline.matmul_TFLOPs("float32", rates),
             **{f"{k}_fraction_of_floor": floor / d["timings"][k]["median_ms"] for k in ("eager", "compile", "triton")})
    if d["timings"]["triton"]["median_ms"] >= 0.95 * floor:
        d["suspicious"] = [s for s in d["suspicious"] if "under the roofline floor" not in s]
    if d["status"] == "suspicious" and not d["suspicious"]:
        d["status"] = "pass" if d["faster"] else "fail"


def _row(meta: dict, d: dict | None, tf32_TFLOPs: float | None = None) -> dict:
    """A summary row: the seed's facts (``meta``) joined with its timing result (a BenchResult dict) if any."""
    row = {k: meta.get(k) for k in ("seed", "task", "difficulty", "dtype", "plan", "variant", "description",
                                    "status", "message")}
    if d is None:
        return row
    if tf32_TFLOPs and d["timed"]:
        refloor(d, tf32_TFLOPs)
    clean = not d["suspicious"]
    row.update(bench_status=d["status"], timed=d["timed"], faster=d["faster"] and clean,
               faster_than_compile=d["faster_than_compile"] and clean)
    if d["timed"]:
        r = d["roofline"]
        row.update(speedup=d["speedup"], speedup_vs_compile=d["speedup_vs_compile"],
                   **{f"{k}_ms": v["median_ms"] for k, v in d["timings"].items()}, floor_ms=r["floor_ms"],
                   **{f"{k}_fraction": r[f"{k}_fraction_of_floor"] for k in ("eager", "compile", "triton")},
                   suspicious=d["suspicious"])
    return row


def summary(root: Path, out: Path, tf32_TFLOPs: float | None = None) -> dict:
    checked, timed = _load(root / "check"), _load(root / "time")
    rows, context = [], None
    for seed, c in sorted(checked.items()):
        d = timed[seed]["result"] if seed in timed else None
        context = context or (d or {}).get("context")
        rows.append(_row(c, d, tf32_TFLOPs))
    result = {"context": context, "seeds": sorted(checked), "tf32_TFLOPs_for_float32_floors": tf32_TFLOPs,
              **report(rows)}
    out.write_text(json.dumps(result, indent=1))
    return result


def run_summary(run: Path, out: Path) -> dict:
    """The same figures from a ``fusionforge run`` of the built-in implementer (its folder under runs/): each
    task's first attempt is the generator's first variant (logged with the attempt; a log from before the variant
    was logged has the default), checked and timed as a sweep would."""
    from fusionforge.codegen import resolve
    from fusionforge.tasks import FusionTask

    rows, context = [], None
    for folder in sorted(p for p in run.iterdir() if (p / "attempt_1.json").exists()):
        task = FusionTask.from_dict(json.loads((folder / "task.json").read_text()))
        entry = json.loads((folder / "attempt_1.json").read_text())
        d = entry["result"]
        check_failure = d["check"]["failure"] if d else entry["failure"]
        meta = {"seed": task.seed, "task": task.id, "difficulty": task.difficulty, "dtype": task.dtype,
                "plan": resolve(task).kind, "variant": entry.get("variant") or resolve(task).variant,
                "description": task.description, "status": "pass" if not check_failure else check_failure["category"],
                "message": (check_failure or {}).get("message", "")[:400]}
        context = context or (d or {}).get("context")
        rows.append(_row(meta, d if d and not check_failure else None))
    result = {"context": context, "run": str(run), "seeds": [r["seed"] for r in rows], **report(rows)}
    out.write_text(json.dumps(result, indent=1))
    return result


def combine(out: Path, summaries: list[Path]) -> dict:
    """One report from several summaries' rows; for a seed in more than one, the later summary's row counts."""
    rows: dict[int, dict] = {}
    for path in summaries:
        rows.update({r["seed"]: r for r in json.loads(path.read_text())["rows"]})
    result = {"sources": [str(p) for p in summaries], **report([rows[s] for s in sorted(rows)])}
    out.write_text(json.dumps(result, indent=1))
    return result


def report(rows: list[dict]) -> dict:
    memory = [r for r in rows if r.get("plan") not in MATMUL_PLANS]
    return {
        "all": figures(rows),
        "memory_bound": figures(memory),
        "matmul_rooted": figures([r for r in rows if r.get("plan") in MATMUL_PLANS]),
        "by_plan": {p: figures([r for r in rows if r.get("plan") == p]) for p in sorted({r.get("plan") for r in rows})},
        "by_matmul_variant": {v: figures([r for r in rows if r.get("plan") in MATMUL_PLANS and r.get("variant") == v])
                              for v in sorted({r.get("variant") for r in rows if r.get("plan") in MATMUL_PLANS})},
        "by_dtype": {d: figures([r for r in rows if r["dtype"] == d]) for d in ("float32", "float16", "bfloat16")},
        "not_passing_check": [r for r in rows if r["status"] != "pass"],
        "not_faster": [r for r in rows if r.get("timed") and not r["faster"]],
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, nargs="?", help="the sweep's folder (not with --from)")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seeds", help="a comma-separated list of seeds instead of --first/--count")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds after which no new seed starts")
    parser.add_argument("--stage", choices=("check", "time", "all"), default="all")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: checks through Triton's interpreter, nothing warmed or timed (a dry run)")
    parser.add_argument("--summary", type=Path, help="write the figures from ROOT to this JSON file and stop")
    parser.add_argument("--run", type=Path, metavar="RUN", help="with --summary, instead of ROOT: the first attempts "
                        "of a `fusionforge run` (its folder under runs/)")
    parser.add_argument("--from", dest="sources", type=Path, nargs="+", metavar="SUMMARY",
                        help="with --summary, instead of ROOT: combine these summaries (a later one's row wins)")
    parser.add_argument("--tf32-TFLOPs", type=float, help="with --summary: judge float32 results timed before the "
                        "roofline measured TF32 again, with this TF32 rate (measured on the same machine)")
    args = parser.parse_args()
    if (args.root is None) == (args.summary is None or (args.sources is None and args.run is None)):
        parser.error("give ROOT, or --summary with --from or --run")
    if args.summary:
        result = (combine(args.summary, args.sources) if args.sources
                  else run_summary(args.run, args.summary) if args.run
                  else summary(args.root, args.summary, args.tf32_TFLOPs))
        print(json.dumps({k: v for k, v in result.items() if k in ("all", "memory_bound", "matmul_rooted")}, indent=1))
        return 0
    for folder in ("files", "check", "time"):
        (args.root / folder).mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else list(range(args.first, args.first + args.count)))
    if args.stage in ("check", "all"):
        stage_check(args.root, seeds, args.jobs, deadline, args.device)
    if args.stage in ("time", "all"):
        stage_time(args.root, seeds, deadline, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
