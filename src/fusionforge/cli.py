"""The ``fusionforge`` command.

Exit codes: 0 success, 1 a verdict of failure (check), 2 usage error (bad path, bad flag, unknown
op, impossible chain). Every command that prints a report has a ``--json`` twin.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shlex
import signal
import sys
import time
from pathlib import Path

from fusionforge import __version__
from fusionforge.atomic import write_text
from fusionforge.gpus import RAY_JOBS, default_jobs
from fusionforge.tasks import DIFFICULTIES, DTYPES, FAMILIES, FusionTask, TaskError, TaskGenerator, step_label

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PROG = "fusionforge"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other usage error of the command."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def task_command(seed: int, difficulty: str | None = None, dtype: str | None = None, ops: str | None = None,
                 prog: str = PROG + " task", family: str | None = None) -> str:
    """The command that prints the task of these generator options again (the options given, no others:
    a difficulty or dtype drawn by the seed is drawn again, one given is not drawn)."""
    words = [prog, "--seed", str(seed)]
    for flag, value in (("--difficulty", difficulty), ("--dtype", dtype), ("--ops", ops), ("--family", family)):
        if value:
            words += [flag, shlex.quote(value)]
    return " ".join(words)


def render_task(task: FusionTask, command: str | None = None) -> str:
    """The task as a numbered list of operations to fuse, readable at a glance; ``command`` prints it again."""
    from fusionforge import ops as catalog

    body = task.pytorch_steps()
    shapes = task.step_shapes()
    width = max(len(i.name) for i in task.inputs)
    lines = [f"Fusion task {task.id}  (seed {task.seed}, {task.difficulty}, {task.dtype})", task.description]
    if command:
        lines.append(f"Print it again: {command}")
    lines += ["", "Inputs:"]
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
        first, *more = body[k]  # a step's statements (a quantizer's: its upcast and scales, then h)
        labels.append((f"{k + 1}. {label}", change, first))
        labels += [("", "", line) for line in more]
        prev = shape
    w1 = max(len(a) for a, _, _ in labels)
    w2 = max(len(b) for _, b, _ in labels)
    lines += [f"  {a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in labels]
    lines += ["", f"Output: {task.output_text()}", "", "Shapes:"]
    cost = task.to_dict()["cost"]
    for family in ("test", "bench"):
        for dims, c in zip(task.shapes[family], cost[family]):
            lines.append(f"  {family:<6} {_fmt_dims(dims):<28} ({_fmt_cost(c)})")
    return "\n".join(lines)


def _cmd_task(args: argparse.Namespace) -> int:
    if args.current:
        return _show_current(args)
    if getattr(args, "from_kernelbench", None):
        return _kernelbench_task(args)
    if getattr(args, "test_dims", ""):
        raise UsageError("--test-dims goes with --from-kernelbench")
    # The screen evaluates small chains: one thread is several times faster than torch's default threads
    # on a busy machine (2 s for 200 tasks on 2 cores, against 11 s).
    import torch

    torch.set_num_threads(1)
    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    generator = TaskGenerator()
    hand_out = getattr(args, "hand_out", False)  # generate_fusion_task.py: remember what was handed out
    out = None
    many = args.count > 1
    try:
        for k in range(args.count):  # streamed: each task printed (and written) as soon as it is made
            try:
                task = generator.generate(seed + k, args.difficulty, args.dtype, args.ops, args.family)
            except (TaskError, KeyError) as e:
                raise UsageError(str(e).strip('"')) from None
            command = task_command(seed + k, args.difficulty, args.dtype, args.ops, family=args.family)
            spec = json.dumps(task.to_dict(), indent=2)
            if out is None and args.out:  # opened once a task is made: a bad option leaves no file behind
                out = _open_out(args.out)
            if many:  # a JSON list, laid out as json.dumps(list, indent=2) would
                spec = ("[\n" if k == 0 else ",\n") + "\n".join("  " + line for line in spec.splitlines())
                spec += "\n]" if k == args.count - 1 else ""
            if out is not None:
                out.write(spec + ("\n" if not many or k == args.count - 1 else ""))
                out.flush()
            if args.json:
                print(spec, end="\n" if not many or k == args.count - 1 else "", flush=True)
            else:
                print(("\n\n" if k else "") + render_task(task, command), flush=True)
            if hand_out:  # once printed: a reader gone (| head) is handed out nothing it did not see
                _record(args.state, task, command)
            if args.skeleton:
                _write_skeleton(task)
            if hand_out:
                print(f"handed out {task.id} (kept in {args.state}/ for `{PROG} attempt`); print it again: "
                      f"{command}", file=sys.stderr)
    finally:
        if out is not None:
            out.close()
    if args.out and not args.json:
        print(f"\nwrote {args.out}")
    return EXIT_OK


def _kernelbench_task(args: argparse.Namespace) -> int:
    """``task --from-kernelbench PROBLEM.py``: the problem's task, printed (or as JSON), written, its skeleton."""
    from fusionforge.kernelbench import KernelBenchTask, parse_dims, problem_constants

    given = [flag for flag, value in (("--difficulty", args.difficulty), ("--ops", args.ops),
                                      ("--family", args.family)) if value is not None]
    if given or args.count != 1:
        raise UsageError(f"--from-kernelbench makes the problem's one task; it takes no {(given or ['--count'])[0]}")
    path = Path(args.from_kernelbench)
    if not path.is_file():
        raise UsageError(f"no such problem file: {path}")
    try:
        dims = parse_dims(args.test_dims, problem_constants(path.read_text()))
        task = KernelBenchTask.from_problem(path, args.dtype or "float32", args.seed or 0, dims)
        spec = task.to_json()
    except (TaskError, OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: {e}") from None
    if args.out:
        with _open_out(args.out) as out:
            out.write(spec + "\n")
    print(spec if args.json else render_kernelbench_task(task, path))
    if args.skeleton:
        _write_skeleton(task)
    return EXIT_OK


def render_kernelbench_task(task, problem: str | Path) -> str:
    """A KernelBench task: where it comes from, each argument's shape at the test and bench sizes, the cost."""
    test, bench = task.shapes["test"][0], task.shapes["bench"][0]
    rows = list(zip(task.arg_names, task.argument_shapes(test), task.argument_shapes(bench)))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"KernelBench task {task.id}  (seed {task.seed}, {task.dtype})", f"Problem: {problem}",
             "Reference: the problem's Model in float64, with the weights a call is given", "",
             "Arguments (the problem's inputs, then the module's weights; test -> bench shape):"]
    lines += [f"  {name:<{width}}  {_fmt_shape(list(t)) if isinstance(t, tuple) else t} -> "
              f"{_fmt_shape(list(b)) if isinstance(b, tuple) else b}" for name, t, b in rows]
    cost = task.to_dict()["cost"]
    lines += ["", "Sizes:"] + [f"  {family:<6} {_fmt_dims(task.shapes[family][0]):<40} ({_fmt_cost(cost[family][0])})"
                               for family in ("test", "bench")]
    return "\n".join(lines)


