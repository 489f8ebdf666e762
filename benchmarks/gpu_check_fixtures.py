"""Check every known-good and known-bad fixture on a CUDA GPU, at the test and bench shapes.

    PYTHONPATH=src python benchmarks/gpu_check_fixtures.py [--out results.json] [--jobs 4] [--memcheck FILE ...]
        [--only FILE ...] [--timer-cheats]

First, one after another on an idle GPU, the timer's known-bad files (tests/fixtures/bench/cheat_*.py:
honest under the checker, cheating once timed) through `bench_file`, which must fail them as `cheat`;
then a kernel with an out-of-bounds store (an illegal memory access) and a known-good file, to show that
the next check after a CUDA fault is unaffected. Then the fixtures of tests/fixtures/expected.json
(several checks at a time: these are correctness runs, nothing is timed), and each --memcheck file
(relative to tests/fixtures) checked again under compute-sanitizer, with the time it took beside the
plain check's. Prints a table and writes every verdict as JSON. Exit 1 if any verdict differs from the
expected one. With --only, just those fixtures (and the --memcheck ones) are checked, and the timer's
files only with --timer-cheats: with --jobs 1, the plain checks are the fair baseline for the memcheck
times.
"""

import argparse
import datetime
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import triton

from fusionforge.bench import bench_file
from fusionforge.verify import check_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def reasons(expected: dict) -> list[str]:
    """The substrings a bad fixture's failure message may contain (one per route a GPU or the CPU takes)."""
    reason = expected.get("reason", "")
    return [reason] if isinstance(reason, str) else reason


def verdict_row(name: str, expected: dict, verdict) -> dict:
    d = verdict.to_dict()
    got = d["failure"]["category"] if d["failure"] else None
    ok = (d["status"] == expected["status"]) and (expected["status"] == "pass" or (
        got == expected["category"] and any(reason in d["failure"]["message"] for reason in reasons(expected))))
    bench = [c for c in d["checks"] if c["label"].startswith("bench")]
    return {"file": name, "expected": expected.get("category") or "pass", "got": got or "pass", "ok": ok,
            "seconds": d["seconds"], "bench_checked": bool(bench) and all(c["passed"] for c in bench),
            "message": d["failure"]["message"][:300] if d["failure"] else "", "verdict": d}


def timer_cheats_and_fault(add, safely, expected: dict) -> None:
    """The timer's known-bad files through bench_file; then a CUDA fault and the check right after it."""
    for path in sorted((FIXTURES / "bench").glob("cheat_*.py")):
        result = bench_file(path, device="cuda").to_dict()
        failure = result["failure"] or {}
        # suspicious: `fusionforge bench` exits 1 and the attempt loop fails the attempt as a cheat
        caught = (result["status"] == "fail" and failure.get("category") == "cheat") or result["status"] == "suspicious"
        add({"file": f"bench/{path.name} (timed)", "expected": "cheat", "got": failure.get("category") or
             result["status"], "ok": caught, "seconds": result["context"].get("timing_child_seconds") or 0.0,
             "bench_checked": True, "message": (failure.get("message") or "; ".join(result["suspicious"]))[:300],
             "verdict": result})
    fault = "gpu/illegal_memory_access.py"
    add(safely(fault, {"status": "fail", "category": "runtime"}, lambda: check_file(FIXTURES / fault, device="cuda")))
    after = "good/pointwise_bias_gelu_fp16.py"
    add(safely(after + " (right after the fault)", expected[after],
               lambda: check_file(FIXTURES / after, device="cuda")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check_fixtures.json")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--memcheck", nargs="*", default=[], help="fixtures to check again under compute-sanitizer")
    parser.add_argument("--only", nargs="*", default=None, help="just these fixtures (relative to tests/fixtures)")
    parser.add_argument("--timer-cheats", action="store_true", help="with --only: the timer's files and the fault too")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("a CUDA GPU is required", file=sys.stderr)
        return 2
    manifest = FIXTURES / "expected.json"
    expected = (json.loads(manifest.read_text()) if manifest.exists() else
                {f"good/{p.name}": {"status": "pass"} for p in sorted((FIXTURES / "good").glob("*.py"))})
    # "on_gpu": a file whose route exists only on the CPU fails another way on a GPU (its entry says how)
    expected = {name: {**entry, **entry.get("on_gpu", {})} for name, entry in expected.items()}
    props = torch.cuda.get_device_properties(0)
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": props.name, "torch": torch.__version__, "triton": triton.__version__,
               "cuda": torch.version.cuda, "rows": []}
    rows = summary["rows"]

    def add(row: dict) -> None:
        """Print a row as it is final and keep the JSON on disk up to date (a cut-short run keeps its rows)."""
        if row["file"] in expected and expected[row["file"]].get("category") == "memory":
            # a GPU check without compute-sanitizer cannot see a stray access that does not fault
            row["ok"], row["note"] = None, "plain GPU check: informational; the --memcheck row is the verdict"
        rows.append(row)
        mark = {True: "ok ", False: "BAD", None: "---"}[row["ok"]]
        print(f"{mark} {row['file']:<52} expected {row['expected']:<9} got {row['got']:<9} {row['seconds']:6.1f}s "
              f"{'bench shape checked' if row.get('bench_checked') else ''}  {row['message'][:90]}", flush=True)
        summary.update(files=sum(r["ok"] is not None for r in rows), as_expected=sum(r["ok"] is True for r in rows))
        Path(args.out).write_text(json.dumps(summary, indent=1))

    def safely(name: str, expected_entry: dict, check) -> dict:
        try:
            return verdict_row(name, expected_entry, check())
        except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
            return {"file": name, "expected": expected_entry.get("category") or "pass", "got": "error", "ok": False,
                    "seconds": 0.0, "message": f"{type(e).__name__}: {e}"}

    def run(name: str) -> dict:
        timeout = 60 if expected[name].get("category") == "timeout" else 600
        return safely(name, expected[name], lambda: check_file(FIXTURES / name, device="cuda", timeout=timeout))

    if args.only is None or args.timer_cheats:
        timer_cheats_and_fault(add, safely, expected)
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(run, sorted(expected) if args.only is None else args.only):
            add(row)
    plain = {r["file"]: r for r in rows}
    for name in args.memcheck:
        expected_entry = expected.get(name, {"status": "pass"})
        verdicts: list = []

        def checked(name=name, verdicts=verdicts):
            verdicts.append(check_file(FIXTURES / name, device="cuda", timeout=900, memcheck=True))
            return verdicts[-1]

        row = safely(f"{name} (--memcheck)", expected_entry, checked)
        row["plain_seconds"] = plain.get(name, {}).get("seconds")
        row["report"] = verdicts[-1].output_tail[:4000] if verdicts else None
        add(row)
    print(f"{summary['as_expected']}/{summary['files']} verdicts as expected on {props.name}")
    return 0 if summary["as_expected"] == summary["files"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
