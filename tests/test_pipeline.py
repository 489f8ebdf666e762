"""The attempt loop, the outside-agent workflow and the run command, end to end on the CPU."""

import json
from dataclasses import replace

import pytest
from conftest import run_args

from fusionforge import cli
from fusionforge.dataset import Dataset, code_hash
from fusionforge.implement import BuiltinImplementer, Implementation
from fusionforge.pipeline import Settings, TaskLog, attempt_task
from fusionforge.tasks import TaskGenerator

TASK = TaskGenerator().generate(5, difficulty="easy")
STORE = "h.to(out_ptr.dtype.element_ty)"


def wrong_values(source: str) -> str:
    """The generated file with every stored value off by 1%: runs fine, fails on values."""
    assert STORE in source
    return source.replace(STORE, "(h * 1.01).to(out_ptr.dtype.element_ty)")


class Scripted:
    """An implementer that replays a script of sources and records the history it was shown."""

    name = "scripted"
    model = "script-1"

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.seen: list[list] = []

    def implement(self, task, attempt, history):
        self.seen.append(list(history))
        step = self.script[attempt - 1]
        if step is None:
            from fusionforge.verify.verdict import Failure

            return Implementation(None, Failure("format", "Both", "the reply has no code block with a kernel file",
                                                "no file", "reply with a file"), usage={"requests": 1})
        return Implementation(step(BuiltinImplementer().implement(task, attempt, history).source), model=self.model)


def settings(tmp_path) -> Settings:
    return Settings(tmp_path / "work", Dataset(tmp_path / "data"), device="cpu", timeout=240, run="test")


def test_task_that_fails_three_times_is_deleted_and_its_log_kept(tmp_path):
    implementer = Scripted(None, wrong_values, wrong_values)
    log = TaskLog(tmp_path / "runs" / "001")
    printed = []
    outcome = attempt_task(TASK, implementer, log, settings(tmp_path), printed.append)

    assert outcome["outcome"] == "failed" and outcome["attempts"] == 3
    assert not list((tmp_path / "work").glob("*_fused_kernels.py")), "the failed file must be deleted"
    assert Dataset(tmp_path / "data").records() == []
    entries = log.attempts()
    assert [e["attempt"] for e in entries] == [1, 2, 3]
    assert [e["failure"]["category"] for e in entries] == ["format", "mismatch", "mismatch"]
    assert not (log.folder / "attempt_1.py").exists() and (log.folder / "attempt_3.py").exists()
    # every attempt sees every earlier one, with its failure analysis
    assert [len(h) for h in implementer.seen] == [0, 1, 2]
    assert "FAILURE ANALYSIS - ATTEMPT 1" in implementer.seen[1][0].report
    assert "FAILURE ANALYSIS - ATTEMPT 2" in implementer.seen[2][1].report
    assert implementer.seen[2][1].source == (log.folder / "attempt_2.py").read_text()
    text = "\n".join(printed)
    assert "=== ATTEMPT 3:" in text and "FINAL FAILURE" in text
    assert log.outcome() == outcome


def test_success_on_attempt_two_lands_in_data_with_its_record(tmp_path):
    implementer = Scripted(wrong_values, lambda source: source)
    log = TaskLog(tmp_path / "runs" / "001")
    outcome = attempt_task(TASK, implementer, log, settings(tmp_path), lambda text: None)

    assert outcome["outcome"] == "kept" and outcome["attempts"] == 2
    assert not list((tmp_path / "work").glob("*_fused_kernels.py")), "the file moved to data/"
    [record] = Dataset(tmp_path / "data").records()
    kept = tmp_path / "data" / record["file"]
    assert record["file"] == "001_fused_kernels.py" and kept.exists()
    assert record["code_hash"] == code_hash(kept.read_text())
    assert record["attempts"] == 2 and record["implementer"] == "scripted" and record["model"] == "script-1"
    assert record["task"] == TASK.to_dict() and record["signature"] == TASK.signature
    assert record["timed"] is False and "not timed" in record["note"]
    assert len([c for c in record["checks"] if not c["label"].endswith(" edge")]) == 9  # with unseen and wide
    assert all(c["rel_err"] <= c["tolerance"] for c in record["checks"])
    assert record["torch"] and record["triton"] and record["created"]
    assert "FAILURE ANALYSIS - ATTEMPT 1" in implementer.seen[1][0].report