def _open_out(name: str | None):
    if not name:
        return None
    try:
        return open(name, "w")
    except OSError as e:
        raise UsageError(f"cannot write {name}: {e.strerror}") from None


def _record(state: str, task: FusionTask, command: str) -> None:
    from fusionforge.handout import Handout

    try:
        Handout(state).record(task, command)
    except OSError as e:
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None


def _write_skeleton(task: FusionTask) -> None:
    from fusionforge import kernelbench
    from fusionforge.handout import skeleton
    from fusionforge.implement import UnsupportedTask
    from fusionforge.pipeline import claim_path

    try:
        source = kernelbench.skeleton(task) if task.family == kernelbench.KIND else skeleton(task)
    except UnsupportedTask as e:
        raise UsageError(f"no skeleton for this chain: {e}") from None
    try:
        path = claim_path(Path.cwd())
        path.write_text(source)
    except OSError as e:
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None
    print(f"wrote {path.name}: the task's file with its TASK, PyTorch function, get_inputs and main block; "
          f"write the TRITON section, dry-run it with `{PROG} check {path.name}`", file=sys.stderr)


def _show_current(args: argparse.Namespace) -> int:
    from fusionforge.handout import Handout

    given = [flag for flag, value in (("--seed", args.seed), ("--difficulty", args.difficulty),
                                      ("--dtype", args.dtype), ("--ops", args.ops), ("--family", args.family))
             if value is not None]
    if given or args.count != 1:
        raise UsageError(f"--current shows the task handed out last; it takes no {(given or ['--count'])[0]}")
    handout = Handout(args.state)
    task = handout.task()
    if task is None:
        raise UsageError(f"no task was handed out here ({args.state}/ is empty): run generate_fusion_task.py first")
    if args.out:
        out = _open_out(args.out)
        with out:
            out.write(task.to_json() + "\n")
    print(task.to_json() if args.json else render_task(task, handout.current_command()))
    if args.skeleton:
        _write_skeleton(task)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from fusionforge.verify import check_file
    from fusionforge.verify.verdict import render_check

    path = _kernel_file(args.file)
    task = _read_task(args.task)
    note = None
    if task is None:
        task, note = _handed_out(path, args.state, Path(args.runs))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available on this machine")
    if args.memcheck:
        from fusionforge.verify.memcheck import sanitizer

        if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cuda":
            raise UsageError("--memcheck runs the file under compute-sanitizer and needs a CUDA GPU (on the CPU "
                             "every load and store is bounds-checked already)")
        if sanitizer() is None:
            raise UsageError("--memcheck: compute-sanitizer (CUDA toolkit) is not on the PATH nor in $CUDA_HOME/bin")
    from fusionforge.verify.builds import target_for

    try:
        target_for(args.build_target)
    except ValueError as e:
        raise UsageError(f"--build-target: {e}") from None
    verdict = check_file(path, task=task, device=args.device, timeout=args.timeout, seeds=args.seeds,
                         memcheck=args.memcheck, build_target=args.build_target)
    print(verdict.to_json() if args.json else render_check(verdict) + (f"\n{note}" if note else ""))
    return EXIT_OK if verdict.passed else EXIT_FAIL


def _handed_out(path: Path, state: str, runs_root: Path) -> tuple[FusionTask | None, str | None]:
    """The handed-out task that FILE's TASK names, as `attempt` would judge FILE against it, and a note saying
    which attempt that would be; (None, None) when FILE names no task handed out in ``state``."""
    from fusionforge import kernelfile
    from fusionforge.handout import Handout

    claimed = (kernelfile.parse(path).task or {}).get("id")
    handout = Handout(state)
    task = handout.task(claimed) if claimed else None
    if task is None:
        return None, None
    log = handout.log(task, runs_root)
    if (outcome := log.outcome()) is not None:
        return task, (f"Task {task.id} is finished ({outcome['outcome']} after {outcome['attempts']} attempts): "
                      f"`{PROG} attempt` takes no more files for it.")
    return task, (f"No attempt was counted. `{PROG} attempt {path}` judges it as attempt {len(log.attempts()) + 1} "
                  f"at task {task.id}.")


def _cmd_bench(args: argparse.Namespace) -> int:
    from fusionforge.bench import bench_file, render_report

    _check_engine(args)
    if args.pending:
        return _bench_pending(args)
    if not args.file:
        raise UsageError("bench needs a FILE (or --pending)")
    paths = [_kernel_file(name) for name in args.file]
    if len(paths) > 1 and args.task:
        raise UsageError("--task goes with one FILE; several files are each benched against their own TASK")
    if args.engine == "ray":
        lanes = _ray_lanes(args, None)
        try:
            return _bench_files(args, paths, lanes, lanes.device)
        finally:
            lanes.close()
    lanes = _lanes(args.gpus)
    if len(paths) == 1:
        with lanes.take():  # the first of the GPUs asked for
            result = bench_file(paths[0], task=_read_task(args.task), timeout=args.timeout)
        print(result.to_json() if args.json else render_report(result))
        return EXIT_OK if result.passed else EXIT_FAIL
    return _bench_files(args, paths, lanes)


def _bench_files(args: argparse.Namespace, paths: list[Path], lanes, device: str | None = None) -> int:
    """``bench`` of several files (or one, on a Ray cluster) spread over ``lanes``; the exit code."""
    from fusionforge.bench import bench_files, render_report

    finished = {}

    def show(k: int, result) -> None:
        finished[k] = result
        if not args.json:
            print(f"{paths[k]}:\n{render_report(result)}\n", flush=True)

    try:
        results = bench_files(paths, [_read_task(args.task)] * len(paths), jobs=args.jobs, timeout=args.timeout,
                              device=device, done=show, lanes=lanes)
    except KeyboardInterrupt:
        if args.json:  # the files finished before the interrupt, in file order (the exit code says it stopped)
            print(json.dumps([{"file": str(paths[k]), **finished[k].to_dict()} for k in sorted(finished)], indent=2))
        raise
    if args.json:
        print(json.dumps([{"file": str(path), **r.to_dict()} for path, r in zip(paths, results)], indent=2))
    else:
        print(f"{sum(r.passed for r in results)} of {len(results)} files pass")
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAIL


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


