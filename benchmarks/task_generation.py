"""Sample fusion tasks and report validity, diversity, coverage and throughput.

    python benchmarks/task_generation.py [--count 10000] [--out benchmarks/results/task_generation.json]

Seeds 0..count-1 with difficulty and dtype chosen by each seed. Throughput is measured on one
thread and includes the degeneracy screen. Each task is then re-checked independently: at every
test shape the PyTorch function (task dtype) and the float64 reference must run and be finite.
Exit code 1 if any target is missed (invalid > 0, distinct signatures < 95%, an op never used).
"""

import argparse
import collections
import datetime
import json
import platform
import sys
import time

import torch

from fusionforge import __version__
from fusionforge import ops as catalog
from fusionforge.tasks import TaskGenerator


def recheck(task) -> str | None:
    for dims in task.shapes["test"]:
        try:
            inputs = task.make_inputs(dims, seed=99)
            out, ref = task.function(*inputs), task.reference(inputs)
        except Exception as e:  # noqa: BLE001 - any failure makes the task invalid
            return f"{type(e).__name__}: {e}"
        if not (torch.isfinite(out).all() and torch.isfinite(ref).all()):
            return f"non-finite at {dims}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--out", default="benchmarks/results/task_generation.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = TaskGenerator()
    generator.generate(0)  # import and first-call costs stay out of the rate

    tasks, start = [], time.perf_counter()
    for seed in range(args.count):
        tasks.append(generator.generate(seed))
        if (seed + 1) % 1000 == 0:
            print(f"  {seed + 1} tasks, {(seed + 1) / (time.perf_counter() - start):.0f}/s", flush=True)
    seconds = time.perf_counter() - start

    invalid = {t.seed: r for t in tasks if (r := recheck(t))}
    signatures = {t.signature for t in tasks}
    used = collections.Counter(s.op for t in tasks for s in t.steps)
    unused = sorted(set(catalog.CATALOG) - set(used))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(), "torch": torch.__version__, "fusionforge": __version__,
        "threads": torch.get_num_threads(),
        "tasks": len(tasks), "seconds": round(seconds, 2), "tasks_per_second": round(len(tasks) / seconds, 1),
        "invalid": len(invalid), "invalid_examples": dict(list(invalid.items())[:5]),
        "distinct_signatures": len(signatures), "distinct_fraction": round(len(signatures) / len(tasks), 4),
        "ops_in_catalog": len(catalog.CATALOG), "ops_used": len(used), "ops_unused": unused,
        "least_used_ops": used.most_common()[-5:],
        "by_difficulty": dict(collections.Counter(t.difficulty for t in tasks)),
        "by_dtype": dict(collections.Counter(t.dtype for t in tasks)),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in result.items() if k != "invalid_examples"}, indent=2))
    ok = not invalid and result["distinct_fraction"] >= 0.95 and not unused
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