def test_an_exhausted_implementer_ends_the_task_early(tmp_path):
    class OnceOnly(Scripted):
        def implement(self, task, attempt, history):
            if attempt > 1:
                return Implementation(None, exhausted=True)
            return super().implement(task, attempt, history)

    printed = []
    log = TaskLog(tmp_path / "runs" / "001")
    outcome = attempt_task(TASK, OnceOnly(wrong_values), log, settings(tmp_path), printed.append)
    assert outcome["outcome"] == "failed" and outcome["attempts"] == 1
    assert [e["attempt"] for e in log.attempts()] == [1]
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))
    assert any("nothing new to try" in line for line in printed)


def test_the_same_kernel_is_not_added_twice(tmp_path):
    """A later run that lands the same kernel for the same task adds nothing."""
    first = attempt_task(TASK, BuiltinImplementer(), TaskLog(tmp_path / "runs" / "a"), settings(tmp_path),
                         lambda text: None)
    later = replace(settings(tmp_path), run="later")
    second = attempt_task(TASK, BuiltinImplementer(), TaskLog(tmp_path / "runs" / "b"), later, lambda text: None)
    assert (first["outcome"], second["outcome"]) == ("kept", "duplicate")
    assert len(Dataset(tmp_path / "data").records()) == 1
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))


def test_run_resumes_after_an_interrupt_without_losing_or_doubling_work(tmp_path, monkeypatch, capsys):
    """Ctrl-C between task 2's verdict and its move to data/; then Ctrl-C in task 3's implementer."""
    real_add = Dataset.add
    calls = {"add": 0, "implement": 0}

    def add_then_interrupt(self, source_path, record):
        calls["add"] += 1
        if calls["add"] == 2:
            raise KeyboardInterrupt
        return real_add(self, source_path, record)

    class InterruptOnce(BuiltinImplementer):
        def implement(self, task, attempt, history):
            calls["implement"] += 1
            if calls["implement"] == 3:  # task 3's first attempt (task 2 is kept from its log on resume)
                raise KeyboardInterrupt
            return super().implement(task, attempt, history)

    monkeypatch.setattr(cli, "_implementer", lambda options: InterruptOnce())
    monkeypatch.setattr(Dataset, "add", add_then_interrupt)
    assert cli.main(run_args(tmp_path, "-n", "3", "--seed", "11", "--difficulty", "easy")) == 130
    assert "--resume" in capsys.readouterr().err
    dataset = Dataset(tmp_path / "data")
    assert len(dataset.records()) == 1
    [run] = (tmp_path / "runs").iterdir()
    second = next(run.glob("002-*"))
    assert json.loads((second / "attempt_1.json").read_text())["passed"]
    assert not (second / "outcome.json").exists()

    assert cli.main(run_args(tmp_path, "--resume")) == 130  # task 2 kept from its log, task 3 interrupted
    assert len(dataset.records()) == 2 and (second / "outcome.json").exists()

    assert cli.main(run_args(tmp_path, "--resume", run.name)) == 0
    records = dataset.records()
    assert len(records) == 3 and len({r["id"] for r in records}) == 3
    assert sorted(r["task"]["seed"] for r in records) == [11, 12, 13]
    assert sorted(p.name for p in (tmp_path / "data").glob("*.py")) == [r["file"] for r in records]
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))
    outcomes = [json.loads(p.read_text())["outcome"] for p in sorted(run.glob("*/outcome.json"))]
    assert outcomes == ["kept", "kept", "kept"]


