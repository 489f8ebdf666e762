"""`fusionforge eval`: the suites, the metrics checked by hand, and an eval end to end on the CPU."""

import json

import pytest
from conftest import run_args

from fusionforge import cli, evaluation
from fusionforge.evaluation import build_suite, load_suite, metrics, pass_at_k, suite_hash


def sample(task: str, correct: bool, speedup: float | None = None, vs_compile: float | None = None,
           fraction: float | None = None, tokens: int = 0) -> dict:
    return {"task_id": task, "correct": correct, "timed": speedup is not None, "speedup": speedup,
            "speedup_vs_compile": vs_compile, "fraction_of_floor": fraction,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 2 * tokens}}


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 3, 2) == 1.0


def test_metrics_by_hand():
    """Task a: 2 samples, both correct (1.5x and 0.9x over eager); task b: 2 samples, one correct (2.5x)."""
    samples = [sample("a", True, 1.5, 1.1, 0.6, tokens=10), sample("a", True, 0.9, 0.5, 0.4),
               sample("b", False), sample("b", True, 2.5, 2.0, 0.8, tokens=5)]
    m = metrics(samples)
    assert m["samples"] == 4 and m["tasks"] == 2 and m["correctness"] == 0.75
    assert m["fast_p"]["eager"] == {"0.0": 0.75, "1.0": 0.5, "1.2": 0.5, "1.5": 0.25, "2.0": 0.25}
    assert m["fast_p"]["torch.compile"] == {"0.0": 0.75, "1.0": 0.5, "1.2": 0.25, "1.5": 0.25, "2.0": 0.0}
    assert m["pass_at_k"] == {"1": pytest.approx((1.0 + 0.5) / 2)}  # k=5 and 10 exceed the 2 samples
    assert m["geomean_speedup"]["eager"] == pytest.approx((1.5 * 0.9 * 2.5) ** (1 / 3))
    assert m["mean_fraction_of_floor"] == pytest.approx(0.6)
    assert m["usage"] == {"prompt_tokens": 15, "completion_tokens": 30}


def test_without_a_gpu_only_fast_0_is_known():
    m = metrics([sample("a", True), sample("b", False)])
    assert m["fast_p"]["eager"]["0.0"] == 0.5 and m["fast_p"]["eager"]["1.0"] is None
    assert m["geomean_speedup"]["eager"] is None and m["pass_at_k"] == {"1": 0.5}


def test_the_published_suites_are_what_the_generator_makes():
    """The small suite regenerated task by task (the full one is checked the same way when loaded)."""
    published = json.loads((evaluation.SUITES_DIR / "small-v1.json").read_text())["tasks"]
    assert published == build_suite("small-v1") and len(published) == 18
    assert {(t["difficulty"], t["dtype"]) for t in published} == {(d, t) for d in ("easy", "medium", "hard")
                                                                   for t in ("float32", "float16", "bfloat16")}
    assert load_suite("small-v1")["hash"] == suite_hash(published)
    full = json.loads((evaluation.SUITES_DIR / "full-v1.json").read_text())["tasks"]
    assert len(full) == 108 and full[:2] == published[:2]


