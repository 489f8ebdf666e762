"""What the interpreter's memory bounds checks cost the checker on the CPU.

    TRITON_INTERPRET=1 python benchmarks/interpreter_bounds_overhead.py [--generated 20] [--rounds 2]
        [--out benchmarks/results/interpreter_bounds_overhead_cpu.json]

Checks the good fixtures (tests/fixtures/good) and --generated files written by the built-in code
generator (seeds 0.., half of them hard, so matmuls in every dtype) with ``check_file``, each file in
both arms: "checked" (``install_gpu_semantics()`` as shipped) and "unchecked" (the same minus the bounds
checks: bf16 rounding, dots and scalar arguments only). The arm is chosen in the check's child process by
a ``sitecustomize`` module this script writes and puts on PYTHONPATH, for both arms alike; there is no
switch in the package. Per file and arm it records the wall seconds of ``check_file`` and the CPU seconds
of its child (user + system, ``RUSAGE_CHILDREN``), summed over rounds; the arms alternate order by round.
The totals count only files that pass in both arms (a file failing for another reason is listed apart).
Prints a table and writes it as JSON.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DTYPES = ("float32", "float16", "bfloat16")
ARMS = {
    "checked": "from fusionforge.verify import interpreter  # noqa: F401  imported as in the other arm\n",
    "unchecked": ("from fusionforge.verify import interpreter\n\n\n"
                  "def _without_bounds_checks():\n"
                  "    interpreter.faithful_conversions()\n"
                  "    interpreter._install_gpu_arithmetic()\n\n\n"
                  "interpreter.install_gpu_semantics = _without_bounds_checks\n"),
}


def generated_files(count: int, folder: Path) -> list[Path]:
    """Files of the built-in code generator: seeds 0..count-1, the second half hard with dtypes cycled."""
    from fusionforge.implement import UnsupportedTask, generate
    from fusionforge.tasks import TaskGenerator

    paths = []
    for seed in range(count):
        hard = seed >= count // 2
        task = TaskGenerator().generate(seed, difficulty="hard" if hard else None,
                                        dtype=DTYPES[seed % 3] if hard else None)
        try:
            source = generate(task)
        except UnsupportedTask:
            continue
        path = folder / f"{seed:03d}_{task.dtype}_{task.signature.split('|')[-1][:40]}.py"
        path.write_text(source)
        paths.append(path)
    return paths


def timed_check(path: Path, shim: Path) -> tuple[float, float, bool]:
    """(wall seconds, child CPU seconds, passed) of one check_file with the arm's shim on PYTHONPATH."""
    from fusionforge.verify import check_file

    os.environ["PYTHONPATH"] = os.pathsep.join([str(shim), str(ROOT / "src")])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    verdict = check_file(path, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, verdict.passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated", type=int, default=20, help="how many generated files (seeds 0..)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/interpreter_bounds_overhead_cpu.json"))
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("run with TRITON_INTERPRET=1: the bounds checks live in Triton's CPU interpreter", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        shims = {}
        for arm, source in ARMS.items():
            (scratch / arm).mkdir()
            (scratch / arm / "sitecustomize.py").write_text(source)
            shims[arm] = scratch / arm
        (scratch / "generated").mkdir()
        files = sorted((ROOT / "tests/fixtures/good").glob("*.py")) + generated_files(args.generated,
                                                                                     scratch / "generated")
        rows = {path.name: {"file": path.name, "wall": dict.fromkeys(ARMS, 0.0), "cpu": dict.fromkeys(ARMS, 0.0),
                            "passed": dict.fromkeys(ARMS, True)} for path in files}
        for round_ in range(args.rounds):
            order = list(ARMS) if round_ % 2 == 0 else list(reversed(ARMS))
            for path in files:
                row = rows[path.name]
                for arm in order:
                    wall, cpu, passed = timed_check(path, shims[arm])
                    row["wall"][arm] += wall
                    row["cpu"][arm] += cpu
                    row["passed"][arm] &= passed
                print(f"round {round_ + 1}: {path.name:60s} cpu checked {row['cpu']['checked']:7.2f} s, "
                      f"unchecked {row['cpu']['unchecked']:7.2f} s", flush=True)
    passing = [r for r in rows.values() if all(r["passed"].values())]
    totals = {measure: {arm: round(sum(r[measure][arm] for r in passing), 2) for arm in ARMS}
              for measure in ("wall", "cpu")}
    overhead = {measure: round(100 * (t["checked"] / t["unchecked"] - 1), 1) for measure, t in totals.items()}
    print(f"\n{'file':60s} {'cpu checked':>12s} {'cpu unchecked':>14s} {'overhead':>9s}")
    for row in passing:
        cpu = row["cpu"]
        print(f"{row['file']:60s} {cpu['checked']:12.2f} {cpu['unchecked']:14.2f} "
              f"{100 * (cpu['checked'] / cpu['unchecked'] - 1):8.1f}%")
    for measure in ("cpu", "wall"):
        t = totals[measure]
        print(f"{'total ' + measure + ' seconds':60s} {t['checked']:12.2f} {t['unchecked']:14.2f} "
              f"{overhead[measure]:8.1f}%")
    failed = {r["file"]: r["passed"] for r in rows.values() if r not in passing}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "what": "check_file over the good fixtures and generated files, with and without the bounds checks; "
                "seconds summed over rounds; cpu = the check's child process, user + system",
        "rounds": args.rounds, "files": len(files), "files_in_totals": len(passing), "totals_seconds": totals,
        "overhead_percent": overhead, "not_passing": failed,
        "rows": [{**r, "wall": {a: round(v, 2) for a, v in r["wall"].items()},
                  "cpu": {a: round(v, 2) for a, v in r["cpu"].items()}} for r in rows.values()],
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten {args.out}" + (f"; not passing, left out of the totals: {failed}" if failed else ""))
    return 1 if any(passed["unchecked"] and not passed["checked"] for passed in failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