def test_run_prints_tasks_reports_and_a_summary(tmp_path, capsys):
    assert cli.main(run_args(tmp_path, "--seed", "7", "--difficulty", "easy")) == 0
    out = capsys.readouterr().out
    assert "Fusion task ff-" in out and "=== ATTEMPT 1:" in out and "FINAL TEST REPORT - ATTEMPT 1" in out
    assert "1 of 1 tasks kept" in out
    assert cli.main(run_args(tmp_path, "--seed", "7", "--difficulty", "easy", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks"] == 1 and summary["duplicates"] == 1 and summary["failed"] == 0


@pytest.mark.parametrize("extra, message", [
    (["--implementer", "llm"], "needs --model"),
    (["--ops", "nosuchop"], "nosuchop"),
    (["--resume", "nosuchrun"], "nosuchrun"),
])
def test_run_usage_errors_are_one_line(tmp_path, capsys, extra, message):
    assert cli.main(run_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_run_refuses_an_unwritable_data_folder(tmp_path, capsys):
    blocker = tmp_path / "data"
    blocker.write_text("a file, not a folder")
    assert cli.main(run_args(tmp_path, "--seed", "1")) == 2
    assert "not writable" in capsys.readouterr().err


def test_outside_agent_attempts_against_the_handed_out_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "5", "--difficulty", "easy"]) == 0
    assert "handed out" in capsys.readouterr().err
    source = BuiltinImplementer().implement(TASK, 1, []).source
    path = tmp_path / "001_fused_kernels.py"

    path.write_text(wrong_values(source))
    assert cli.main(["attempt", str(path)]) == 1
    assert "FAILURE ANALYSIS - ATTEMPT 1" in capsys.readouterr().out and path.exists()

    path.write_text(source)
    assert cli.main(["attempt", str(path)]) == 0
    out = capsys.readouterr().out
    assert "=== ATTEMPT 2:" in out and "kept" in out
    assert "FINAL TEST REPORT - ATTEMPT 2" in out and "rel err" in out and "test[0]" in out  # as `check` shows
    assert not path.exists()
    [record] = Dataset(tmp_path / "data").records()
    assert record["implementer"] == "agent" and record["attempts"] == 2

    path.write_text(source)
    assert cli.main(["attempt", str(path)]) == 2  # that task is finished
    assert "already finished" in capsys.readouterr().err


def test_outside_agent_pass_interrupted_on_its_way_to_data_is_kept_next_time(tmp_path, monkeypatch, capsys):
    from fusionforge import pipeline

    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "5", "--difficulty", "easy"]) == 0
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(BuiltinImplementer().implement(TASK, 1, []).source)
    keep = pipeline.keep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "keep", interrupted)
    assert cli.main(["attempt", str(path)]) == 130
    assert path.exists() and Dataset(tmp_path / "data").records() == []
    monkeypatch.setattr(pipeline, "keep", keep)
    capsys.readouterr()
    assert cli.main(["attempt", str(path)]) == 0  # no new attempt: the logged pass is kept
    assert "had passed; keeping it now" in capsys.readouterr().out
    [record] = Dataset(tmp_path / "data").records()
    assert record["attempts"] == 1 and not path.exists()


def test_outside_agent_third_failure_deletes_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "5", "--difficulty", "easy"]) == 0
    capsys.readouterr()
    path = tmp_path / "004_fused_kernels.py"
    broken = wrong_values(BuiltinImplementer().implement(TASK, 1, []).source)
    for attempt in (1, 2, 3):
        path.write_text(broken)
        assert cli.main(["attempt", str(path), "--json"]) == 1
        entry = json.loads(capsys.readouterr().out)
        assert entry["attempt"] == attempt and entry["failure"]["category"] == "mismatch"
    assert entry["outcome"]["outcome"] == "failed"
    assert not path.exists()
    assert len(list((tmp_path / "runs" / "agent" / TASK.id).glob("attempt_*.json"))) == 3


