"""Time files with two versions of fusionforge in one call: does a change to the timer move the timings?

    git archive HEAD src | tar -x -C OLD        # the version to compare against, as a source tree
    PYTHONPATH=src python benchmarks/timer_ab.py --old OLD/src --out ab.json benchmarks/anchors/*.py
    PYTHONPATH=src python benchmarks/timer_ab.py --old OLD/src --out ab.json --check-once --jobs 12 FILES...
    PYTHONPATH=src python benchmarks/timer_ab.py --old OLD/src --out ab.json --from-run gpu-run --limit 20

Each file is benched (`bench_file`, check and timing child) by the old source tree and by this one, the
order alternating from file to file so that drift hits both alike. Per file it prints the medians of
eager, torch.compile and Triton under each version, the new/old ratio of each and the measured spread
(the mean relative 20-80 band of the two timings): a ratio inside 1 +- spread is no move. For the new
version it also prints the timed-output verification's cost: the seconds spent verifying timed calls
plus the GPU seconds of refilling inputs, over the timing child's wall time. With --check-once, each file
is checked once, by this version, --jobs at a time, and only the timing halves (`time_checked`) are
compared: the check is the same under both versions, and the costly part of a bench.

With --from-run ROOT (a `fusionforge run` folder with data/ and runs/), the new timings are the ones the run
itself took, beside its checks and other timings, and only the old version times the kept files again (from the
verdicts in the run's attempt logs): does the whole pipeline, not only the timer, leave the timings where the
old one alone puts them? The new timings come first there, so the order cannot alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ("import json, sys; from fusionforge.bench import bench_file; "
         "print('RESULT ' + json.dumps(bench_file(sys.argv[1]).to_dict()))")
# --check-once: the timing half alone, for a verdict passed as JSON
TIME = ("import json, sys; from fusionforge.bench import time_checked; from fusionforge.verify import Verdict; "
        "verdict = Verdict.from_dict(json.loads(open(sys.argv[2]).read())); "
        "print('RESULT ' + json.dumps(time_checked(verdict, sys.argv[1], device='cuda').to_dict()))")


def bench(source: Path, path: Path, verdict: Path | None = None) -> dict:
    """bench_file of ``path`` by the version in ``source``; only its timing half, given a ``verdict`` file."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-c", BENCH, str(path)] if verdict is None else \
        [sys.executable, "-c", TIME, str(path), str(verdict)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"status": "error", "message": (done.stderr or done.stdout).strip()[-500:]}


def compare(old: dict, new: dict) -> dict:
    row: dict = {"old_status": old.get("status"), "new_status": new.get("status")}
    if not (old.get("timings") and new.get("timings")):
        return row
    for version, result in (("old", old), ("new", new)):
        failure = result.get("failure") or (result.get("check") or {}).get("failure")
        if failure or result.get("message"):
            row[f"{version}_failure"] = (failure or {}).get("message") or result.get("message")
    for name in ("eager", "compile", "triton"):
        a, b = old["timings"][name], new["timings"][name]
        spread = ((a["p80_ms"] - a["p20_ms"]) / a["median_ms"] + (b["p80_ms"] - b["p20_ms"]) / b["median_ms"]) / 2
        ratio = b["median_ms"] / a["median_ms"]
        row[name] = {"old_ms": a["median_ms"], "new_ms": b["median_ms"], "ratio": ratio, "spread": spread,
                     "within_spread": abs(ratio - 1) <= spread}
    context = new.get("context", {})
    cost = (context.get("verify_seconds") or 0) + (context.get("refill_gpu_seconds") or 0)
    row["verification"] = {"verify_seconds": context.get("verify_seconds"),
                           "refill_gpu_seconds": context.get("refill_gpu_seconds"),
                           "verified_calls": context.get("verified_calls"), "calls": context.get("calls"),
                           "timing_child_seconds": context.get("timing_child_seconds"),
                           "fraction": cost / context["timing_child_seconds"] if context.get("timing_child_seconds")
                           else None}
    return row


