"""The Ray engine on a local Ray with two logical GPUs: the CPU checks through Triton's interpreter."""

import json
import os
import sys
import threading

import pytest
from conftest import run_args

from fusionforge import cli
from fusionforge.bench.benchmark import BenchResult
from fusionforge.dataset import Dataset
from fusionforge.implement import BuiltinImplementer
from fusionforge.pipeline import Run, Settings, run_tasks
from fusionforge.tasks import TaskGenerator


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray: pip install -e '.[dev]'")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def _records_and_outcomes(tmp_path):
    records = Dataset(tmp_path / "data").records()
    outcomes = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/*/outcome.json"))]
    return records, outcomes


def test_a_run_on_ray_lands_every_kernel_and_only_the_driver_writes(tmp_path, monkeypatch, cluster):
    written = []
    real_add = Dataset.add

    def add(self, path, record):
        written.append(os.getpid())
        return real_add(self, path, record)

    monkeypatch.setattr(Dataset, "add", add)
    assert cli.main(run_args(tmp_path, "--engine", "ray", "-n", "4", "--seed", "61", "--difficulty", "easy")) == 0
    records, outcomes = _records_and_outcomes(tmp_path)
    assert sorted(r["task"]["seed"] for r in records) == [61, 62, 63, 64]
    assert all((tmp_path / "data" / r["file"]).exists() for r in records)
    assert written == [os.getpid()] * 4, "every record was added by this process, the driver"
    assert [o["outcome"] for o in outcomes] == ["kept"] * 4
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/*/attempt_1.json"))]
    assert {e["lane"].split(" on ")[0] for e in entries} == {"GPU 0", "GPU 1"}, "both GPUs got work"
    assert all(e["phases"]["check"] > 0 and "wait_timing" in e["phases"] for e in entries)
    assert all(e["result"]["check"]["file"] == e["file"] for e in entries), "reports name the driver's file"
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))


def _run_on_ray(tmp_path, count: int, seed: int, first_call):
    """``count`` tasks on the two workers, the first bench call made by ``first_call(worker, bench, *args)``
    (``bench`` the real one); the outcomes."""
    from fusionforge import ray_engine

    lanes = ray_engine.start(None, None, jobs=1, device="cpu")
    real_bench = ray_engine.RayWorker.bench
    first = threading.Lock()

    def bench(worker, *args):
        if first.acquire(blocking=False):
            return first_call(worker, real_bench, *args)
        return real_bench(worker, *args)

    run = Run.create(tmp_path / "runs", {"count": count, "seed": seed, "difficulty": "easy", "dtype": None,
                                         "ops": None})
    settings = Settings(tmp_path / "work", Dataset(tmp_path / "data"), device="cpu", timeout=240, run=run.id,
                        lanes=lanes)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ray_engine.RayWorker, "bench", bench)
            outcomes = run_tasks(run, BuiltinImplementer(), settings, echo=lambda line: None)
    finally:
        lanes.close()
    return run, outcomes


def test_a_worker_killed_mid_call_is_restarted_and_the_call_sent_again(tmp_path, cluster):
    pids = []

    def pid(actor) -> int:
        return cluster.get(actor.__ray_call__.options(max_task_retries=-1).remote(lambda worker: os.getpid()))

    def killed_after_a_second(worker, bench, *args):
        pids.append(pid(worker.actor))
        threading.Timer(1.0, cluster.kill, (worker.actor,), {"no_restart": False}).start()
        result = bench(worker, *args)
        pids.append(pid(worker.actor))
        return result

    run, outcomes = _run_on_ray(tmp_path, 2, 81, killed_after_a_second)
    assert [o["outcome"] for o in outcomes] == ["kept"] * 2 and all(o["attempts"] == 1 for o in outcomes)
    assert pids[0] != pids[1], "the worker was recycled"
    assert all(json.loads(p.read_text())["passed"] for p in run.folder.glob("*/attempt_*.json"))