def test_outside_agent_cannot_swap_the_task(tmp_path, monkeypatch, capsys):
    """A file written for another (easier) task is checked against the task handed out, and fails."""
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "6", "--difficulty", "easy"]) == 0
    capsys.readouterr()
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(BuiltinImplementer().implement(TASK, 1, []).source)  # seed 5's task, not seed 6's
    assert cli.main(["attempt", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failure"]["category"] == "format"


def test_attempt_without_a_handed_out_task_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text("x = 1\n")
    assert cli.main(["attempt", str(path)]) == 2
    assert "generate_fusion_task.py" in capsys.readouterr().err


def test_bench_pending_needs_a_gpu(tmp_path, capsys):
    assert cli.main(["bench", "--pending", "--data", str(tmp_path / "data")]) == 2
    assert "GPU" in capsys.readouterr().err


def _run_until_the_first_task_is_kept(tmp_path, *args):
    """`fusionforge run ARGS` started as a child process, returned once its first task is in data/ and the
    next ones are being checked. The child gets SIGINT's default action: a shell's background job (`cmd &`)
    starts with SIGINT ignored, and the child would inherit that."""
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "fusionforge", *run_args(tmp_path, *args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    index = tmp_path / "data" / "index.jsonl"
    deadline = time.monotonic() + 240
    while not (index.exists() and index.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the next tasks are being checked now
    return process


def test_ctrl_c_in_a_real_run_then_resume(tmp_path):
    """SIGINT to a running `fusionforge run` while it checks task 2: exit 130, nothing torn, resume ends it."""
    import signal

    process = _run_until_the_first_task_is_kept(tmp_path, "-n", "3", "--seed", "21", "--difficulty", "easy")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    records = Dataset(tmp_path / "data").records()
    assert 1 <= len(records) <= 2
    assert all((tmp_path / "data" / r["file"]).exists() for r in records)
    assert not list((tmp_path / "data").glob(".*partial")) and not list((tmp_path / "runs").glob("*/*/.*partial"))

    assert cli.main(run_args(tmp_path, "--resume")) == 0
    records = Dataset(tmp_path / "data").records()
    assert sorted(r["task"]["seed"] for r in records) == [21, 22, 23]
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))


def test_bench_pending_keeps_the_faster_and_drops_the_slower(tmp_path, monkeypatch):
    """The keep/drop rule of `bench --pending`, with the GPU timing replaced by judged synthetic timings."""
    from test_bench import RATES, raw

    from fusionforge import pipeline
    from fusionforge.bench.benchmark import BenchResult, judge
    from fusionforge.verify import check_file
    from fusionforge.verify.verdict import Failure

    tasks = [TASK, TaskGenerator().generate(8, difficulty="easy")]
    for k, task in enumerate(tasks):
        attempt_task(task, BuiltinImplementer(), TaskLog(tmp_path / "runs" / str(k)), settings(tmp_path),
                     lambda text: None)
    dataset = Dataset(tmp_path / "data")
    assert len(dataset.pending()) == 2
    fast, slow = dataset.records()

    harness_down = True

    def fake_bench(path, task, timeout, device):
        verdict = check_file(path, task=task, device="cpu", timeout=timeout)
        if harness_down:
            return BenchResult(check=verdict, failure=Failure("runtime", "Harness", "the timing run failed", "", ""))
        triton_ms = 0.10 if path.name == fast["file"] else 0.50
        return judge(BenchResult(check=verdict), raw(eager=0.36, compiled=0.11, triton=triton_ms), task, RATES)

    def fake_bench_files(paths, tasks, jobs, timeout, device, done, lanes):
        for k, (path, task) in enumerate(zip(paths, tasks)):
            done(k, fake_bench(path, task, timeout, device))

    monkeypatch.setattr(pipeline, "bench_files", fake_bench_files)
    counts = pipeline.time_pending(dataset, tmp_path / "runs", echo=lambda text: None)
    assert counts == {"kept": 0, "dropped": 0, "still_pending": 2}, "a harness failure drops nothing"
    assert len(dataset.pending()) == 2
    harness_down = False
    counts = pipeline.time_pending(dataset, tmp_path / "runs", echo=lambda text: None)
    assert counts == {"kept": 1, "dropped": 1, "still_pending": 0}
    [record] = dataset.records()
    assert record["id"] == fast["id"] and record["file"] == fast["file"] and record["timed"] is True
    assert record["speedup"] == pytest.approx(3.6, rel=0.05) and record["created"] == fast["created"]
    assert record["timings"]["triton"]["median_ms"] == pytest.approx(0.10, rel=0.05)
    assert not (tmp_path / "data" / slow["file"]).exists()
    assert json.loads((tmp_path / "runs" / "pending" / f"{slow['id']}.json").read_text())["kept"] is False
    assert dataset.pending() == []


def test_interrupt_after_the_record_before_the_log_is_still_kept(tmp_path, monkeypatch):
    """Ctrl-C between data/index.jsonl's append and outcome.json: resume says kept, not duplicate."""
    real_finish = TaskLog.finish
    calls = {"finish": 0}

    def finish_then_interrupt(self, outcome):
        calls["finish"] += 1
        if calls["finish"] == 1:
            raise KeyboardInterrupt
        return real_finish(self, outcome)

    monkeypatch.setattr(TaskLog, "finish", finish_then_interrupt)
    log = TaskLog(tmp_path / "runs" / "001")
    with pytest.raises(KeyboardInterrupt):
        attempt_task(TASK, BuiltinImplementer(), log, settings(tmp_path), lambda text: None)
    assert len(Dataset(tmp_path / "data").records()) == 1 and log.outcome() is None
    outcome = attempt_task(TASK, BuiltinImplementer(), log, settings(tmp_path), lambda text: None)
    assert outcome["outcome"] == "kept" and len(Dataset(tmp_path / "data").records()) == 1


def test_interrupt_before_the_work_file_is_recorded_leaves_no_file(tmp_path, monkeypatch):
    """Ctrl-C between claiming NNN_fused_kernels.py and writing state.json: the empty claim is removed."""
    def interrupt(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(TaskLog, "work_file", TaskLog.work_file.setter(interrupt))
    with pytest.raises(KeyboardInterrupt):
        attempt_task(TASK, BuiltinImplementer(), TaskLog(tmp_path / "runs" / "001"), settings(tmp_path),
                     lambda text: None)
    assert list((tmp_path / "work").iterdir()) == []


def test_a_refused_run_leaves_nothing_to_resume(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    argv = [a for a in run_args(tmp_path, "--seed", "1") if a not in ("--device", "cpu")] + ["--device", "cuda"]
    assert cli.main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert cli.main(run_args(tmp_path, "--resume")) == 2
    assert "no run to resume" in capsys.readouterr().err


def test_run_stops_on_a_malformed_index_before_any_work(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "index.jsonl").write_text("{broken\n")
    assert cli.main(run_args(tmp_path, "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "index.jsonl:1 is not a JSON record" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_outside_agent_attempt_interrupted_on_its_way_to_data(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside the move to data/: the next `attempt` keeps the logged pass instead of re-judging it."""
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "5", "--difficulty", "easy"]) == 0
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(BuiltinImplementer().implement(TASK, 1, []).source)
    real_add = Dataset.add

    def interrupted(self, source_path, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "add", interrupted)
    assert cli.main(["attempt", str(path)]) == 130
    assert path.exists() and Dataset(tmp_path / "data").records() == []
    monkeypatch.setattr(Dataset, "add", real_add)
    capsys.readouterr()
    assert cli.main(["attempt", str(path)]) == 0
    assert "had passed; keeping it now" in capsys.readouterr().out
    [record] = Dataset(tmp_path / "data").records()
    assert record["attempts"] == 1 and not path.exists()
    assert len(list((tmp_path / "runs" / "agent" / TASK.id).glob("attempt_*.json"))) == 1


def test_parallel_run_prints_each_task_whole_and_keeps_them_all(tmp_path, capsys):
    assert cli.main(run_args(tmp_path, "-n", "3", "-j", "3", "--seed", "31", "--difficulty", "easy")) == 0
    out = capsys.readouterr().out
    blocks = out.split("Fusion task ff-")[1:]
    assert len(blocks) == 3
    for block in blocks:  # one task's header, attempt, report and landing, not interleaved with another's
        assert block.count("=== ATTEMPT 1:") == 1 and block.count("FINAL TEST REPORT") == 1
        assert block.count("kept: ") == 1
    records = Dataset(tmp_path / "data").records()
    assert sorted(r["task"]["seed"] for r in records) == [31, 32, 33]
    assert "3 of 3 tasks kept" in out


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_a_parallel_run_records_no_cut_short_attempt(tmp_path, signal_name):
    """SIGINT (Ctrl-C) or SIGTERM (a kill) while two tasks are being checked side by side and three wait their
    turn: a prompt exit 130, and each logged attempt is a real verdict (the killed checks are not logged as
    failures), so the resumed run keeps all at attempt 1."""
    import signal
    import time

    process = _run_until_the_first_task_is_kept(tmp_path, "-n", "6", "-j", "2", "--seed", "41", "--difficulty", "easy")
    process.send_signal(getattr(signal, signal_name))
    stopped = time.monotonic()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert time.monotonic() - stopped < 30  # the running checks were killed, not waited for
    assert "--resume" in err and "Traceback" not in err
    [run] = (tmp_path / "runs").iterdir()
    logged = [json.loads(p.read_text()) for p in run.glob("*/attempt_*.json")]
    assert logged and all(entry["passed"] for entry in logged)

    assert cli.main(run_args(tmp_path, "--resume", "-j", "2")) == 0
    records = Dataset(tmp_path / "data").records()
    assert sorted(r["task"]["seed"] for r in records) == [41, 42, 43, 44, 45, 46]
    assert all(r["attempts"] == 1 for r in records)
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))


def test_the_variant_written_is_logged_with_the_attempt_and_read_back(tmp_path):
    from fusionforge.codegen import resolve

    log = TaskLog(tmp_path / "runs" / "001")
    assert attempt_task(TASK, BuiltinImplementer(), log, settings(tmp_path), lambda line: None)["outcome"] == "kept"
    [entry] = log.attempts()
    assert entry["variant"] == resolve(TASK).variant and log.history()[0].variant == entry["variant"]