def _bench_pending(args: argparse.Namespace) -> int:
    import torch

    from fusionforge.pipeline import time_pending

    if args.file:
        raise UsageError("--pending times the records in data/: give no FILE with it")
    if args.engine == "local" and not torch.cuda.is_available():
        raise UsageError("--pending times kernels: it needs a CUDA GPU")
    dataset = _dataset(args.data)
    echo = (lambda text: None) if args.json else _echo
    lanes = _ray_lanes(args, "cuda") if args.engine == "ray" else _lanes(args.gpus)
    try:
        counts = time_pending(dataset, Path(args.runs), jobs=args.jobs, timeout=args.timeout, echo=echo,
                              lanes=lanes)
    finally:
        lanes.close()
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"pending records timed: {counts['kept']} kept, {counts['dropped']} dropped (failed or not faster), "
              f"{counts['still_pending']} still pending (the harness failed)")
    return EXIT_OK


def _echo(text: str) -> None:
    print(text, flush=True)


def _dataset(folder: str):
    from fusionforge.dataset import Dataset, DatasetError

    dataset = Dataset(folder)
    try:
        dataset.ensure_writable()
        for _ in dataset.iter_records():  # a malformed index stops us here, before any work
            pass
    except DatasetError as e:
        raise UsageError(str(e)) from None
    return dataset


def _implementer(options: dict):
    from fusionforge.implement import BuiltinImplementer, ImplementerError

    if options["implementer"] == "builtin":
        return BuiltinImplementer()
    if options["implementer"] == "agent":
        from fusionforge.implement.folder import FolderImplementer

        return FolderImplementer(Path(options["files"]))
    if not options.get("model"):
        raise UsageError("--implementer llm needs --model")
    from fusionforge.implement.llm import LLMImplementer

    try:
        implementer = LLMImplementer(options["model"], base_url=options.get("base_url"),
                                     api_key_env=options["api_key_env"], temperature=options["temperature"],
                                     max_tokens=options["max_tokens"])
        implementer.probe()
    except ImplementerError as e:
        raise UsageError(str(e)) from None
    return implementer


def _cmd_run(args: argparse.Namespace) -> int:
    from fusionforge.pipeline import Run

    _check_engine(args)
    runs_root = Path(args.runs)
    if args.resume is not None:
        try:
            run = Run.load(runs_root, args.resume or None)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise UsageError(str(e)) from None
        options = run.options
    else:
        run = None
        options = {"count": args.count, "seed": args.seed if args.seed is not None else secrets.randbelow(10**6),
                   "difficulty": args.difficulty, "dtype": args.dtype, "ops": args.ops, "family": args.family,
                   **_loop_options(args),
                   "workdir": str(Path(args.workdir).resolve()), "data": str(Path(args.data).resolve())}
        try:
            TaskGenerator().generate(options["seed"], args.difficulty, args.dtype, args.ops, args.family)
        except (TaskError, KeyError) as e:
            raise UsageError(str(e).strip('"')) from None
    lanes = _loop_lanes(args, options)
    try:
        return _run(args, run, options, lanes)
    finally:
        lanes.close()


def _loop_options(args: argparse.Namespace) -> dict:
    """The implementer's and the attempt loop's options of a new run or eval (the device checked)."""
    from fusionforge.verify.checker import default_device

    if args.device == "cuda" and args.engine == "local":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available on this machine")
    return {"implementer": args.implementer, "model": args.model, "base_url": args.base_url,
            "api_key_env": args.api_key_env, "temperature": args.temperature, "max_tokens": args.max_tokens,
            "attempts": args.attempts, "device": args.device or (default_device() if args.engine == "local" else None),
            "timeout": args.timeout}


def _loop_lanes(args: argparse.Namespace, options: dict):
    """The GPUs (or the Ray cluster's workers) the loop runs on; a Ray engine sets ``options["device"]``."""
    if args.engine == "ray":
        lanes = _ray_lanes(args, options["device"])
        options["device"] = lanes.device
        return lanes
    return _lanes(args.gpus) if options["device"] == "cuda" else _no_gpus(args.gpus)


def _cmd_eval(args: argparse.Namespace) -> int:
    from fusionforge.evaluation import SuiteError, kernelbench_suite, load_suite, report, suite_of_run
    from fusionforge.pipeline import Run

    _check_engine(args)
    if args.kernelbench and args.suite:
        raise UsageError("--kernelbench takes the place of --suite: give one of them")
    if args.dtype and not args.kernelbench:
        raise UsageError("--dtype goes with --kernelbench (a suite's tasks have their own dtypes)")
    out = Path(args.out)  # each eval's attempt logs and results, side by side
    try:
        if args.resume is not None:
            run = Run.load(out, args.resume or None)
            if "suite" not in run.options:
                raise UsageError(f"{run.folder} is a run, not an eval")
            options = run.options
            suite = suite_of_run(options)
        else:
            run = None
            suite = kernelbench_suite(args.kernelbench, args.dtype or "float32") if args.kernelbench \
                else load_suite(args.suite or "small-v1")
            options = {"count": len(suite["tasks"]) * args.samples, "suite": suite["name"],
                       "suite_hash": suite["hash"], "samples": args.samples, "tasks": suite["tasks"],
                       **_loop_options(args)}
            if args.files:
                if args.implementer != "builtin":
                    raise UsageError("--files takes the place of --implementer: give one of them")
                if not Path(args.files).is_dir():
                    raise UsageError(f"--files {args.files}: not a folder")
                options.update(implementer="agent", files=str(Path(args.files).resolve()), attempts=1)
    except (FileNotFoundError, ValueError, KeyError, SuiteError) as e:
        raise UsageError(str(e)) from None
    if run is None:  # the evals in OUT share a work folder and keep their passing kernels in OUT/data
        options.update(workdir=str((out / "work").resolve()), data=str((out / "data").resolve()))
    lanes = _loop_lanes(args, options)
    try:
        done = _attempt_loop(args, run, options, lanes, "eval", out)
    finally:
        lanes.close()
    if isinstance(done, int):
        return done
    run = done[0]
    result = report(run.folder, suite, run.options)
    print(json.dumps(result, indent=2) if args.json else _render_eval(result, run.folder))
    return EXIT_OK


