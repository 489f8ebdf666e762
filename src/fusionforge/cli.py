"""The ``fusionforge`` command.

Exit codes: 0 success, 1 a verdict of failure (check), 2 usage error (bad path, bad flag, unknown
op, impossible chain). Every command that prints a report has a ``--json`` twin.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from fusionforge import __version__
from fusionforge.tasks import DIFFICULTIES, DTYPES, FusionTask, TaskError, TaskGenerator, step_label

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PROG = "fusionforge"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _fmt_dims(dims: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in dims.items())


def _fmt_cost(cost: dict[str, int]) -> str:
    return f"{_si(cost['bytes'], 'B')}, {_si(cost['flops'], 'FLOP')}"


def _si(value: float, unit: str) -> str:
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def render_task(task: FusionTask) -> str:
    """The task as a numbered list of operations to fuse, readable at a glance."""
    from fusionforge import ops as catalog

    body = task.pytorch_body()
    shapes = task.step_shapes()
    width = max(len(i.name) for i in task.inputs)
    lines = [f"Fusion task {task.id}  (seed {task.seed}, {task.difficulty}, {task.dtype})",
             task.description, "", "Inputs:"]
    for spec in task.inputs:
        shape = "Python float" if not spec.shape and spec.dtype == "python_float" else _fmt_shape(spec.shape)
        dtype = "" if spec.dtype == "python_float" else spec.dtype
        lines.append(f"  {spec.name:<{width}}  {spec.role:<10}  {shape:<14} {dtype}".rstrip())
    lines += ["", "Operations to fuse, in order (h is the running value):"]
    labels = []
    prev = tuple(task.inputs[0].shape)
    for k, (step, shape) in enumerate(zip(task.steps, shapes)):
        label = step_label(step)
        if catalog.get(step.op).family is catalog.Family.BINARY:
            label += f" {step.inputs[0]}"
        change = _fmt_shape(shape) if shape == prev else f"{_fmt_shape(prev)} -> {_fmt_shape(shape)}"
        labels.append((f"{k + 1}. {label}", change, body[k]))
        prev = shape
    w1 = max(len(a) for a, _, _ in labels)
    w2 = max(len(b) for _, b, _ in labels)
    lines += [f"  {a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in labels]
    lines += ["", f"Output: {_fmt_shape(task.output_shape)} {task.dtype}", "", "Shapes:"]
    cost = task.to_dict()["cost"]
    for family in ("test", "bench"):
        for dims, c in zip(task.shapes[family], cost[family]):
            lines.append(f"  {family:<6} {_fmt_dims(dims):<28} ({_fmt_cost(c)})")
    return "\n".join(lines)


def _cmd_task(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    generator = TaskGenerator()
    try:
        tasks = [generator.generate(seed + k, args.difficulty, args.dtype, args.ops) for k in range(args.count)]
    except (TaskError, KeyError) as e:
        raise UsageError(str(e).strip('"')) from None
    if args.out:
        payload = tasks[0].to_dict() if len(tasks) == 1 else [t.to_dict() for t in tasks]
        try:
            with open(args.out, "w") as f:
                json.dump(payload, f, indent=2)
                f.write("\n")
        except OSError as e:
            raise UsageError(f"cannot write {args.out}: {e.strerror}") from None
    if args.json:
        if len(tasks) == 1:
            print(tasks[0].to_json())
        else:
            print(json.dumps([t.to_dict() for t in tasks], indent=2))
    else:
        print("\n\n".join(render_task(t) for t in tasks))
        if args.out:
            print(f"\nwrote {args.out}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from fusionforge.verify import check_file
    from fusionforge.verify.verdict import render_check

    path = _kernel_file(args.file)
    task = _read_task(args.task)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available on this machine")
    verdict = check_file(path, task=task, device=args.device, timeout=args.timeout, seeds=args.seeds)
    print(verdict.to_json() if args.json else render_check(verdict))
    return EXIT_OK if verdict.passed else EXIT_FAIL


def _cmd_bench(args: argparse.Namespace) -> int:
    from fusionforge.bench import bench_file, render_report

    path = _kernel_file(args.file)
    result = bench_file(path, task=_read_task(args.task), timeout=args.timeout)
    print(result.to_json() if args.json else render_report(result))
    return EXIT_OK if result.passed else EXIT_FAIL


def _cmd_implement(args: argparse.Namespace) -> int:
    from fusionforge.implement import UnsupportedTask, generate
    from fusionforge.kernelfile import next_free_path

    task = _read_task(args.task)
    try:
        source = generate(task)
    except UnsupportedTask as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAIL
    out = Path(args.output) if args.output else next_free_path(Path.cwd())
    try:
        out.write_text(source)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {out}")
    return EXIT_OK


def _read_task(path: str | None) -> FusionTask | None:
    if not path:
        return None
    try:
        return FusionTask.from_json(Path(path).read_text())
    except (OSError, ValueError, TaskError) as e:
        raise UsageError(f"cannot read task {path}: {e}") from None


def _add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="seed of the (first) task; random when omitted")
    p.add_argument("--difficulty", choices=DIFFICULTIES, help="easy: pointwise; medium: + a reduction or "
                   "normalization; hard: matmul root with epilogue, or several reductions")
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--count", type=_positive_int, default=1, help="number of tasks (seeds SEED, SEED+1, ...)")
    p.add_argument("--ops", help="force a chain, e.g. linear_bias,add:col,gelu,layer_norm")
    p.add_argument("--out", metavar="FILE", help="also write the task JSON (a list when --count > 1)")
    p.add_argument("--json", action="store_true", help="print the task spec as JSON")


def _add_file_options(p: argparse.ArgumentParser, json_help: str, timeout_help: str) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help=timeout_help)
    p.add_argument("--task", metavar="TASK.json", help="the task that was handed out (default: the file's own "
                   "TASK, else its get_inputs)")


def _kernel_file(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such file: {name}")
    return path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate fusion tasks, implement them in PyTorch and Triton, verify, benchmark, "
                    "and keep the kernels that are correct and faster.")
    parser.add_argument("--version", action="version", version=f"fusionforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("task", help="generate fusion tasks", description="Generate reproducible fusion tasks "
                       "and print them as a numbered list of operations to fuse (or JSON).")
    _add_task_options(p)
    p.set_defaults(func=_cmd_task)

    p = sub.add_parser("check", help="check a kernel file's Triton implementation against the reference",
                       description="Run FILE in an isolated child process and judge its Triton kernel: format, "
                       "compilation, execution, shape, dtype, values against a float64 reference, and the "
                       "defences against cheating. Exit 0 pass, 1 fail, 2 usage error.")
    _add_file_options(p, "print the verdict as JSON", "kill the candidate after this long (default 300)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is present, else cpu "
                   "(Triton's interpreter, test shapes only)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="input draws for files without a TASK")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("bench", help="check, then time a kernel file against PyTorch eager and torch.compile",
                       description="Check FILE, then (on a CUDA GPU) time PyTorch eager, torch.compile and the "
                       "Triton wrapper at the bench shape in one isolated process, and judge the speed with a "
                       "roofline. Without a GPU it checks and records 'not timed'. Exit 0 correct and faster "
                       "(or verified, not timed), 1 fail, slower or suspicious, 2 usage error.")
    _add_file_options(p, "print every raw figure and the context as JSON",
                      "limit for the check and for the timing run (default 300)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("implement", help="write a kernel file for a task with the built-in code generator",
                       description="Render TASK.json as a complete kernel file in the seed format (PyTorch function, "
                       "Triton kernel and wrapper, TEST section, main block). Exit 0 written, 1 no plan for this "
                       "chain yet, 2 usage error.")
    p.add_argument("task", metavar="TASK.json")
    p.add_argument("-o", "--output", metavar="FILE", help="default: the next free NNN_fused_kernels.py here")
    p.set_defaults(func=_cmd_implement)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK


def task_main(argv: list[str] | None = None) -> int:
    """Entry point of generate_fusion_task.py: the ``task`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0]) or "generate_fusion_task.py",
                                     description="Generate a fusion task (same options as 'fusionforge task').")
    _add_task_options(parser)
    args = parser.parse_args(argv)
    try:
        return _cmd_task(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
