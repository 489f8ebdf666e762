"""What a run's kernels per hour would be under another gate policy, from its own step times.

    PYTHONPATH=src python benchmarks/gate_simulation.py RUNS/RUN_ID [--jobs 14] [--parent-seconds 2]
        [--timing-saving 1.0] [--json out.json]

Each landed attempt of the run gives a (check + prepare, timing) pair of seconds (its attempt log's phases).
The simulation draws 100 tasks from those pairs (20 draws) and plays them through ``--jobs`` workers on
one GPU under two policies:

- drain: a timing waits until every check in flight has ended, and no check starts while a timing
  waits (the readers-writer gate with the writer first);
- pause: a timing starts as soon as it is ready and the checks in flight stop for its duration.

It prints the kernels per hour of each policy with the run's own times, and with "quicker" times: the
check as the check child's own phases plus ``--parent-seconds`` (the parent's work once its comparisons
moved to the GPU), and the timing less ``--timing-saving`` seconds (the child's teardown). The model has
no CPU contention: its drain figure for the run's own times is the check against the measured rate.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

TASKS = 100
DRAWS = 20


def pairs(folder: Path, parent_seconds: float, timing_saving: float) -> dict[str, list[tuple[float, float]]]:
    """(work beside the GPU, exclusive GPU time) per landed attempt, as the run measured them and quicker."""
    measured, quicker = [], []
    for path in sorted(folder.glob("*/attempt_*.json")):
        entry = json.loads(path.read_text())
        phases = entry.get("phases") or {}
        if "timing" not in phases:
            continue
        child = ((entry.get("result") or {}).get("check") or {}).get("phases") or {}
        own = sum(seconds for name, seconds in child.items() if name not in ("compile", "autotune"))  # parts of
        # the input sets
        prepare = phases.get("prepare", 0.0)
        measured.append((phases["check"] + prepare, phases["timing"]))
        quicker.append((own + parent_seconds + prepare, max(0.5, phases["timing"] - timing_saving)))
    return {"measured": measured, "quicker": quicker}


def simulate(steps: list[tuple[float, float]], jobs: int, policy: str, seed: int) -> float:
    """Kernels per hour of TASKS tasks drawn from ``steps`` through ``jobs`` workers under ``policy``."""
    rng = random.Random(seed)
    tasks = [rng.choice(steps) for _ in range(TASKS)]
    clock, started, done = 0.0, 0, 0
    checking: list[list[float]] = []  # [end time, timing seconds] of the checks in flight
    ready: list[float] = []  # timing seconds of the checked tasks waiting to be timed
    while done < TASKS:
        while started < TASKS and len(checking) + len(ready) < jobs and (policy == "pause" or not ready):
            work, timing = tasks[started]
            checking.append([clock + work, timing])
            started += 1
        if ready and (policy == "pause" or not checking):
            for timing in ready if policy == "drain" else ready[:1]:
                clock += timing
                done += 1
                if policy == "pause":
                    for check in checking:
                        check[0] += timing
            ready = [] if policy == "drain" else ready[1:]
            continue
        checking.sort()
        end, timing = checking.pop(0)
        clock = end
        ready.append(timing)
    return TASKS / clock * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--jobs", type=int, default=14)
    parser.add_argument("--parent-seconds", type=float, default=2.0)
    parser.add_argument("--timing-saving", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.run / "run.json").exists():
        raise SystemExit(f"{args.run}: not a run folder (no run.json)")
    found = pairs(args.run, args.parent_seconds, args.timing_saving)
    if not found["measured"]:
        raise SystemExit(f"{args.run}: no timed attempt to learn from")
    rates = {times: {policy: round(statistics.mean(simulate(steps, args.jobs, policy, seed) for seed in range(DRAWS)))
                     for policy in ("drain", "pause")}
             for times, steps in found.items()}
    for times, by_policy in rates.items():
        print(f"{times:9s} " + "  ".join(f"{policy} {rate} per hour" for policy, rate in by_policy.items()))
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "jobs": args.jobs, "attempts": len(found["measured"]),
                                         "parent_seconds": args.parent_seconds,
                                         "timing_saving": args.timing_saving, "kernels_per_hour": rates}, indent=1))


if __name__ == "__main__":
    main()