def test_a_call_lost_for_good_is_a_harness_failure_and_the_next_attempt_goes_on(tmp_path, cluster):
    from ray.exceptions import ActorDiedError

    from fusionforge import ray_engine

    def lost(worker, bench, *args):
        with pytest.MonkeyPatch.context() as patch:
            def get(call):
                raise ActorDiedError()

            patch.setattr(ray_engine.ray, "get", get)
            return bench(worker, *args)

    run, [outcome] = _run_on_ray(tmp_path, 1, 91, lost)
    assert outcome["outcome"] == "kept" and outcome["attempts"] == 2
    [folder] = run.folder.glob("0*")
    first = json.loads((folder / "attempt_1.json").read_text())
    assert not first["passed"] and first["failure"]["implementation"] == "Harness"
    assert first["failure"]["category"] == "crash" and "was lost" in first["failure"]["message"]


def test_bench_several_files_on_ray(tmp_path, capsys, cluster):
    paths = []
    for k, seed in enumerate((101, 102)):
        task = TaskGenerator().generate(seed, difficulty="easy")
        paths.append(tmp_path / f"{k + 1:03d}_fused_kernels.py")
        paths[-1].write_text(BuiltinImplementer().implement(task, 1, []).source)
    assert cli.main(["bench", *map(str, paths), "--engine", "ray", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == list(map(str, paths))
    assert all(r["status"] == "pass" and r["check"]["file"] == r["file"] for r in results)


def test_a_bench_result_survives_its_dict():
    from fusionforge.verify.verdict import Failure, Verdict

    failure = Failure("crash", "Harness", "lost", "the worker died", "again", line=3, input_set="test 1")
    for result in (BenchResult(check=Verdict(file="f.py", failure=failure)),
                   BenchResult(check=Verdict(file="f.py", checks=[{"label": "test 1"}]), failure=failure)):
        again = BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
        assert again.to_dict() == result.to_dict() and again.status == "fail"


def test_engine_ray_without_ray_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    monkeypatch.delitem(sys.modules, "fusionforge.ray_engine", raising=False)
    assert cli.main(run_args(tmp_path, "--engine", "ray")) == 2
    err = capsys.readouterr().err
    assert err == "fusionforge: error: --engine ray needs ray: pip install 'fusionforge[ray]'\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["run", "--engine", "nonsense"], ["bench", "--engine", "dask", "f.py"]])
def test_an_unknown_engine_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_address_without_the_ray_engine_is_refused(tmp_path, capsys):
    assert cli.main(run_args(tmp_path, "--address", "auto")) == 2
    assert "--address goes with --engine ray" in capsys.readouterr().err


def test_ctrl_c_on_ray_records_no_cut_short_attempt_and_resume_ends_the_run(tmp_path, cluster):
    """SIGINT to `fusionforge run --engine ray` (joined to this test's Ray) while the workers check: a prompt
    exit 130, only real verdicts logged, and a resume on Ray keeps every task at attempt 1."""
    import signal
    import subprocess
    import time

    address = cluster.get_runtime_context().gcs_address
    process = subprocess.Popen([sys.executable, "-m", "fusionforge", *run_args(
        tmp_path, "--engine", "ray", "--address", address, "-n", "5", "--seed", "111", "--difficulty", "easy")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    index = tmp_path / "data" / "index.jsonl"
    deadline = time.monotonic() + 240
    while not (index.exists() and index.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the next tasks are being checked now
    process.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert time.monotonic() - stopped < 30 and "--resume" in err and "Traceback" not in err
    [run] = (tmp_path / "runs").iterdir()
    logged = [json.loads(p.read_text()) for p in run.glob("*/attempt_*.json")]
    assert logged and all(entry["passed"] for entry in logged)
    assert len(Dataset(tmp_path / "data").records()) < 5

    assert cli.main(run_args(tmp_path, "--resume", "--engine", "ray")) == 0
    records = Dataset(tmp_path / "data").records()
    assert sorted(r["task"]["seed"] for r in records) == [111, 112, 113, 114, 115]
    assert all(r["attempts"] == 1 for r in records)
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))
