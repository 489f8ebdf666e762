"""`fusionforge eval`: versioned task suites, and the field's metrics over an eval run's attempt logs.

A suite is a published list of tasks (``suites/<name>.json``: seed, difficulty, dtype and the task id,
signature and op family the generator made of them), the same seeds for every difficulty and dtype; its
content hash goes with every result so that two teams' numbers are known to be over the same tasks. An
eval is a run of the attempt loop over the suite's tasks, ``samples`` times each (sample-major: every
task's first sample first), whose attempt logs the metrics are read from:

* correctness: the share of samples whose last attempt passed the check (a correct kernel that is not
  faster is correct; a failure of any other kind, a cheat or a suspicious timing counts as incorrect);
* fast_p (KernelBench's): the share of samples correct *and* faster than the baseline by more than p
  (speedup > p), for p in FAST_P, against eager and against torch.compile; None without a GPU to time;
* pass@k: the unbiased estimator 1 - C(n - c, k) / C(n, k) per task (n samples, c correct), averaged
  over the tasks, for each k in PASS_AT_K up to n;
* the geometric-mean speedup over eager and over torch.compile of the correct, timed samples, and their
  mean fraction of the roofline floor; the same per difficulty, op family and dtype; the requests, tokens
  and cost (where the endpoint reports a price) summed over the samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from fusionforge.dataset import geomean
from fusionforge.tasks import DIFFICULTIES, DTYPES, TaskGenerator

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_SEEDS = {"small-v1": range(2), "full-v1": range(12)}  # per difficulty and dtype
FAST_P = (0.0, 1.0, 1.2, 1.5, 2.0)
PASS_AT_K = (1, 5, 10)


class SuiteError(Exception):
    """An unknown suite, or one this version's task generator no longer reproduces."""


def build_suite(name: str) -> list[dict]:
    """The task list of suite ``name``, made by the task generator (what ``suites/<name>.json`` holds)."""
    tasks = []
    for difficulty in DIFFICULTIES:
        for dtype in DTYPES:
            for seed in SUITE_SEEDS[name]:
                task = TaskGenerator().generate(seed, difficulty, dtype)
                tasks.append({"seed": seed, "difficulty": difficulty, "dtype": dtype, "task_id": task.id,
                              "signature": task.signature, "family": task.family})
    return tasks


