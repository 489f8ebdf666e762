"""The generator's kernels compiled for Hopper on the CPU: shared memory, registers and spills of every config.

    PYTHONPATH=src python benchmarks/hopper_builds.py --family attention --seeds 7,8,19 [--out builds.json]

Per generated task (``--family`` F, or the default mix with ``-``): the wrapper run on meta tensors at the bench
shape with its launches recorded (``fusionforge.verify.builds``), each launch's configs compiled for sm_90, and
ptxas -v (Triton's own) over each PTX for its registers a thread and bytes spilled. No GPU and no timing: it says
which configs can run and which spill, not which is fast. Run without the checker's sandbox: only on files the
generator wrote.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def ptxas_usage(ptx: str) -> tuple[int | None, int | None]:
    """(registers a thread, bytes of spill stores) from ptxas -v for sm_90a."""
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        report = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                                capture_output=True, text=True).stderr
    registers, spilled = re.search(r"Used (\d+) registers", report), re.search(r"(\d+) bytes spill stores", report)
    return (int(registers.group(1)) if registers else None), (int(spilled.group(1)) if spilled else None)


def main() -> int:
    from fusionforge import codegen
    from fusionforge.kernelfile import load_module
    from fusionforge.tasks import TaskGenerator
    from fusionforge.verify.builds import TARGETS, compile_launch, config_text, meta_inputs, record_launches

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="-", help="a task family, or - for the default mix")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    limit = TARGETS["sm_90"][1]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in map(int, args.seeds.split(",")):
            task = TaskGenerator().generate(seed, **({} if args.family == "-" else {"family": args.family}))
            path = os.path.join(folder, f"{seed:03d}_fused_kernels.py")
            with open(path, "w") as f:
                f.write(codegen.generate(task))
            module = load_module(path, f"builds_{seed}")
            for site in record_launches(module, meta_inputs(module, task), path):
                for launch in site["launches"]:
                    compiled = compile_launch("sm_90", launch)
                    registers, spilled = ptxas_usage(compiled.asm["ptx"])
                    row = {"seed": seed, "dtype": task.dtype, "kernel": site["kernel"], "config": config_text(launch),
                           "shared": compiled.metadata.shared, "fits": compiled.metadata.shared <= limit,
                           "registers": registers, "spilled_bytes": spilled}
                    rows.append(row)
                    print(f"{seed:3d} {task.dtype:9s} {site['kernel']:22s} shared {row['shared']:6d} "
                          f"regs {registers} spill {spilled}  {row['config']}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
