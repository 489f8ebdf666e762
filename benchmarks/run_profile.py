"""Where a `fusionforge run`'s time went, from its attempt logs: per kernel landed, per step, and the GPU's use.

    PYTHONPATH=src python benchmarks/run_profile.py RUNS/RUN_ID [--slices ROOT/slices.log] [--json profile.json]

Reads ``run.json``, every ``attempt_K.json`` and ``outcome.json``. Prints the wall clock (the run's creation
to its last outcome), kernels landed and their rate per hour, then per step the total seconds, the
seconds per landed kernel and the share of all attempt-seconds: implementing, checking, preparing the
timing child (beside the checks), waiting at a GPU's gate, timing (the GPU alone); the check child's own
phases (the process's start and imports, set-up, the file's import, the input sets, of which Triton's
compiles and autotuning, and the ghost replay); the timing child's own phases (from its phase marks:
inputs, torch.compile, waiting for the GPU, then with the GPU alone the file's import, warm-up, timed
rounds and the wall-clock cross-check); and, per GPU, the fraction of the
wall clock it spent timing (the only time it is certainly busy: checks share it). Runs logged before the
timing child got ready beside the checks have "warm" (a separate compile run) and "import" (the file's
import and the inputs) instead. Steps and phases a run does not have are left out.

A run made in slices (`benchmarks/gpu_run.sh`, resumed between commands) has gaps in which nothing ran:
with --slices its slices.log, the wall clock is the sum of the slices, the last one cut at the last outcome.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections import defaultdict
from pathlib import Path

STEPS = ("implement", "wait_check", "check", "prepare", "warm", "wait_timing", "timing")
CHECK_PHASES = ("start and imports", "set-up", "file import", "input sets", "compile", "autotune", "ghost replay")
CHILD_PHASES = ("inputs", "torch.compile", "waiting for the GPU", "import the file", "import", "count flops",
                "warm-up", "timed rounds", "wall-clock cross-check")


def _when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp)


def child_phases(marks: dict[str, float] | None) -> dict[str, float]:
    """Durations of the timing child's phases from the times they began (the last one ends at "done")."""
    if not marks:
        return {}
    ordered = sorted(marks.items(), key=lambda item: item[1])
    return {name: round(after - began, 3) for (name, began), (_, after) in zip(ordered, ordered[1:])}


def sliced_wall(slices_log: Path, last_end: datetime.datetime) -> float:
    """Seconds the run ran over its slices ("slice start S end E status X" lines, epoch seconds)."""
    spans = [(int(words[2]), int(words[4])) for words in map(str.split, slices_log.read_text().splitlines())
             if words[:1] == ["slice"]]
    last = last_end.timestamp()
    return sum(min(end, last) - start for start, end in spans if start < last)


def profile(folder: Path, slices_log: Path | None = None) -> dict:
    run = json.loads((folder / "run.json").read_text())
    outcomes = [json.loads(p.read_text()) for p in sorted(folder.glob("*/outcome.json"))]
    attempts = [json.loads(p.read_text()) for p in sorted(folder.glob("*/attempt_*.json"))]
    ends = [_when(o["finished"]) for o in outcomes] + [_when(a["finished"]) for a in attempts]
    if not ends:
        wall = 0.0
    elif slices_log:
        wall = sliced_wall(slices_log, max(ends))
    else:
        wall = (max(ends) - _when(run["created"])).total_seconds()
    landed = sum(o["outcome"] in ("kept", "duplicate") for o in outcomes)
    steps: dict[str, float] = defaultdict(float)
    child: dict[str, float] = defaultdict(float)
    check_child: dict[str, float] = defaultdict(float)
    timing_by_lane: dict[str, float] = defaultdict(float)
    for entry in attempts:
        steps["implement"] += entry.get("implement_seconds") or 0.0
        for name, seconds in (entry.get("phases") or {}).items():
            steps[name] += seconds
        timing_by_lane[entry.get("lane") or "default"] += (entry.get("phases") or {}).get("timing", 0.0)
        for name, seconds in (((entry.get("result") or {}).get("check") or {}).get("phases") or {}).items():
            check_child[name] += seconds
        context = ((entry.get("result") or {}).get("context") or {})
        for name, seconds in child_phases(context.get("phase_seconds")).items():
            child[name] += seconds
    total = sum(steps.values()) or 1.0
    per = max(landed, 1)
    return {
        "run": folder.name, "sliced": slices_log is not None, "tasks": len(outcomes), "attempts": len(attempts),
        "landed": landed,
        "wall_seconds": round(wall, 1), "kernels_per_hour": round(landed / wall * 3600, 1) if wall else None,
        "steps": {name: {"seconds": round(steps[name], 1), "per_kernel": round(steps[name] / per, 2),
                         "share": round(steps[name] / total, 3)} for name in STEPS},
        "check_child": {name: {"seconds": round(check_child[name], 1), "per_kernel": round(check_child[name] / per, 2)}
                        for name in CHECK_PHASES},
        "timing_child": {name: {"seconds": round(child[name], 1), "per_kernel": round(child[name] / per, 2)}
                         for name in CHILD_PHASES},
        "gpu_timing_fraction": {lane: round(seconds / wall, 3) if wall else None
                                for lane, seconds in sorted(timing_by_lane.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run's folder: runs/<run id>")
    parser.add_argument("--slices", type=Path, help="gpu_run.sh's slices.log: count only the slices' time")
    parser.add_argument("--json", type=Path, help="also write the profile here")
    args = parser.parse_args()
    if not (args.run / "run.json").exists():
        parser.error(f"{args.run} is not a run's folder (no run.json)")
    if args.slices and not args.slices.is_file():
        parser.error(f"{args.slices} does not exist")
    result = profile(args.run, args.slices)
    print(f"run {result['run']}: {result['landed']} of {result['tasks']} tasks landed in {result['attempts']} "
          f"attempts, {result['wall_seconds'] / 60:.1f} min, {result['kernels_per_hour']} kernels per hour")
    print(f"{'step':<24}{'seconds':>10}{'per kernel':>12}{'share':>8}")
    for name, row in result["steps"].items():
        if row["seconds"]:
            print(f"{name:<24}{row['seconds']:>10.1f}{row['per_kernel']:>12.2f}{row['share']:>8.1%}")
    print("inside the check child (compile and autotune are parts of the input sets):")
    for name, row in result["check_child"].items():
        if row["seconds"]:
            print(f"  {name:<22}{row['seconds']:>10.1f}{row['per_kernel']:>12.2f}")
    print("inside the timing child:")
    for name, row in result["timing_child"].items():
        if row["seconds"]:
            print(f"  {name:<22}{row['seconds']:>10.1f}{row['per_kernel']:>12.2f}")
    for lane, fraction in result["gpu_timing_fraction"].items():
        print(f"{lane}: timing {fraction:.1%} of the wall clock" if fraction is not None else f"{lane}: no wall clock")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
