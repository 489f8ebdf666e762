"""The attempt loop: implement, check and bench, analyse, retry; keep the winner or delete the file.

For each task, attempts 1..N (3 by default, the users' rule): the implementer gets the task and every
earlier attempt's source and failure analysis and writes ``NNN_fused_kernels.py`` in the work
folder (one number per task, rewritten by each attempt); the file is checked and benched. A pass
(correct, and faster on a GPU; verified and "not timed" without one) moves the file to data/ with
its record; after the last failed attempt the file is deleted.

Every attempt is logged under ``runs/<run>/<NNN>-<task id>/`` whatever happens: failures are data too::

    run.json                 the run's options and task seeds (what --resume needs)
    NNN-<task id>/task.json  the task; state.json: the work file in use
    NNN-<task id>/attempt_K.py, attempt_K.json   source, verdict, report, implementer usage and variant, the
                                                 lane (GPU), seconds per step (implement, check, prepare,
                                                 timing, waits at the GPU's gate)
    NNN-<task id>/outcome.json                   kept | duplicate | failed, written last

Each file is written whole under a temporary name and renamed, so an interrupt leaves the log, the
work folder and data/ consistent: a resumed run continues each unfinished task at its next attempt.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from fusionforge.atomic import write_json, write_text
from fusionforge.bench import BenchResult, bench_files, bench_in_lane, render_report
from fusionforge.dataset import Dataset, make_record, now
from fusionforge.gpus import Lanes, current_lane, stop_workers
from fusionforge.implement.base import Implementation, Implementer, PastAttempt
from fusionforge.kernelfile import next_free_path
from fusionforge.tasks import FusionTask, TaskGenerator
from fusionforge.verify.verdict import Failure, render_failure, symbol, use_symbols

ATTEMPTS = 3
Echo = Callable[[str], None]


def claim_path(folder: Path) -> Path:
    """Create and return the next free ``NNN_fused_kernels.py`` in ``folder`` (safe with several runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = next_free_path(folder)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue


class TaskLog:
    """One task's attempt log: ``task.json``, ``state.json``, ``attempt_K.{py,json}``, ``outcome.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, task: FusionTask) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "task.json").exists():
            write_json(self.folder / "task.json", task.to_dict())

    def attempts(self) -> list[dict]:
        """The logged attempts, in order."""
        entries = []
        number = 1
        while (path := self.folder / f"attempt_{number}.json").exists():
            entries.append(json.loads(path.read_text()))
            number += 1
        return entries

    def source(self, number: int) -> str | None:
        path = self.folder / f"attempt_{number}.py"
        return path.read_text() if path.exists() else None

    def history(self) -> list[PastAttempt]:
        return [PastAttempt(e["attempt"], self.source(e["attempt"]), e["report"], e["failure"], e.get("variant"))
                for e in self.attempts()]

    def save_attempt(self, number: int, source: str | None, entry: dict) -> None:
        if source is not None:
            write_text(self.folder / f"attempt_{number}.py", source)
        write_json(self.folder / f"attempt_{number}.json", entry)

    @property
    def work_file(self) -> Path | None:
        path = self.folder / "state.json"
        return Path(json.loads(path.read_text())["work_file"]) if path.exists() else None

    @work_file.setter
    def work_file(self, path: Path) -> None:
        write_json(self.folder / "state.json", {"work_file": str(path)})

    def outcome(self) -> dict | None:
        path = self.folder / "outcome.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, outcome: dict) -> dict:
        write_json(self.folder / "outcome.json", outcome)
        return outcome


@dataclass
class Settings:
    """Where an attempt's files go and how it is judged."""

    workdir: Path
    dataset: Dataset
    attempts: int = ATTEMPTS
    device: str | None = None
    timeout: float = 300.0
    run: str | None = None
    lanes: Lanes | None = None  # the GPUs (a lane each) the tasks running at once share; None: one task at a time


def judge_attempt(task: FusionTask, path: Path, attempt: int, implementation: Implementation,
                  implementer: str, log: TaskLog, settings: Settings, echo: Echo,
                  implement_seconds: float | None = None) -> dict:
    """Check and bench one attempt (or take the implementer's failure), print and log it; its log entry
    (with the seconds of each step: ``implement_seconds``, given, and the bench's ``phases``)."""
    start = time.perf_counter()
    result = None
    phases: dict[str, float] = {}
    lane = current_lane()
    if settings.lanes is None and (lane is None or lane.worker is None):
        lane = None  # the one task running, here: no gate to share
    if implementation.source is None:
        failure = implementation.failure
        report, plain = render_failure(failure, attempt), render_failure(failure, attempt, fancy=False)
    else:
        result = bench_in_lane(lane, path, task, settings.timeout, settings.device, phases)
    if result is not None:
        failure = result.check.failure or result.failure
        report, plain = render_report(result, attempt), render_report(result, attempt, fancy=False)
        if failure is None and result.suspicious:
            failure = Failure("cheat", "Triton", "suspicious timing: " + "; ".join(result.suspicious),
                              "The timing run saw something a real kernel does not do.",
                              "Remove whatever hides work from the timed stream or patches the timers.")
    echo(report)
    entry = {"attempt": attempt, "file": str(path) if implementation.source is not None else None,
             "implementer": implementer, "model": implementation.model, "variant": implementation.variant,
             "usage": implementation.usage,
             "passed": bool(result is not None and result.passed), "failure": failure.to_dict() if failure else None,
             "result": result.to_dict() if result is not None else None, "report": plain,
             "seconds": round(time.perf_counter() - start, 3), "implement_seconds": implement_seconds,
             "phases": {name: round(seconds, 3) for name, seconds in phases.items()},
             "lane": lane.name if lane is not None else None, "finished": now()}
    log.save_attempt(attempt, implementation.source, entry)
    return entry


def keep(task: FusionTask, path: Path, entry: dict, source: str, implementer: str, log: TaskLog,
         settings: Settings, echo: Echo) -> dict:
    """Move a passing file into data/ with its record (built from the attempt's log entry); close the log."""
    result = BenchResult.from_dict(entry["result"])
    record = make_record(task, source, result, implementer, entry["model"], entry["attempt"], run=settings.run,
                         usage=entry["usage"])
    record, added = settings.dataset.add(path, record)
    # an interrupt after the record was appended and before the log was closed: it is this attempt's
    added = added or (record["task"]["id"] == task.id and record.get("run") == settings.run
                      and record["attempts"] == entry["attempt"])
    where = settings.dataset.root / record["file"]
    fancy = use_symbols()
    if added:
        echo(f"{symbol('done', fancy)} kept: {where} (record {record['id']})")
    else:
        echo(f"{symbol('done', fancy)} already in the dataset: {where} (record {record['id']}); not added twice")
    return log.finish({"task_id": task.id, "outcome": "kept" if added else "duplicate",
                       "attempts": entry["attempt"], "file": str(where), "record": record["id"],
                       "speedup": record.get("speedup"), "timed": record.get("timed"), "finished": now()})


def keep_logged(task: FusionTask, path: Path, implementer: str, log: TaskLog, settings: Settings,
                echo: Echo) -> dict:
    """Keep a task whose last logged attempt passed but was interrupted on its way to data/."""
    entry = log.attempts()[-1]
    source = log.source(entry["attempt"])
    write_text(path, source)
    echo(f"Attempt {entry['attempt']} of task {task.id} had passed; keeping it now.")
    return keep(task, path, entry, source, implementer, log, settings, echo)


def give_up(task: FusionTask, path: Path | None, attempts: int, log: TaskLog, echo: Echo) -> dict:
    """After the last failed attempt: delete the file, report, close the log."""
    if path is not None:
        path.unlink(missing_ok=True)
    echo(f"{symbol('fail', use_symbols())} FINAL FAILURE: task {task.id} failed {attempts} attempts; "
         f"{'deleted ' + str(path) + '; ' if path else ''}the attempt log is kept in {log.folder}")
    return log.finish({"task_id": task.id, "outcome": "failed", "attempts": attempts, "file": None,
                       "record": None, "speedup": None, "timed": None, "finished": now()})


def attempt_task(task: FusionTask, implementer: Implementer, log: TaskLog, settings: Settings,
                 echo: Echo = print) -> dict:
    """Run a task's remaining attempts (all of them, or those after the logged ones); its outcome."""
    log.start(task)
    if (outcome := log.outcome()) is not None:
        return outcome
    path = log.work_file
    if path is None:
        path = claim_path(settings.workdir)
        try:
            log.work_file = path
        except BaseException:  # claimed but unrecorded: no resume would ever use or delete it
            path.unlink(missing_ok=True)
            raise
    history = log.history()
    if history and log.attempts()[-1]["passed"]:
        return keep_logged(task, path, implementer.name, log, settings, echo)
    for attempt in range(len(history) + 1, settings.attempts + 1):
        if settings.lanes is not None:
            settings.lanes.raise_if_stopped()
        started = time.perf_counter()
        implementation = implementer.implement(task, attempt, history)
        implement_seconds = round(time.perf_counter() - started, 3)
        if implementation.exhausted:
            echo(f"No attempt {attempt}: the {implementer.name} implementer has nothing new to try for this task.")
            return give_up(task, path, attempt - 1, log, echo)
        entry, outcome = one_attempt(task, attempt, implementation, implementer.name, path, log, settings, echo,
                                     implement_seconds=implement_seconds)
        if outcome is not None:
            return outcome
        history.append(PastAttempt(attempt, implementation.source, entry["report"], entry["failure"],
                                   implementation.variant))
    return give_up(task, path, settings.attempts, log, echo)  # every attempt was logged before an interrupt


def one_attempt(task: FusionTask, attempt: int, implementation: Implementation, implementer: str, path: Path,
                log: TaskLog, settings: Settings, echo: Echo, origin: Path | None = None,
                implement_seconds: float | None = None) -> tuple[dict, dict | None]:
    """Attempt number ``attempt``: print its header, write the source to ``path``, judge it; keep a pass in
    data/, give the task up after its last failed attempt. Returns the attempt's log entry and the task's
    outcome (None while attempts remain).

    ``origin``: the file an outside agent wrote, when ``path`` is a snapshot of it; it goes when the
    attempt lands in data/ or the task is given up.
    """
    echo(f"=== ATTEMPT {attempt}: {task.description} ===")
    if implementation.source is not None:
        write_text(path, implementation.source)
    entry = judge_attempt(task, path, attempt, implementation, implementer, log, settings, echo, implement_seconds)
    if entry["passed"]:
        outcome = keep(task, path, entry, implementation.source, implementer, log, settings, echo)
        if origin is not None:
            origin.unlink(missing_ok=True)
        return entry, outcome
    if attempt >= settings.attempts:
        return entry, give_up(task, origin or path, attempt, log, echo)
    return entry, None


def attempt_file(task: FusionTask, path: Path, log: TaskLog, settings: Settings, echo: Echo = print,
                 implementer: str = "agent") -> tuple[dict, dict | None]:
    """The outside agent's turn: judge the file at ``path`` as the next attempt at ``task``.

    One snapshot of the file is judged and kept, so edits made while it is checked change nothing. A
    pass that an interrupt stopped on its way to data/ is kept from its log instead (and the file, if
    it is still that attempt's source, removed). Returns the attempt's log entry and the task's outcome
    (None while attempts remain). The caller makes sure the task is not finished yet.
    """
    log.start(task)
    logged = log.attempts()
    with tempfile.TemporaryDirectory(prefix="fusionforge-attempt-") as scratch:
        judged = Path(scratch) / (path.name if path.suffix == ".py" else "001_fused_kernels.py")
        if logged and logged[-1]["passed"]:
            outcome = keep_logged(task, judged, implementer, log, settings, echo)
            if path.is_file() and path.read_text() == log.source(logged[-1]["attempt"]):
                path.unlink()
            return logged[-1], outcome
        source = path.read_text()
        return one_attempt(task, len(logged) + 1, Implementation(source=source), implementer, judged, log, settings,
                           echo, origin=path)


class Run:
    """``runs/<id>/``: one invocation of ``fusionforge run`` (options, seeds, one log per task)."""

    def __init__(self, folder: Path, options: dict) -> None:
        self.folder = folder
        self.options = options

    @property
    def id(self) -> str:
        return self.folder.name

    @classmethod
    def create(cls, runs_root: Path, options: dict) -> Run:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        folder = runs_root / f"{stamp}-{secrets.token_hex(2)}"
        folder.mkdir(parents=True)
        options = {**options, "created": now()}
        write_json(folder / "run.json", options)
        return cls(folder, options)

    @classmethod
    def load(cls, runs_root: Path, run_id: str | None = None) -> Run:
        """The named run, or the newest one; FileNotFoundError when there is none."""
        if run_id:
            folder = runs_root / run_id
        else:
            candidates = sorted(p for p in runs_root.glob("*/run.json")) if runs_root.is_dir() else []
            if not candidates:
                raise FileNotFoundError(f"no run to resume in {runs_root}")
            folder = max(candidates, key=lambda p: json.loads(p.read_text())["created"]).parent
        if not (folder / "run.json").exists():
            raise FileNotFoundError(f"no run {run_id!r} in {runs_root}")
        return cls(folder, json.loads((folder / "run.json").read_text()))

    def task(self, index: int) -> FusionTask:
        o = self.options
        if o.get("tasks"):  # an eval: the suite's tasks, one sample after another
            spec = o["tasks"][index % len(o["tasks"])]
            if "task" in spec:  # carried whole (a KernelBench problem)
                return FusionTask.from_dict(spec["task"])
            return TaskGenerator().generate(spec["seed"], spec["difficulty"], spec["dtype"])
        return TaskGenerator().generate(o["seed"] + index, o.get("difficulty"), o.get("dtype"), o.get("ops"),
                                        o.get("family"))

    def sample(self, index: int) -> int:
        """Which sample of its task ``index`` is: 1, 2, ... in an eval; 1 in a run."""
        tasks = self.options.get("tasks")
        return index // len(tasks) + 1 if tasks else 1

    def log(self, index: int, task: FusionTask) -> TaskLog:
        return TaskLog(self.folder / f"{index + 1:03d}-{task.id}")


def run_tasks(run: Run, implementer: Implementer, settings: Settings, jobs: int = 1, echo: Echo = print,
              header: Callable[[FusionTask], str] = lambda task: task.description,
              advance: Callable[[dict], None] = lambda outcome: None) -> list[dict]:
    """Every task of ``run`` (those finished before an interrupt are skipped), ``jobs`` at a time on each of
    ``settings.lanes`` (the GPUs); the outcomes in task order. ``header(task)`` is printed before a task's
    attempts, ``advance(outcome)`` called as each task ends.

    Each task works in the least busy lane, whose children see that GPU only. With more than one task at
    a time the attempt loops run in threads (the work itself runs in child processes): on each GPU the
    checks run side by side and each timing has the GPU alone (the lane's gate), and a task's output is
    printed whole when it ends. Any exception, Ctrl-C included, stops every gate and kills the running
    children, and no attempt cut short is recorded: ``--resume`` redoes it.
    """
    lanes = settings.lanes or Lanes.single()
    alone = jobs == 1 and len(lanes) == 1
    settings = replace(settings, lanes=None if alone else lanes)  # the caller's Settings stay as they were

    def one(index: int, out: Echo) -> dict:
        task = run.task(index)
        log = run.log(index, task)
        if log.outcome() is None:
            out("\n" + header(task))
        per_sample = getattr(implementer, "for_sample", None)  # an implementer whose samples differ (files)
        with lanes.take():
            return attempt_task(task, per_sample(run.sample(index)) if per_sample else implementer, log,
                                settings, out)

    count = run.options["count"]
    if alone:
        results = []
        for index in range(count):
            results.append(one(index, echo))
            advance(results[-1])
        return results

    def buffered(index: int) -> tuple[dict, list[str]]:
        lines: list[str] = []
        return one(index, lines.append), lines

    results: list[dict | None] = [None] * count
    with ThreadPoolExecutor(jobs * len(lanes)) as pool:
        futures = {pool.submit(buffered, index): index for index in range(count)}
        try:
            for future in as_completed(futures):
                outcome, lines = future.result()
                for line in lines:
                    echo(line)
                results[futures[future]] = outcome
                advance(outcome)
        except BaseException:
            stop_workers(lanes, pool, futures)
            raise
    return results


def outcomes(runs_root: Path) -> list[dict]:
    """Every finished task's outcome under ``runs_root`` (loop runs and outside-agent attempts)."""
    if not runs_root.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(runs_root.glob("*/*/outcome.json"))]