def _render_eval(result: dict, folder: Path) -> str:
    m = result["metrics"]

    def share(value) -> str:
        return f"{value:.1%}" if value is not None else "n/a (not timed)"

    lines = [f"Eval {result['run']}: suite {result['suite']} (hash {result['suite_hash'][:12]}), "
             f"{result['implementer']}{' ' + result['model'] if result['model'] else ''}, "
             f"{result['samples_per_task']} sample(s) per task, {result['attempts']} attempt(s) each, "
             f"on {result['device']}",
             f"correct: {m['correct']} of {m['samples']} samples ({share(m['correctness'])})"]
    for against, row in m["fast_p"].items():
        lines.append(f"fast_p against {against}: " + ", ".join(f"p={p} {share(v)}" for p, v in row.items()))
    lines.append("pass@k: " + ", ".join(f"k={k} {v:.1%}" for k, v in m["pass_at_k"].items()))
    speedups = m["geomean_speedup"]
    if speedups["eager"]:
        lines.append(f"geomean speedup of the correct ones: {speedups['eager']:.2f}x over eager, "
                     f"{speedups['torch.compile']:.2f}x over torch.compile; mean fraction of the roofline floor "
                     f"{m['mean_fraction_of_floor']:.0%}")
    usage = m["usage"]
    if usage.get("requests"):
        lines.append(f"usage: {usage['requests']} requests, {usage.get('prompt_tokens', 0)} prompt and "
                     f"{usage.get('completion_tokens', 0)} completion tokens"
                     + (f", cost {usage['cost']:.4f} as the endpoint reports it" if usage.get("cost") else ""))
    lines.append(f"Results: {folder / 'results.json'} and {folder / 'results.jsonl'}")
    return "\n".join(lines)


def _run(args: argparse.Namespace, run, options: dict, lanes) -> int:
    """``run`` (None: a new one, made here) on ``lanes``; the exit code."""
    done = _attempt_loop(args, run, options, lanes, "run", Path(args.runs))
    if isinstance(done, int):
        return done
    run, results, seconds, settings = done
    summary = _run_summary(run, results, seconds, settings)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n" + summary["text"])
    return EXIT_OK if summary["failed"] == 0 else EXIT_FAIL


def _attempt_loop(args: argparse.Namespace, run, options: dict, lanes, command: str, runs_root: Path):
    """The attempt loop of ``run`` (None: a new one in ``runs_root``) on ``lanes``: (run, outcomes, seconds,
    settings), or the exit code when interrupted; ``fusionforge COMMAND --resume`` continues it."""
    from fusionforge.dataset import DatasetError
    from fusionforge.implement import ImplementerError
    from fusionforge.pipeline import Run, Settings, run_tasks

    implementer = _implementer(options)
    dataset = _dataset(options["data"])
    workdir = Path(options["workdir"])
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if run is None:
            run = Run.create(runs_root, options)
    except OSError as e:
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None
    settings = Settings(workdir, dataset, attempts=options["attempts"], device=options["device"],
                        timeout=options["timeout"], run=run.id, lanes=lanes)
    echo = (lambda text: None) if args.json else _echo
    forced = not options.get("tasks")  # an eval's tasks each have their own difficulty and dtype

    def header(task: FusionTask) -> str:
        from fusionforge.kernelbench import KIND as KERNELBENCH

        if task.family == KERNELBENCH:
            return render_kernelbench_task(task, task.name)
        return render_task(task, task_command(task.seed, options.get("difficulty") if forced else task.difficulty,
                                              options.get("dtype") if forced else task.dtype, options.get("ops"),
                                              family=options.get("family")))

    start = time.perf_counter()
    try:
        with TaskProgress(options["count"], enabled=not args.json and options["count"] > 1, lanes=lanes) as advance:
            results = run_tasks(run, implementer, settings, jobs=args.jobs or _default_jobs(args, options, lanes),
                                echo=echo, header=header, advance=advance)
    except (ImplementerError, DatasetError) as e:
        raise UsageError(f"{e} (resume with: {PROG} {command} --resume {run.id})") from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; data/ and {run.folder} are consistent. Resume with: "
              f"{PROG} {command} --resume {run.id}", file=sys.stderr)
        return 130
    return run, results, time.perf_counter() - start, settings


def _run_summary(run, results: list[dict], seconds: float, settings) -> dict:
    kept = sum(1 for r in results if r["outcome"] == "kept")
    duplicates = sum(1 for r in results if r["outcome"] == "duplicate")
    failed = sum(1 for r in results if r["outcome"] == "failed")
    timed = [r["speedup"] for r in results if r.get("timed") and r.get("speedup")]
    text = (f"Run {run.id} on {settings.device}: {kept} of {len(results)} tasks kept in {settings.dataset.root}/"
            + (f", {duplicates} already there" if duplicates else "") + f", {failed} failed; "
            f"{seconds / 60:.1f} min. Attempt logs: {run.folder}")
    if timed:
        text += "\nSpeedups over eager: " + ", ".join(f"{s:.2f}x" for s in timed)
    elif kept:
        text += "\nVerified, not timed (no GPU): time them later with `fusionforge bench --pending` on a GPU."
    return {"run": run.id, "device": settings.device, "tasks": len(results), "kept": kept,
            "duplicates": duplicates, "failed": failed, "seconds": round(seconds, 1), "outcomes": results,
            "text": text}