def check_all(paths: list[Path], jobs: int, scratch: Path) -> dict[Path, Path | None]:
    """Check every file (this version, ``jobs`` at a time); each passing file's verdict as a JSON file."""
    from fusionforge.verify import check_file

    def one(k: int) -> Path | None:
        verdict = check_file(paths[k], timeout=600)
        if not verdict.passed:
            return None
        saved = scratch / f"{k}.json"
        saved.write_text(json.dumps(verdict.to_dict()))
        return saved

    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(paths, pool.map(one, range(len(paths)))))


def from_run(root: Path, limit: int, scratch: Path) -> list[tuple[Path, Path, dict]]:
    """The first ``limit`` timed kernels kept by the run in ``root``: (kept file, verdict file, new result)."""
    picked = []
    for line in (root / "data" / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        if not record.get("timed"):
            continue
        attempt_log = next((root / "runs" / record["run"]).glob(f"*-{record['task']['id']}"))
        result = json.loads((attempt_log / f"attempt_{record['attempts']}.json").read_text())["result"]
        kept = root / "data" / record["file"]
        verdict = scratch / f"{kept.stem}.json"
        verdict.write_text(json.dumps({**result["check"], "file": str(kept)}))
        picked.append((kept, verdict, result))
        if len(picked) == limit:
            break
    return picked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--old", type=Path, required=True, help="the old version's src folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check-once", action="store_true", help="check every file first with this version, "
                        "--jobs at a time, then time each passing file with both versions (the timing halves)")
    parser.add_argument("--jobs", type=int, default=8, help="checks at a time with --check-once (default 8)")
    parser.add_argument("--from-run", type=Path, help="a run's folder: its timings are the new ones (no FILES)")
    parser.add_argument("--limit", type=int, default=20, help="kept kernels to time with --from-run (default 20)")
    args = parser.parse_args()
    if bool(args.files) == bool(args.from_run):
        parser.error("give FILES or --from-run, not both")
    scratch = tempfile.TemporaryDirectory(prefix="timer-ab-")
    recorded: dict[Path, dict] = {}
    verdicts: dict[Path, Path | None] = {path: None for path in args.files}
    if args.from_run:
        for kept, verdict, result in from_run(args.from_run, args.limit, Path(scratch.name)):
            verdicts[kept], recorded[kept] = verdict, result
    elif args.check_once:
        verdicts = check_all(args.files, args.jobs, Path(scratch.name))
    rows = []
    for k, path in enumerate(verdicts):
        order = [("old", args.old), ("new", ROOT / "src")]
        if args.check_once and verdicts[path] is None:
            rows.append({"file": path.name, "old_status": "fail", "new_status": "fail"})
            print(f"{path.name:<34} failed the check", flush=True)
            continue
        if path in recorded:
            results = {"old": bench(args.old, path, verdicts[path]), "new": recorded[path]}
        else:
            results = {name: bench(source, path, verdicts[path])
                       for name, source in (order if k % 2 == 0 else order[::-1])}
        row = {"file": path.name, **compare(results["old"], results["new"]), "results": results}
        rows.append(row)
        args.out.write_text(json.dumps({"rows": rows}, indent=1))  # a cut-short run keeps its rows
        if "triton" in row:
            cells = " ".join(f"{n} {row[n]['ratio']:.3f} (spread {row[n]['spread']:.3f})"
                             for n in ("eager", "compile", "triton"))
            v = row["verification"]
            print(f"{path.name:<34} {cells}; verification {v['verified_calls']} calls, "
                  f"{v['fraction']:.1%} of the timing child's {v['timing_child_seconds']:.1f} s", flush=True)
        else:
            print(f"{path.name:<34} old {row['old_status']} new {row['new_status']} "
                  f"{row.get('new_failure') or row.get('old_failure') or ''}"[:400], flush=True)
    timed = [r for r in rows if "triton" in r]
    summary = {"files": len(rows), "timed": len(timed),
               "triton_within_spread": sum(r["triton"]["within_spread"] for r in timed),
               "max_verification_fraction": max((r["verification"]["fraction"] or 0 for r in timed), default=None),
               "rows": rows}
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"Triton within the spread on {summary['triton_within_spread']} of {len(timed)}; verification at most "
          f"{summary['max_verification_fraction']:.1%} of a timing child's wall time" if timed else "nothing timed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
