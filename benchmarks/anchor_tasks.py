"""The eight anchor chains of ../shared/anchors as tasks, through the built-in code generator.

    PYTHONPATH=src python benchmarks/anchor_tasks.py OUT.json [--folder DIR] [--jobs 8] [--device cuda|cpu]

Each anchor chain is spelled with the op catalog (the `--ops` syntax) in float16, the anchor's dtype,
and given the anchor's shape as its bench shape. The generator writes the first-attempt file of each,
and `bench_files` (what `fusionforge bench -j` runs) checks them side by side and times each alone.
The bar (issue 5): Triton's fraction of the roofline floor at or above torch.compile's, both measured
in the same timing run; the anchor file's recorded compile fraction is printed beside it.

Where the catalog spells a chain differently from the anchor, `differs` says how. The floors are
fusionforge's (the task's bytes and FLOPs over the rates measured on the machine), which count the
same tensors as anchor_bench's to within the small vectors.
On the CPU (`--device cpu`) the files are checked through Triton's interpreter at the test shapes,
and nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionforge.bench import bench_files
from fusionforge.codegen import resolve, write
from fusionforge.tasks import FusionTask, TaskGenerator

ANCHOR_FILE = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "h100_eager_vs_compile.json"

# name, ops, bench dims, how the task differs from the anchor's chain
ANCHORS = [
    ("bias_gelu_scale", "add:col,gelu,mul:scalar", {"M": 8192, "N": 8192},
     "the factor 0.5 is a scalar input (drawn) rather than a constant"),
    ("scale_bias_relu_softmax", "mul:scalar,add:col,relu,softmax", {"M": 8192, "N": 8192},
     "the factor 0.125 is a scalar input (drawn) rather than a constant"),
    ("residual_layernorm_gelu", "add:full,layer_norm,gelu", {"M": 16384, "N": 4096}, ""),
    ("rmsnorm_silu_gate", "rms_norm,mul:full", {"M": 16384, "N": 4096},
     "the gate multiplies as is: the catalog's binary ops take no activation of their operand, so silu(gate) "
     "is not computed (same bytes, a few fewer FLOPs per element)"),
    ("logsumexp_bias", "add:col,logsumexp", {"M": 8192, "N": 8192}, ""),
    ("sq_mean_sqrt", "square,mean,sqrt", {"M": 8192, "N": 8192},
     "the result is float16 (the anchor's is float32): 16 KB less written"),
    ("matmul_bias_relu", "matmul,add:col,relu", {"M": 8192, "N": 8192, "K": 8192}, ""),
    ("matmul_bias_gelu_layernorm", "matmul,add:col,gelu,layer_norm", {"M": 4096, "N": 4096, "K": 4096},
     "layer_norm has a bias (beta) too"),
]


def anchor_tasks() -> list[tuple[str, FusionTask, str]]:
    """(name, task at the anchor's shape, difference) for each anchor chain."""
    tasks = []
    for seed, (name, ops, dims, differs) in enumerate(ANCHORS):
        task = TaskGenerator().generate(seed, dtype="float16", ops=ops)
        task.shapes["bench"] = [dims]
        tasks.append((name, task, differs))
    return tasks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the result JSON")
    parser.add_argument("--folder", type=Path, default=Path("anchor-tasks"), help="where the files are written")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    recorded = {row["chain"]: row for row in json.loads(ANCHOR_FILE.read_text())["rows"]} if ANCHOR_FILE.exists() \
        else {}
    args.folder.mkdir(parents=True, exist_ok=True)
    entries, paths = anchor_tasks(), []
    plans = [resolve(task) for _, task, _ in entries]
    for (name, _, _), plan in zip(entries, plans):
        path = args.folder / f"{name}_fused_kernels.py"
        path.write_text(write(plan))
        paths.append(path)
    rows = []

    def done(k: int, result) -> None:
        name, task, differs = entries[k]
        row = {"chain": name, "ops": ANCHORS[k][1], "task": task.to_dict(), "plan": plans[k].kind,
               "variant": plans[k].variant, "differs": differs, "status": result.status,
               "check_passed": result.check.passed,
               "result": result.to_dict()}
        anchor = recorded.get(name, {})
        row["anchor_compile_fraction"] = anchor.get("compile_pct_floor")
        if result.timed:
            r = result.roofline
            row.update(triton_fraction=r["triton_fraction_of_floor"], compile_fraction=r["compile_fraction_of_floor"],
                       eager_fraction=r["eager_fraction_of_floor"], speedup=result.speedup,
                       speedup_vs_compile=result.speedup_vs_compile,
                       at_or_above_compile=r["triton_fraction_of_floor"] >= r["compile_fraction_of_floor"])
            print(f"{name:<28} {result.status:<8} Triton {row['triton_fraction']:.0%} of floor, compile "
                  f"{row['compile_fraction']:.0%} (anchor file {anchor.get('compile_pct_floor', float('nan')):.0%}), "
                  f"x{result.speedup:.2f} eager x{result.speedup_vs_compile:.2f} compile", flush=True)
        else:
            failure = result.check.failure or result.failure
            print(f"{name:<28} {result.status:<8} {failure.message[:100] if failure else result.note[:100]}",
                  flush=True)
        rows.append(row)

    bench_files(paths, [task for _, task, _ in entries], jobs=args.jobs, timeout=600, device=args.device, done=done)
    timed = [r for r in rows if "triton_fraction" in r]
    summary = {"how": __doc__, "device": args.device, "anchors": len(rows),
               "passed_check": sum(r["check_passed"] for r in rows), "timed": len(timed),
               "at_or_above_compile": sum(r["at_or_above_compile"] for r in timed), "rows": rows}
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"{summary['passed_check']} of {len(rows)} pass the check; "
          f"{summary['at_or_above_compile']} of {len(timed)} timed at or above torch.compile's fraction of the floor")
    return 0 if summary["passed_check"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
