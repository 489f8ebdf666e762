"""GPU proof of `fusionforge bench`: anchors, repeatability, a slow kernel, a side-stream kernel.

    PYTHONPATH=src python benchmarks/gpu_bench.py --out bench.json [--anchor-bench PATH] [--part anchors|extras]

anchors: runs the shared anchor_bench.py (PyTorch eager and torch.compile on the eight chains) and
         `bench_file` on benchmarks/anchors/*.py in the same call, and compares the eager and compile
         figures of the two (they must agree within 10%).
extras:  benches one file twice (medians within 3%), a correct but deliberately slow kernel (must be
         `slower`), and the same kernel on an unjoined side stream next to its main-stream twin (the
         side-stream one must be timed whole: about the twin's time, not near zero).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fusionforge.bench import bench_file
from fusionforge.bench.roofline import device_rates

ROOT = Path(__file__).resolve().parents[1]


def bench_row(name: str, path: Path) -> dict:
    try:
        return row(name, bench_file(path))
    except Exception as e:  # noqa: BLE001 - one broken row must not lose the others
        return {"file": name, "status": "error", "message": f"{type(e).__name__}: {e}"}


def row(name: str, result) -> dict:
    d = result.to_dict()
    t = d["timings"]
    failure = d["failure"]
    return {"file": name, "status": d["status"], "category": failure["category"] if failure else None,
            **{f"{k}_ms": t[k]["median_ms"] for k in t}, **{f"{k}_p20_ms": t[k]["p20_ms"] for k in t},
            **{f"{k}_p80_ms": t[k]["p80_ms"] for k in t}, "calls": t.get("triton", {}).get("calls"),
            "speedup": d["speedup"], "speedup_vs_compile": d["speedup_vs_compile"],
            **{k: v for k, v in d["roofline"].items() if "fraction" in k or k in ("floor_ms", "bytes", "flops")},
            "suspicious": d["suspicious"], "note": d["note"], "context": d["context"],
            "message": failure["message"][:300] if failure else ""}


def show(r: dict) -> None:
    if "triton_ms" not in r:
        print(f"{r['file']:<34} {r['status']:<10} {r['message'][:150]}", flush=True)
        return
    print(f"{r['file']:<34} {r['status']:<10} eager {r['eager_ms']:.4f} compile {r['compile_ms']:.4f} triton "
          f"{r['triton_ms']:.4f} ms | x{r['speedup']:.2f} eager x{r['speedup_vs_compile']:.2f} compile | floor "
          f"{r['floor_ms']:.4f}: eager {r['eager_fraction_of_floor']:.0%} compile {r['compile_fraction_of_floor']:.0%} "
          f"triton {r['triton_fraction_of_floor']:.0%} {r['category'] or ''} {' '.join(r['suspicious'])[:80]}",
          flush=True)


def anchors(anchor_bench: str | None) -> dict:
    out: dict = {"rows": []}
    if anchor_bench:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, anchor_bench], check=True, env={**os.environ, "OUT": tmp})
            out["anchor_bench"] = json.loads((Path(tmp) / "anchors.json").read_text())
    for path in sorted((ROOT / "benchmarks" / "anchors").glob("[a-z]*.py")):
        r = bench_row(path.stem, path)
        out["rows"].append(r)
        show(r)
    if anchor_bench:
        theirs = {a["chain"]: a for a in out["anchor_bench"]["rows"]}
        for r in [r for r in out["rows"] if "eager_ms" in r]:
            a = theirs[r["file"]]
            r["eager_vs_anchor_bench"] = r["eager_ms"] / a["eager_ms"]
            r["compile_vs_anchor_bench"] = r["compile_ms"] / a["compile_ms"]
            print(f"{r['file']:<34} eager {r['eager_ms']:.4f} vs {a['eager_ms']:.4f} ({r['eager_vs_anchor_bench']:.3f})"
                  f"  compile {r['compile_ms']:.4f} vs {a['compile_ms']:.4f} ({r['compile_vs_anchor_bench']:.3f})",
                  flush=True)
    return out


def extras() -> dict:
    fixtures = ROOT / "tests" / "fixtures"
    out: dict = {}
    twice = [bench_row("residual_layernorm_gelu", ROOT / "benchmarks" / "anchors" / "residual_layernorm_gelu.py")
             for _ in range(2)]
    for r in twice:
        show(r)
    out["repeat"] = {"rows": twice}
    if all("triton_ms" in r for r in twice):
        out["repeat"].update({f"{k}_ratio": twice[1][f"{k}_ms"] / twice[0][f"{k}_ms"]
                              for k in ("eager", "compile", "triton")})
    print("repeatability (second / first median):", {k: round(v, 4) for k, v in out["repeat"].items() if k != "rows"})
    for name, path in (("slow_but_correct", fixtures / "bench" / "slow_but_correct.py"),
                       ("side_stream", fixtures / "bench" / "side_stream.py"),
                       ("main_stream_twin", fixtures / "good" / "pointwise_bias_gelu_fp16.py")):
        out[name] = bench_row(name, path)
        show(out[name])
    if "triton_ms" in out["side_stream"] and "triton_ms" in out["main_stream_twin"]:
        out["side_over_twin"] = out["side_stream"]["triton_ms"] / out["main_stream_twin"]["triton_ms"]
        print(f"side-stream / main-stream Triton median: {out['side_over_twin']:.3f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--anchor-bench")
    parser.add_argument("--part", choices=("anchors", "extras", "all"), default="all")
    args = parser.parse_args()
    result = {"rates": device_rates(refresh=True)}
    print("device rates:", result["rates"], flush=True)
    if args.part in ("anchors", "all"):
        result["anchors"] = anchors(args.anchor_bench)
    if args.part in ("extras", "all"):
        result["extras"] = extras()
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