def time_pending(dataset: Dataset, runs_root: Path, jobs: int = 1, timeout: float = 300.0,
                 echo: Echo = print, lanes: Lanes | None = None) -> dict:
    """Bench every record verified without a GPU (on each of ``lanes``, checks ``jobs`` at a time and timings
    one at a time): keep it (with its timings) if faster, else drop it.

    A failure of the harness itself (the timing process died) says nothing of the kernel: the record
    stays pending for the next run. Each verdict is logged in ``runs/pending/<record id>.json``.
    Returns counts {kept, dropped, still_pending}.
    """
    log_folder = runs_root / "pending"
    log_folder.mkdir(parents=True, exist_ok=True)
    counts = {"kept": 0, "dropped": 0, "still_pending": 0}
    records = dataset.pending()
    tasks = [FusionTask.from_dict(record["task"]) for record in records]
    paths = [dataset.root / record["file"] for record in records]

    def settle(k: int, result: BenchResult) -> None:
        record, task, path = records[k], tasks[k], paths[k]
        echo(f"=== PENDING {record['id']}: {record['description']} ===")
        echo(render_report(result, record["attempts"]))
        write_json(log_folder / f"{record['id']}.json", {"record": record["id"], "result": result.to_dict(),
                                                          "kept": result.passed, "finished": now()})
        if result.passed:
            timed = make_record(task, path.read_text(), result, record["implementer"], record["model"],
                                record["attempts"], run=record.get("run"), usage=record.get("usage"))
            dataset.replace(record["id"], {**timed, "id": record["id"], "file": record["file"],
                                           "created": record["created"], "timed_at": now()})
            counts["kept"] += 1
        elif getattr(result.check.failure or result.failure, "implementation", None) == "Harness":
            echo(f"still pending {record['id']}: the harness failed, not the kernel")
            counts["still_pending"] += 1
        else:
            dataset.replace(record["id"], None)
            echo(f"dropped {record['id']}: {path} deleted")
            counts["dropped"] += 1

    bench_files(paths, tasks, jobs=jobs, timeout=timeout, device="cuda", done=settle, lanes=lanes)
    return counts