def suite_hash(tasks: list[dict]) -> str:
    return hashlib.sha256(json.dumps(tasks, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_suite(name: str, verify: bool = True) -> dict:
    """Suite ``name``: {name, hash, tasks}; with ``verify``, each task regenerated and compared by id."""
    path = SUITES_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.json")))
        raise SuiteError(f"no suite {name!r}: the suites are {known}")
    tasks = json.loads(path.read_text())["tasks"]
    if verify:
        for spec in tasks:
            made = TaskGenerator().generate(spec["seed"], spec["difficulty"], spec["dtype"])
            if made.id != spec["task_id"]:
                raise SuiteError(f"suite {name}: seed {spec['seed']} {spec['difficulty']} {spec['dtype']} makes "
                                 f"task {made.id}, not {spec['task_id']}: this task generator is not the one the "
                                 "suite was published with")
    return {"name": name, "hash": suite_hash(tasks), "tasks": tasks}


def kernelbench_suite(folder: str | Path, dtype: str = "float32") -> dict:
    """The suite of a folder of KernelBench problems (``*.py``, by name): {name, hash, tasks}, each task's spec
    holding the whole task (the problem's source with it), so the hash covers the problems' code.

    The difficulty is the folder's name when it is a KernelBench level (``level1``), else ``kernelbench``.
    """
    from fusionforge.kernelbench import KIND, KernelBenchTask
    from fusionforge.tasks import TaskError

    folder = Path(folder)
    if not folder.is_dir():
        raise SuiteError(f"--kernelbench {folder}: not a folder")
    paths = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    if not paths:
        raise SuiteError(f"--kernelbench {folder}: no problem files (*.py) in it")
    difficulty = folder.name if re.fullmatch(r"level\d+", folder.name) else KIND
    tasks = []
    for path in paths:
        try:
            task = KernelBenchTask.from_problem(path, dtype)
        except TaskError as e:
            raise SuiteError(f"{path}: {e}") from None
        tasks.append({"seed": task.seed, "difficulty": difficulty, "dtype": dtype, "task_id": task.id,
                      "signature": task.signature, "family": KIND, "task": task.to_dict()})
    return {"name": f"{KIND}:{folder.name}", "hash": suite_hash(tasks), "tasks": tasks}


def suite_of_run(options: dict) -> dict:
    """The suite an eval run was started on: a published one (checked against the hash it began with), or the
    problems it carries itself (a KernelBench folder's)."""
    if options["suite"].startswith("kernelbench:"):  # kernelbench_suite's name
        suite = {"name": options["suite"], "hash": suite_hash(options["tasks"]), "tasks": options["tasks"]}
    else:
        suite = load_suite(options["suite"])
    if suite["hash"] != options["suite_hash"]:
        raise SuiteError(f"suite {suite['name']} has changed since the eval began: its hash was "
                         f"{options['suite_hash'][:12]}, it is {suite['hash'][:12]}")
    return suite


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of a task with ``n`` samples of which ``c`` are correct (k <= n)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def metrics(samples: list[dict]) -> dict:
    """The metrics of ``samples`` (one dict per task sample: task_id, correct, timed, speedup,
    speedup_vs_compile, fraction_of_floor, usage)."""
    total = len(samples)
    correct = [s for s in samples if s["correct"]]
    timed = [s for s in correct if s.get("timed") and s.get("speedup")]
    any_timed = any(s.get("timed") for s in samples)

    def fast(p: float, key: str) -> float | None:
        if not total or (p > 0 and not any_timed):
            return None
        return sum(1 for s in correct if p == 0 or (s.get(key) or 0) > p) / total

    by_task: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by_task[s["task_id"]].append(bool(s["correct"]))
    least = min((len(v) for v in by_task.values()), default=0)
    usage: dict[str, float] = defaultdict(int)
    for s in samples:
        for key in ("requests", "prompt_tokens", "completion_tokens", "cost"):
            if (s.get("usage") or {}).get(key) is not None:
                usage[key] += s["usage"][key]
    fractions = [s["fraction_of_floor"] for s in timed if s.get("fraction_of_floor")]
    return {
        "samples": total, "tasks": len(by_task), "correct": len(correct),
        "correctness": len(correct) / total if total else None,
        "fast_p": {name: {str(p): fast(p, key) for p in FAST_P}
                   for name, key in (("eager", "speedup"), ("torch.compile", "speedup_vs_compile"))},
        "pass_at_k": {str(k): sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / len(by_task)
                      for k in PASS_AT_K if least and k <= least},
        "geomean_speedup": {"eager": geomean([s["speedup"] for s in timed]),
                            "torch.compile": geomean([s["speedup_vs_compile"] for s in timed
                                                       if s.get("speedup_vs_compile")])},
        "mean_fraction_of_floor": sum(fractions) / len(fractions) if fractions else None,
        "usage": dict(usage),
    }


def samples_of(run_folder: Path, tasks: list[dict]) -> list[dict]:
    """One row per finished task sample of the eval run in ``run_folder`` (its attempt logs), in run order."""
    rows = []
    for folder in sorted(p for p in run_folder.iterdir() if (p / "outcome.json").is_file()):
        index = int(folder.name.split("-", 1)[0]) - 1
        spec = tasks[index % len(tasks)]
        outcome = json.loads((folder / "outcome.json").read_text())
        attempts = [json.loads(path.read_text()) for path in sorted(folder.glob("attempt_*.json"),
                                                                    key=lambda p: int(p.stem.split("_")[1]))]
        last = attempts[-1] if attempts else {}
        result = last.get("result") or {}
        failure = (last.get("failure") or {}).get("category")
        usage: dict[str, int] = defaultdict(int)
        for entry in attempts:
            for key, value in (entry.get("usage") or {}).items():
                if isinstance(value, (int, float)):
                    usage[key] += value
        rows.append({"task_id": spec["task_id"], "sample": index // len(tasks) + 1, "seed": spec["seed"],
                     "difficulty": spec["difficulty"], "dtype": spec["dtype"], "family": spec["family"],
                     "correct": outcome["outcome"] in ("kept", "duplicate") or failure == "slower",
                     "attempts": len(attempts),
                     "failure": failure, "timed": bool(result.get("timed")),
                     "speedup": result.get("speedup"), "speedup_vs_compile": result.get("speedup_vs_compile"),
                     "fraction_of_floor": (result.get("roofline") or {}).get("triton_fraction_of_floor"),
                     "usage": dict(usage)})
    return rows


def report(run_folder: Path, suite: dict, options: dict) -> dict:
    """The eval's result: suite, hash, options, device and versions, the metrics overall and per difficulty,
    family and dtype; written as ``results.json`` with ``results.jsonl`` (a line per task sample)."""
    import torch
    import triton

    samples = samples_of(run_folder, suite["tasks"])
    groups = {}
    for key in ("difficulty", "family", "dtype"):
        values = sorted({s[key] for s in samples})
        groups[key] = {value: metrics([s for s in samples if s[key] == value]) for value in values}
    devices = sorted({(json.loads(p.read_text()).get("result") or {}).get("context", {}).get("device")
                      for p in run_folder.glob("*/attempt_*.json")} - {None})
    result = {"suite": suite["name"], "suite_hash": suite["hash"], "run": run_folder.name,
              "implementer": options.get("implementer"), "model": options.get("model"),
              "samples_per_task": options.get("samples"), "attempts": options.get("attempts"),
              "device": options.get("device"), "gpus": devices, "torch": torch.__version__,
              "triton": triton.__version__, "complete": len(samples) == options.get("count"),
              "metrics": metrics(samples), "by": groups}
    (run_folder / "results.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run_folder / "results.json").write_text(json.dumps(result, indent=1))
    return result
