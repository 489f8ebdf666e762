"""Check every known-good and known-bad fixture on a CUDA GPU, at the test and bench shapes.

    PYTHONPATH=src python benchmarks/gpu_check_fixtures.py [--out results.json] [--jobs 4]

Runs the fixtures of tests/fixtures/expected.json (several checks at a time: these are correctness
runs, nothing is timed), then, one after another, a kernel with an out-of-bounds store (an illegal
memory access) and a known-good file, to show that the next check after a CUDA fault is unaffected.
Prints a table and writes every verdict as JSON. Exit 1 if any verdict differs from the expected one.
"""

import argparse
import datetime
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import triton

from fusionforge.verify import check_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def verdict_row(name: str, expected: dict, verdict) -> dict:
    d = verdict.to_dict()
    got = d["failure"]["category"] if d["failure"] else None
    ok = (d["status"] == expected["status"]) and (expected["status"] == "pass" or got == expected["category"])
    bench = [c for c in d["checks"] if c["label"].startswith("bench")]
    return {"file": name, "expected": expected.get("category") or "pass", "got": got or "pass", "ok": ok,
            "seconds": d["seconds"], "bench_checked": bool(bench) and all(c["passed"] for c in bench),
            "message": d["failure"]["message"][:300] if d["failure"] else "", "verdict": d}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check_fixtures.json")
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("a CUDA GPU is required", file=sys.stderr)
        return 2
    manifest = FIXTURES / "expected.json"
    expected = (json.loads(manifest.read_text()) if manifest.exists() else
                {f"good/{p.name}": {"status": "pass"} for p in sorted((FIXTURES / "good").glob("*.py"))})

    def run(name: str) -> dict:
        timeout = 60 if expected[name].get("category") == "timeout" else 600
        return verdict_row(name, expected[name], check_file(FIXTURES / name, device="cuda", timeout=timeout))

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, sorted(expected)))
    fault = "gpu/illegal_memory_access.py"
    rows.append(verdict_row(fault, {"status": "fail", "category": "runtime"},
                            check_file(FIXTURES / fault, device="cuda")))
    after = "good/pointwise_bias_gelu_fp16.py"
    rows.append(verdict_row(after + " (right after the fault)", expected[after],
                            check_file(FIXTURES / after, device="cuda")))
    for r in rows:
        mark = "ok " if r["ok"] else "BAD"
        print(f"{mark} {r['file']:<52} expected {r['expected']:<9} got {r['got']:<9} {r['seconds']:6.1f}s "
              f"{'bench shape checked' if r['bench_checked'] else ''}  {r['message'][:90]}")
    props = torch.cuda.get_device_properties(0)
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": props.name, "torch": torch.__version__, "triton": triton.__version__,
               "cuda": torch.version.cuda, "files": len(rows), "as_expected": sum(r["ok"] for r in rows),
               "rows": rows}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"{summary['as_expected']}/{summary['files']} verdicts as expected on {props.name}")
    return 0 if summary["as_expected"] == summary["files"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