class TaskProgress:
    """A rich progress bar over the tasks (a no-op when disabled): landed, failed, kernels per hour and, with
    several GPUs, the tasks in flight on each; ``advance(outcome)`` after each task."""

    def __init__(self, total: int, enabled: bool, lanes=None) -> None:
        self.total, self.enabled, self.lanes = total, enabled, lanes
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = [TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tally]}"),
                       TimeElapsedColumn()]
            if self.lanes is not None and len(self.lanes) > 1:
                columns.append(_lanes_column(self.lanes))
            self.bar = Progress(*columns)
            self.bar.start()
            self.id = self.bar.add_task("tasks", total=self.total, tally="")
            self.landed = self.failed = 0
            self.started = time.perf_counter()

        def advance(outcome: dict) -> None:
            if self.bar is not None:
                self.landed += outcome["outcome"] in ("kept", "duplicate")
                self.failed += outcome["outcome"] == "failed"
                rate = self.landed / max(time.perf_counter() - self.started, 1e-9) * 3600
                self.bar.update(self.id, advance=1, tally=f"{self.landed} landed, {self.failed} failed, "
                                                          f"{rate:.0f} per hour")

        return advance

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _lanes_column(lanes):
    """A progress column with the tasks in flight on each GPU, read live."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class InFlight(ProgressColumn):
        def render(self, task) -> Text:
            return Text(" ".join(f"{lane.name}: {lane.busy}" for lane in lanes.lanes) + " in flight")

    return InFlight()


def _cmd_attempt(args: argparse.Namespace) -> int:
    from fusionforge import kernelfile
    from fusionforge.handout import Handout
    from fusionforge.pipeline import Settings, attempt_file

    path = Path(args.file)
    handout = Handout(args.state)
    if args.task:
        handout.record(_read_task(args.task))
    claimed = (kernelfile.parse(path).task or {}).get("id") if path.is_file() else None
    task = handout.task(claimed) or handout.task()
    if task is None:
        raise UsageError(f"no task was handed out here ({args.state} is empty): run generate_fusion_task.py "
                         "first, or pass --task TASK.json")
    log = handout.log(task, Path(args.runs))
    if (outcome := log.outcome()) is not None:
        raise UsageError(f"task {task.id} is already finished ({outcome['outcome']} after {outcome['attempts']} "
                         "attempts): generate a new task")
    if not (log.attempts() and log.attempts()[-1]["passed"]):
        _kernel_file(args.file)
    settings = Settings(path.parent, _dataset(args.data), attempts=args.attempts, timeout=args.timeout)
    echo = (lambda text: None) if args.json else _echo
    entry, outcome = attempt_file(task, path, log, settings, echo)
    if outcome is None:
        echo(f"Attempt {entry['attempt']} of {args.attempts} failed. Fix {path}, dry-run it with `{PROG} check "
             f"{path}` (free), then run `{PROG} attempt {path}` again.")
    if args.json:
        print(json.dumps({**entry, "task_id": task.id, "outcome": outcome}, indent=2))
    return EXIT_OK if entry["passed"] else EXIT_FAIL


def _cmd_data(args: argparse.Namespace) -> int:
    from fusionforge.dataset import Dataset, DatasetError
    from fusionforge.pipeline import outcomes

    dataset = Dataset(args.data)
    try:
        if args.data_command == "export":
            count = dataset.export(args.out, args.format)
            print(json.dumps({"records": count, "out": args.out}) if args.json
                  else f"wrote {count} records to {args.out}")
            return EXIT_OK
        stats = dataset.stats(outcomes(Path(args.runs)))
    except DatasetError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None
    print(json.dumps(stats, indent=2) if args.json else _render_stats(stats, dataset.root))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from fusionforge.dataset import Dataset, DatasetError
    from fusionforge.report import render

    dataset = Dataset(args.data)
    if not dataset.index.exists():
        raise UsageError(f"{args.data} holds no dataset (no {dataset.index.name}): give it with --data")
    evaluation = None
    if args.eval:
        try:
            evaluation = json.loads(Path(args.eval).read_text())
            evaluation["metrics"]["fast_p"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--eval {args.eval}: not an eval's results.json ({e})") from None
    try:
        page = render(dataset, Path(args.runs), args.kernels, evaluation)
        write_text(Path(args.out), page)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}") from None
    count = dataset.count()
    print(json.dumps({"out": args.out, "kernels": count}) if args.json
          else f"wrote {args.out}: {count} kernels, {min(count, args.kernels)} with their panels")
    return EXIT_OK


def _render_stats(stats: dict, root: Path) -> str:
    lines = [f"{root}/: {stats['kernels']} kernels ({stats['timed']} timed on a GPU, {stats['pending']} verified, "
             "not timed)"]
    if stats.get("tasks_attempted"):
        lines.append(f"tasks attempted {stats['tasks_attempted']}, landed {stats['tasks_landed']} "
                     f"({stats['success_rate']:.0%}; {stats['first_attempt_rate']:.0%} on the first attempt)")
    if stats["by_implementer"]:
        lines.append("implementers: " + ", ".join(f"{k} {v}" for k, v in stats["by_implementer"].items()))
        lines.append("attempts used: " + ", ".join(f"{k}: {v}" for k, v in stats["attempts_used"].items()))
    header = f"{'family/dtype':<22} {'kernels':>7} {'timed':>6} {'geomean':>8} {'median':>7} {'min':>6} {'max':>6}"
    lines += ["", header]
    for key, row in [*stats["groups"].items(), ("all", stats["all"])]:
        figures = (f"{row['geomean']:>7.2f}x {row['median']:>6.2f}x {row['min']:>5.2f}x {row['max']:>5.2f}x"
                   if row["timed"] else f"{'-':>8} {'-':>7} {'-':>6} {'-':>6}")
        lines.append(f"{key:<22} {row['kernels']:>7} {row['timed']:>6} {figures}")
    return "\n".join(lines)


def _read_task(path: str | None) -> FusionTask | None:
    if not path:
        return None
    try:
        return FusionTask.from_json(Path(path).read_text())
    except (OSError, ValueError, TaskError) as e:
        raise UsageError(f"cannot read task {path}: {e}") from None


def _add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed, help="seed of the (first) task; random when omitted")
    p.add_argument("--difficulty", choices=DIFFICULTIES, help="easy: pointwise; medium: + a reduction or "
                   "normalization; hard: matmul root with epilogue, or several reductions")
    p.add_argument("--dtype", choices=DTYPES, help="the task's dtype; drawn by the seed when omitted")
    p.add_argument("--count", type=_positive_int, default=1, help="number of tasks (seeds SEED, SEED+1, ...), each "
                   "printed as soon as it is made")
    p.add_argument("--ops", help="force a chain, e.g. linear_bias,add:col,gelu,layer_norm")
    p.add_argument("--family", choices=FAMILIES, help="draw a chain of this family: scan (pointwise ops around "
                   "cumsum, cumprod or logcumsumexp), loss (pointwise ops, then cross-entropy, KL divergence or MSE), "
                   "arg_reduction (pointwise ops, then argmax or argmin: int64 indices), spatial_reduction "
                   "(pointwise ops on [B, C, H, W], mean or max over H, W, pointwise ops), gather (an embedding "
                   "lookup, gather or index_select by int64 indices, then pointwise ops, maybe around a reduction or "
                   "normalization), pooling (pointwise ops on [B, C, H, W], max_pool2d or avg_pool2d, pointwise ops), "
                   "attention (scaled dot-product attention over [B, NH, S, D], RoPE on q and k or not, then "
                   "pointwise ops), convolution "
                   "(a causal depthwise conv1d over [B, M, N], a conv2d or a depthwise conv2d over [B, K, H, W], with "
                   "bias, then pointwise ops and an inference batch norm) or fp8 (float8 e4m3 values [M, N] times a "
                   "scale a row or one scale, then pointwise ops, maybe around a reduction or normalization)")
    p.add_argument("--out", metavar="FILE", help="also write the task JSON (a list when --count > 1)")
    p.add_argument("--json", action="store_true", help="print the task spec as JSON")
    p.add_argument("--skeleton", action="store_true", help="also write the task's kernel file to fill in, as the "
                   "next free NNN_fused_kernels.py here: TASK (a Python literal), the PyTorch function, get_inputs "
                   "and the main block written, the TRITON section left to write")
    p.add_argument("--current", action="store_true", help="show the task handed out last here (by "
                   "generate_fusion_task.py) again, with the command that prints it")
    p.add_argument("--state", default=".fusionforge", metavar="DIR", help="where handed-out tasks are kept for "
                   "`fusionforge attempt` (default .fusionforge)")


def _add_file_options(p: argparse.ArgumentParser, json_help: str, timeout_help: str, optional: bool = False,
                      many: bool = False) -> None:
    p.add_argument("file", metavar="FILE", nargs=("*" if many else "?") if optional else None,
                   help="kernel files NNN_fused_kernels.py" if many else "a kernel file NNN_fused_kernels.py")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="SECONDS", help=timeout_help)
    p.add_argument("--task", metavar="TASK.json", help="the task that was handed out (default: the file's own "
                   "TASK, else its get_inputs)")


def _lanes(spec: str | None):
    """The lanes for ``--gpus`` (default: every visible GPU); one lane without a GPU."""
    from fusionforge.gpus import Lanes, visible_gpus

    if not visible_gpus():
        return _no_gpus(spec)
    try:
        return Lanes.for_gpus(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _no_gpus(spec: str | None):
    from fusionforge.gpus import Lanes

    if spec not in (None, "all"):
        raise UsageError(f"--gpus {spec}: no CUDA GPU is visible; without one the checks run on the CPU")
    return Lanes.single()


def _check_engine(args: argparse.Namespace) -> None:
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address goes with --engine ray")


def _default_jobs(args: argparse.Namespace, options: dict, lanes) -> int:
    if args.engine == "ray" and options["device"] == "cuda":
        return RAY_JOBS
    return default_jobs(options["device"], len(lanes))


def _ray_lanes(args: argparse.Namespace, device: str | None):
    """A worker on each GPU of the Ray cluster at ``--address`` (``--gpus``: all or a count), as lanes."""
    import importlib

    try:
        ray_engine = importlib.import_module("fusionforge.ray_engine")
    except ImportError as e:
        if (e.name or "").split(".")[0] != "ray":
            raise
        raise UsageError("--engine ray needs ray: pip install 'fusionforge[ray]'") from None
    try:
        return ray_engine.start(args.address, args.gpus, args.jobs or RAY_JOBS, device)
    except (ValueError, ConnectionError) as e:
        raise UsageError(str(e)) from None


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="where the checks and timings "
                   "run: local (default): this machine's GPUs; ray: a worker on each GPU of a Ray cluster "
                   "(pip install 'fusionforge[ray]'), data/ and runs/ still written here only")
    p.add_argument("--address", metavar="auto|HOST:PORT|ray://HOST:10001", help="ray: the cluster to join "
                   "(default: a new local Ray, or RAY_ADDRESS)")


def _add_gpus_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--gpus", metavar="all|N|IDS", help=f"the GPUs to use: all (default), the first N, or ids "
                   f"as 0,2,5 (one id alone: 5,); {what}, each timing with its GPU alone")


def _add_implementer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--implementer", choices=("builtin", "llm"), default="builtin", help="default: builtin")
    p.add_argument("--model", help="llm: the model name the endpoint serves")
    p.add_argument("--base-url", help="llm: an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                   "(default: the openai client's)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="llm: the environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--temperature", type=_temperature, default=0.2, help="llm: sampling temperature (default 0.2)")
    p.add_argument("--max-tokens", type=_positive_int, default=16384, help="llm: reply token limit (default 16384)")


def _add_loop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is present")
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="SECONDS", help="per check and timing run")
    p.add_argument("-j", "--jobs", type=_positive_int, help="tasks worked on at a time on each GPU: checks run "
                   "side by side, each timing has the GPU alone; each task's output is printed when it ends "
                   f"(default: the CPU cores per GPU less two, at most 14; {RAY_JOBS} with --engine ray; 1 without "
                   "a GPU)")
    _add_gpus_option(p, "tasks go to the least busy")
    _add_engine_options(p)


def _add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data", metavar="DIR", help="the dataset folder (default: data)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="the attempt logs (default: runs)")


def _kernel_file(name: str) -> Path:
    path = Path(name)
    if path.is_dir():
        found = sorted(path.glob("*_fused_kernels.py"))
        hint = (f"give one of its {len(found)} kernel files, e.g. {found[0]}" if found
                else "give a kernel file NNN_fused_kernels.py")
        raise UsageError(f"{name} is a folder, not a kernel file: {hint} (`{PROG} bench {name.rstrip('/')}/*.py` "
                         "checks and times several)")
    if not path.is_file():
        raise UsageError(f"no such file: {name}")
    return path


def _whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (counts, jobs, attempts, tokens >= 1; seeds >= 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, not {text!r}")
        return value

    return parse


def _real_number(minimum: float, what: str = "a number", inclusive: bool = True):
    """An argparse type: a finite number >= ``minimum`` (> it when not ``inclusive``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= minimum if inclusive else value > minimum)):
            raise argparse.ArgumentTypeError(f"must be {what} {'>=' if inclusive else '>'} {minimum:g}, not {text!r}")
        return value

    return parse