def test_an_unknown_or_changed_suite_is_a_usage_error(tmp_path, capsys, monkeypatch):
    assert cli.main(["eval", "--suite", "nope", "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "no suite 'nope': the suites are full-v1, small-v1" in capsys.readouterr().err
    changed = json.loads((evaluation.SUITES_DIR / "small-v1.json").read_text())
    changed["tasks"][0]["task_id"] = "ff-000000000000"
    (tmp_path / "small-v1.json").write_text(json.dumps(changed))
    monkeypatch.setattr(evaluation, "SUITES_DIR", tmp_path)
    assert cli.main(["eval", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "not the one the suite was published with" in capsys.readouterr().err


def test_an_eval_end_to_end_on_the_cpu(tmp_path, capsys, monkeypatch):
    """Two tasks of the small suite, two samples each, the built-in implementer: results and their lines."""
    tasks = json.loads((evaluation.SUITES_DIR / "small-v1.json").read_text())["tasks"][:2]
    (tmp_path / "tiny.json").write_text(json.dumps({"name": "tiny", "tasks": tasks}))
    monkeypatch.setattr(evaluation, "SUITES_DIR", tmp_path)
    out = tmp_path / "evals"
    assert cli.main(["eval", "--suite", "tiny", "--samples", "2", "--out", str(out), "--device", "cpu",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "tiny" and result["suite_hash"] == suite_hash(tasks) and result["complete"]
    assert result["metrics"]["samples"] == 4 and result["metrics"]["correctness"] == 1.0
    assert result["metrics"]["pass_at_k"] == {"1": 1.0} and result["metrics"]["fast_p"]["eager"]["1.0"] is None
    assert set(result["by"]) == {"difficulty", "family", "dtype"}
    folder = out / result["run"]
    lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [(row["task_id"], row["sample"]) for row in lines] == [(tasks[0]["task_id"], 1), (tasks[1]["task_id"], 1),
                                                                  (tasks[0]["task_id"], 2), (tasks[1]["task_id"], 2)]
    assert json.loads((folder / "results.json").read_text())["metrics"] == result["metrics"]
    # nothing is left to do: resuming recomputes the same results
    assert cli.main(["eval", "--resume", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == result["metrics"]


def test_resuming_a_run_as_an_eval_is_a_usage_error(tmp_path, capsys):
    assert cli.main(run_args(tmp_path, "-n", "1", "--seed", "3", "--json")) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--resume", "--out", str(tmp_path / "runs")]) == 2
    assert "is a run, not an eval" in capsys.readouterr().err


def test_a_correct_kernel_that_is_not_faster_is_correct_but_not_fast(tmp_path):
    """Read from the attempt logs: a `slower` last attempt is correct at its speedup; a `numerical` one is not."""
    tasks = [{"task_id": "ff-a", "seed": 0, "difficulty": "easy", "dtype": "float16", "family": "pointwise"},
             {"task_id": "ff-b", "seed": 1, "difficulty": "easy", "dtype": "float16", "family": "pointwise"}]
    for index, (task, category, speedup) in enumerate(((tasks[0], "slower", 0.8), (tasks[1], "numerical", None))):
        folder = tmp_path / f"{index + 1:03d}-{task['task_id']}"
        folder.mkdir()
        (folder / "outcome.json").write_text(json.dumps({"outcome": "failed"}))
        (folder / "attempt_1.json").write_text(json.dumps({
            "failure": {"category": category}, "usage": {"prompt_tokens": 7},
            "result": {"timed": speedup is not None, "speedup": speedup, "speedup_vs_compile": speedup}}))
    rows = evaluation.samples_of(tmp_path, tasks)
    assert [(r["correct"], r["failure"], r["speedup"]) for r in rows] == [(True, "slower", 0.8),
                                                                          (False, "numerical", None)]
    m = metrics(rows)
    assert m["correctness"] == 0.5 and m["fast_p"]["eager"]["0.0"] == 0.5 and m["fast_p"]["eager"]["1.0"] == 0.0
    assert m["usage"]["prompt_tokens"] == 14


def test_an_eval_of_an_outside_agents_files(tmp_path, capsys, monkeypatch):
    """Task 1: one file for both samples; task 2: a file for sample 1, none for sample 2."""
    from fusionforge.implement import generate
    from fusionforge.tasks import TaskGenerator

    tasks = json.loads((evaluation.SUITES_DIR / "small-v1.json").read_text())["tasks"][:2]
    (tmp_path / "tiny.json").write_text(json.dumps({"name": "tiny", "tasks": tasks}))
    monkeypatch.setattr(evaluation, "SUITES_DIR", tmp_path)
    files = tmp_path / "agent"
    (files / tasks[1]["task_id"]).mkdir(parents=True)
    paths = (files / f"{tasks[0]['task_id']}.py", files / tasks[1]["task_id"] / "1.py")
    for spec, path in zip(tasks, paths):
        path.write_text(generate(TaskGenerator().generate(spec["seed"], spec["difficulty"], spec["dtype"])))
    argv = ["eval", "--suite", "tiny", "--samples", "2", "--files", str(files), "--out", str(tmp_path / "evals"),
            "--device", "cpu", "--json"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["implementer"] == "agent" and result["attempts"] == 1
    assert result["metrics"]["correctness"] == 0.75 and result["metrics"]["pass_at_k"] == {"1": 0.75}
    [missing] = [row for row in evaluation.samples_of(tmp_path / "evals" / result["run"], tasks) if not row["correct"]]
    assert (missing["task_id"], missing["sample"], missing["failure"]) == (tasks[1]["task_id"], 2, "format")
    assert cli.main([*argv[:5], "--files", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli.main([*argv, "--implementer", "llm"]) == 2
    assert "takes the place of --implementer" in capsys.readouterr().err