_positive_int = _whole_number(1)
_seed = _whole_number(0)
_seconds = _real_number(0, "a number of seconds", inclusive=False)  # a limit of 0 would fail every attempt as a hang
_temperature = _real_number(0)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Generate fusion tasks, implement them in PyTorch and Triton, verify, benchmark, "
                    "and keep the kernels that are correct and faster.")
    parser.add_argument("--version", action="version", version=f"fusionforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("task", help="generate fusion tasks", description="Generate reproducible fusion tasks "
                       "and print them as a numbered list of operations to fuse (or JSON).")
    _add_task_options(p)
    p.add_argument("--from-kernelbench", metavar="PROBLEM.py", help="instead of generating: the task of a problem "
                   "in KernelBench's format (Model, get_inputs, get_init_inputs), its reference the problem's module "
                   "in float64 on the weights the kernel is given (--dtype default float32, --seed default 0)")
    p.add_argument("--test-dims", metavar="NAME=N,...", default="", help="with --from-kernelbench: test sizes "
                   "that set some of the problem's integer constants smaller, for Triton's interpreter on a CPU "
                   "(default: the problem's own sizes)")
    p.set_defaults(func=_cmd_task)

    p = sub.add_parser("check", help="check a kernel file's Triton implementation against the reference",
                       description="Run FILE in an isolated child process and judge its Triton kernel: format, "
                       "compilation, execution, shape, dtype, values against a float64 reference, and the "
                       "defences against cheating. Exit 0 pass, 1 fail, 2 usage error.")
    _add_file_options(p, "print the verdict as JSON", "kill the candidate when no call of its wrapper has ended for "
                      "this long, or at 4 times it in all (default 300)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is present, else cpu "
                   "(Triton's interpreter, test shapes only)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="input draws for files without a TASK")
    p.add_argument("--state", default=".fusionforge", metavar="DIR", help="the handed-out tasks (default "
                   ".fusionforge): a file whose TASK names one is checked against it, as `attempt` would")
    p.add_argument("--runs", default="runs", metavar="DIR", help="the attempt logs, to say which attempt the "
                   "file would be (default: runs)")
    p.add_argument("--memcheck", action="store_true", help="on a GPU: run the file under compute-sanitizer's memcheck "
                   "and fail it as `memory` on any out-of-bounds access (slower; on the CPU every access is "
                   "bounds-checked always)")
    p.add_argument("--build-target", metavar="sm_90|none",
                   help="on the CPU: compile a passing file's kernels for this GPU (sm_90: Hopper) at the bench shape "
                   "and fail the file where a kernel cannot fit its shared memory, as it would there (default "
                   "$FUSIONFORGE_BUILD_TARGET, else sm_90; none: skip)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("bench", help="check, then time kernel files against PyTorch eager and torch.compile",
                       description="Check FILE, then (on a CUDA GPU) time PyTorch eager, torch.compile and the "
                       "Triton wrapper at the bench shape in one isolated process, and judge the speed with a "
                       "roofline. Without a GPU it checks and records 'not timed'. Several files: their checks "
                       "run --jobs at a time (on a GPU, with their compilation), then each file is timed with the "
                       "GPU to itself. Exit 0 correct and faster (or verified, not timed), 1 fail, slower or "
                       "suspicious (any file), 2 usage error, 130 interrupted (with --json, the files finished "
                       "so far are printed).")
    _add_file_options(p, "print every raw figure and the context as JSON (a list for several files)",
                      "limit for the check and for the timing run (default 300)", optional=True, many=True)
    p.add_argument("-j", "--jobs", type=_positive_int, default=4, help="checks run at a time on each GPU with "
                   "several files (default 4)")
    _add_gpus_option(p, "several files are spread over them")
    _add_engine_options(p)
    p.add_argument("--pending", action="store_true", help="instead of FILE: time every record in data/ that was "
                   "verified without a GPU; keep those that are faster (with their timings), drop the others")
    _add_store_options(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("implement", help="write a kernel file for a task with the built-in code generator",
                       description="Render TASK.json as a complete kernel file in the seed format (PyTorch function, "
                       "Triton kernel and wrapper, TEST section, main block). Exit 0 written, 1 no plan for this "
                       "chain yet, 2 usage error.")
    p.add_argument("task", metavar="TASK.json", help="a task spec (fusionforge task --json --out TASK.json)")
    p.add_argument("-o", "--output", metavar="FILE", help="default: the next free NNN_fused_kernels.py here")
    p.set_defaults(func=_cmd_implement)

    p = sub.add_parser("run", help="the attempt loop: generate tasks, implement, check and bench, retry, keep",
                       description="For each task: print it; for attempt 1..N write NNN_fused_kernels.py with the "
                       "implementer (it sees every earlier attempt and its failure analysis), check and bench it, "
                       "print the FINAL TEST REPORT or the FAILURE ANALYSIS; a pass moves the file to data/ with its "
                       "record, the last failure deletes it. Every attempt is logged under runs/. Exit 0 every task "
                       "kept, 1 some task failed, 2 usage error, 130 interrupted (resume with --resume).")
    p.add_argument("-n", "--count", type=_positive_int, default=1, help="number of tasks (default 1)")
    p.add_argument("--seed", type=_seed, help="seed of the first task (tasks SEED, SEED+1, ...); random when omitted")
    p.add_argument("--difficulty", choices=DIFFICULTIES, help="every task's difficulty (default: drawn per task)")
    p.add_argument("--dtype", choices=DTYPES, help="every task's dtype (default: drawn per task)")
    p.add_argument("--ops", help="force a chain for every task, e.g. linear_bias,gelu,layer_norm")
    p.add_argument("--family", choices=FAMILIES, help="every task a chain of this family (" + ", ".join(FAMILIES) + ")")
    _add_implementer_options(p)
    p.add_argument("--attempts", type=_positive_int, default=3, help="attempts per task (default 3)")
    p.add_argument("--workdir", default=".", metavar="DIR", help="where NNN_fused_kernels.py is written "
                   "(default: here)")
    _add_store_options(p)
    p.add_argument("--resume", nargs="?", const="", metavar="RUN", help="continue an interrupted run (default: "
                   "the newest in --runs); its own options apply")
    _add_loop_options(p)
    p.add_argument("--json", action="store_true", help="print only a JSON summary (reports stay in runs/)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("eval", help="a kernel-writing model (or the built-in implementer) over a versioned "
                       "task suite: correctness, fast_p, pass@k",
                       description="Run the attempt loop over every task of --suite, --samples times each, then "
                       "compute the field's metrics from the attempt logs: correctness, fast_p against eager and "
                       "torch.compile (correct and speedup > p), pass@k (unbiased), geometric-mean speedups, the "
                       "mean fraction of the roofline floor, per difficulty, op family and dtype, and token usage. "
                       "Writes OUT/<eval id>/results.json and results.jsonl (a line per task sample) with the "
                       "suite's content hash, the device and the versions. Exit 0 written, 2 usage error, 130 "
                       "interrupted (continue with --resume).")
    p.add_argument("--suite", help="the task suite (default small-v1: 18 tasks; full-v1: 108)")
    p.add_argument("--kernelbench", metavar="DIR", help="instead of --suite: every KernelBench problem in DIR "
                   "(*.py; a folder named levelN gives that difficulty), each at its own sizes; the suite's hash "
                   "covers the problems' code")
    p.add_argument("--dtype", choices=DTYPES, help="with --kernelbench: the problems' dtype (default float32)")
    p.add_argument("--samples", type=_positive_int, default=1, metavar="K", help="samples per task (default 1)")
    p.add_argument("--attempts", type=_positive_int, default=1, help="attempts per sample: 1 (default) without "
                   "the retry loop, 3 with it")
    _add_implementer_options(p)
    p.add_argument("--files", metavar="DIR", help="instead of an implementer: an outside agent's files, "
                   "DIR/<task id>.py (or DIR/<task id>/<k>.py for sample k; a KernelBench problem's also "
                   "DIR/<problem name>.py), one attempt each")
    p.add_argument("--out", default="evals", metavar="DIR", help="where evals are kept (default: evals)")
    p.add_argument("--resume", nargs="?", const="", metavar="EVAL", help="continue an interrupted eval (default: "
                   "the newest in --out); its own options apply")
    _add_loop_options(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("attempt", help="the outside-agent workflow: judge FILE as the next attempt at the task "
                       "handed out here",
                       description="Check and bench FILE against the task that generate_fusion_task.py handed out "
                       "in this folder (the one FILE's TASK names, else the newest), as attempt 1, 2 or 3 of it. "
                       "A pass moves FILE to data/ with its record; the third failure deletes FILE. Attempts are "
                       "logged under runs/agent/. Exit 0 pass, 1 fail, 2 usage error.")
    p.add_argument("file", metavar="FILE", help="the kernel file NNN_fused_kernels.py for the handed-out task")
    p.add_argument("--task", metavar="TASK.json", help="hand this task out first (instead of generate_fusion_task.py)")
    p.add_argument("--state", default=".fusionforge", metavar="DIR", help="the handed-out tasks (default "
                   ".fusionforge)")
    p.add_argument("--attempts", type=_positive_int, default=3, help="attempts per task (default 3)")
    _add_store_options(p)
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="SECONDS", help="limit for the check and "
                   "for the timing run (default 300)")
    p.add_argument("--json", action="store_true", help="print the attempt's log entry as JSON")
    p.set_defaults(func=_cmd_attempt)

    p = sub.add_parser("data", help="the dataset: stats, export", description="Inspect or export data/: "
                       "`data stats` or `data export OUT` (each has --help).")
    data = p.add_subparsers(dest="data_command", metavar="ACTION")
    data.required = True
    q = data.add_parser("stats", help="counts, success rates, speedups per op family and dtype",
                        description="What data/ holds: kernels (timed on a GPU or verified, not timed), the tasks "
                        "attempted and landed (from the logs in --runs), and per op family and dtype the speedups "
                        "over PyTorch eager (geomean, median, min, max).")
    _add_store_options(q)
    q.add_argument("--json", action="store_true", help="print the figures as JSON")
    q.set_defaults(func=_cmd_data)
    q = data.add_parser("export", help="every record with its kernel source: JSON lines, Parquet, or a "
                        "Hugging Face-ready folder",
                        description="Write every record of data/index.jsonl with its kernel file's source to OUT. "
                        "--format hf writes the folder OUT: Parquet shards under OUT/data/ with KernelBook's "
                        "columns (python_code, triton_code, entry_point) beside fusionforge's, and a dataset card, "
                        "OUT/README.md; `datasets` loads it as it is.")
    q.add_argument("out", metavar="OUT", help="the file to write (the folder with --format hf)")
    q.add_argument("--format", choices=("jsonl", "parquet", "hf"), default="jsonl", help="jsonl (default): one "
                   "JSON record a line; parquet: one file; hf: a folder for the Hugging Face Hub (parquet and "
                   "hf need pyarrow)")
    _add_store_options(q)
    q.add_argument("--json", action="store_true", help="print a JSON summary (records written, OUT)")
    q.set_defaults(func=_cmd_data)

    p = sub.add_parser("report", help="data/ and runs/ as one self-contained HTML page",
                       description="Write one HTML file (inline SVG and CSS: it opens offline) with the headline "
                       "numbers, the figures per family, dtype and difficulty, the speedups over eager and "
                       "torch.compile, the roofline plot, attempts and failure categories, and a panel per kernel "
                       "with its timings and source.")
    p.add_argument("-o", "--out", default="report.html", metavar="FILE", help="the page (default: report.html)")
    p.add_argument("--kernels", type=_seed, default=200, metavar="N", help="kernel panels shown, the first N "
                   "records (default 200)")
    p.add_argument("--eval", metavar="RESULTS.json", help="an eval's results (fusionforge eval): its metrics and "
                   "fast_p curve")
    _add_store_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary (the page, kernels in it)")
    p.set_defaults(func=_cmd_report)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A kill (SIGTERM: `timeout`, a job scheduler) stops a command the way Ctrl-C does, so data/ and runs/
    # stay consistent; it also works where SIGINT is ignored (processes started in the background).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _broken_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly. What Python would still flush at exit
    goes nowhere instead of raising again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured by a test): nothing is left to flush
        pass
    return EXIT_OK


def task_main(argv: list[str] | None = None) -> int:
    """Entry point of generate_fusion_task.py: the ``task`` subcommand on its own."""
    parser = Parser(prog=os.path.basename(sys.argv[0]) or "generate_fusion_task.py",
                    description="Generate a fusion task and hand it out here: it is kept in --state for "
                    "`fusionforge attempt` (the same options as `fusionforge task`).")
    _add_task_options(parser)
    parser.set_defaults(hand_out=True)
    args = parser.parse_args(argv)
    try:
        return _cmd_task(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()
