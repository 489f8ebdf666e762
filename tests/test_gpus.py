"""Several GPUs as lanes, tested with logical GPUs on the CPU: the selection, the spread, the isolation."""

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_args

from fusionforge import cli, pipeline
from fusionforge.dataset import Dataset
from fusionforge.gpus import Lane, Lanes, current_lane, lane_environment, select_gpus, visible_gpus
from fusionforge.implement import BuiltinImplementer
from fusionforge.pipeline import Run, Settings, run_tasks


@pytest.mark.parametrize("spec, visible, chosen", [
    ("all", 3, [0, 1, 2]), ("2", 3, [0, 1]), ("3", 3, [0, 1, 2]), ("0,2", 3, [0, 2]), ("2,", 3, [2]),
    (" 1 , 0 ", 2, [1, 0]),
])
def test_gpus_select_all_a_count_or_ids(spec, visible, chosen):
    assert select_gpus(spec, visible) == chosen


@pytest.mark.parametrize("spec, visible, reason", [
    ("0", 4, "4 GPUs are visible"), ("5", 4, "4 GPUs are visible"), ("2", 1, "1 GPU is visible"),
    ("0,4", 4, "GPU 4 is not visible"), ("1,1", 4, "named twice"), ("two", 4, "expected all, a count"),
    ("0-3", 4, "expected all, a count"), (",", 4, "expected all, a count"), ("-1,", 4, "expected all, a count"),
])
def test_gpus_refuse_what_does_not_fit(spec, visible, reason):
    with pytest.raises(ValueError, match=reason):
        select_gpus(spec, visible)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,GPU-1a2b")
    assert visible_gpus() == ["4", "6", "GPU-1a2b"]
    lanes = Lanes.for_gpus("0,2")
    assert [(lane.gpu, lane.index) for lane in lanes.lanes] == [("4", 0), ("GPU-1a2b", 2)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        Lanes.for_gpus(None)


def test_work_goes_to_the_least_busy_lane_and_children_see_its_gpu_only():
    lanes = Lanes([Lane("3", 0), Lane("5", 1)])
    assert current_lane() is None and lane_environment() == {}
    with lanes.take() as first, lanes.take() as second, lanes.take() as third:
        assert (first.gpu, second.gpu, third.gpu) == ("3", "5", "3")
        assert current_lane() is third and lane_environment() == {"CUDA_VISIBLE_DEVICES": "3"}
        seen = []
        thread = threading.Thread(target=lambda: seen.append(current_lane()))  # another thread: its own lane
        thread.start()
        thread.join()
        assert seen == [None]
    assert current_lane() is None and [lane.busy for lane in lanes.lanes] == [0, 0]
    assert Lanes.single().lanes[0].gpu is None


def test_a_child_process_gets_its_lanes_gpu(monkeypatch, tmp_path):
    from fusionforge.verify import sandbox

    seen = {}

    class Popen:
        def __init__(self, args, env, **kwargs):
            seen["env"] = env
            raise OSError("not started")

    monkeypatch.setattr(sandbox.subprocess, "Popen", Popen)
    with Lanes([Lane("7", 0)]).take(), pytest.raises(OSError):
        sandbox.run_child("fusionforge.bench.roofline", {}, tmp_path, "cuda", 5)
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "7"


def _run(tmp_path, count: int, seed: int) -> Run:
    options = {"count": count, "seed": seed, "difficulty": "easy", "dtype": None, "ops": None}
    return Run.create(tmp_path / "runs", options)


def _stopped(group: int) -> bool:
    """Whether every process of the process group ``group`` is stopped (or gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("T", "t", "Z", "X"):
            return False
    return True


def test_a_run_spreads_its_tasks_over_every_gpu_and_times_each_alone(tmp_path, monkeypatch):
    """Two logical GPUs, two tasks at a time on each: both GPUs work, and on each GPU a timing never runs
    beside that GPU's other timings, its checks' GPU work in this process, or a check child that is not
    paused (the other GPU's work goes on)."""
    from fusionforge.bench import benchmark
    from fusionforge.verify import checker

    lock = threading.Lock()
    running: dict[str, dict[str, int]] = {"0": {"check": 0, "timing": 0}, "1": {"check": 0, "timing": 0}}
    seen = {"lanes": [], "timing_beside_own_gpu": 0, "both_gpus_at_once": 0}
    real_gpu_work, real_time = checker.parent_gpu_work, benchmark.time_checked

    def section(kind):
        gpu = lane_environment()["CUDA_VISIBLE_DEVICES"]
        with lock:
            running[gpu][kind] += 1
            mine, other = running[gpu], running["1" if gpu == "0" else "0"]
            if kind == "timing" and (mine["check"] or mine["timing"] > 1
                                     or not all(_stopped(group) for group in current_lane().gate._children)):
                seen["timing_beside_own_gpu"] += 1
            seen["both_gpus_at_once"] += bool(other["check"] or other["timing"])
            seen["lanes"].append(gpu)
        return gpu

    def leave(gpu, kind):
        with lock:
            running[gpu][kind] -= 1

    @contextmanager
    def gpu_work(device):  # a check's own work on its GPU, in this process
        with real_gpu_work(device):
            gpu = section("check")
            try:
                time.sleep(0.02)
                yield
            finally:
                leave(gpu, "check")

    def timing(verdict, path, task=None, timeout=300.0, device=None, timing=None):
        gpu = section("timing")
        try:
            time.sleep(0.2)
            return real_time(verdict, path, task=task, timeout=timeout, device=device, timing=timing)
        finally:
            leave(gpu, "timing")

    monkeypatch.setattr(checker, "parent_gpu_work", gpu_work)
    monkeypatch.setattr(benchmark, "time_checked", timing)
    lanes = Lanes([Lane("0", 0), Lane("1", 1)])
    settings = Settings(tmp_path / "work", Dataset(tmp_path / "data"), device="cpu", timeout=240, lanes=lanes)
    run = _run(tmp_path, 4, 61)
    outcomes = run_tasks(run, BuiltinImplementer(), settings, jobs=2, echo=lambda line: None)
    assert [o["outcome"] for o in outcomes] == ["kept"] * 4
    assert sorted(set(seen["lanes"])) == ["0", "1"] and seen["both_gpus_at_once"] > 0
    assert seen["timing_beside_own_gpu"] == 0
    assert sorted(r["task"]["seed"] for r in Dataset(tmp_path / "data").records()) == [61, 62, 63, 64]

    # the attempt logs say where each attempt ran and how long each step took; the profile reads them
    entries = [json.loads(p.read_text()) for p in sorted(run.folder.glob("*/attempt_1.json"))]
    assert {e["lane"] for e in entries} == {"GPU 0", "GPU 1"}
    assert all(e["implement_seconds"] >= 0 and e["phases"]["check"] > 0 and e["phases"]["timing"] >= 0.2
               and "wait_timing" in e["phases"] for e in entries)
    profile = _run_profile().profile(run.folder)
    assert profile["landed"] == 4 and profile["attempts"] == 4 and profile["kernels_per_hour"] > 0
    assert profile["steps"]["check"]["seconds"] >= sum(e["phases"]["check"] for e in entries) - 0.5
    assert all(profile["check_child"][name]["seconds"] > 0 for name in ("start and imports", "input sets"))
    assert set(profile["gpu_timing_fraction"]) == {"GPU 0", "GPU 1"}


def _run_profile():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_profile.py"
    spec = importlib.util.spec_from_file_location("run_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_on_another_number_of_gpus(tmp_path, monkeypatch):
    """Interrupted on two logical GPUs, resumed on one: every task ends once, nothing doubled or lost."""
    real = pipeline.bench_in_lane
    lock, calls = threading.Lock(), {"n": 0}

    def interrupt_the_third(*args, **kwargs):
        with lock:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "bench_in_lane", interrupt_the_third)
    run = _run(tmp_path, 4, 71)
    two = Settings(tmp_path / "work", Dataset(tmp_path / "data"), device="cpu", timeout=240,
                   lanes=Lanes([Lane("0", 0), Lane("1", 1)]))
    with pytest.raises(KeyboardInterrupt):
        run_tasks(run, BuiltinImplementer(), two, jobs=1, echo=lambda line: None)
    assert len(list(run.folder.glob("*/outcome.json"))) < 4
    one = Settings(tmp_path / "work", Dataset(tmp_path / "data"), device="cpu", timeout=240)
    outcomes = run_tasks(Run.load(tmp_path / "runs", run.id), BuiltinImplementer(), one, echo=lambda line: None)
    assert [o["outcome"] for o in outcomes] == ["kept"] * 4
    records = Dataset(tmp_path / "data").records()
    assert sorted(r["task"]["seed"] for r in records) == [71, 72, 73, 74]
    assert len({r["id"] for r in records}) == 4
    assert [json.loads(p.read_text())["outcome"] for p in sorted(run.folder.glob("*/outcome.json"))] == ["kept"] * 4
    assert not list((tmp_path / "work").glob("*_fused_kernels.py"))


@pytest.mark.parametrize("spec", ["2", "0,1", "3,"])
def test_gpus_without_a_gpu_is_a_usage_error(tmp_path, capsys, spec):
    assert cli.main(run_args(tmp_path, "--gpus", spec)) == 2
    err = capsys.readouterr().err
    assert f"--gpus {spec}: no CUDA GPU is visible" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_the_progress_shows_landed_failed_the_rate_and_each_gpus_work():
    lanes = Lanes([Lane("0", 0), Lane("1", 1)])
    progress = cli.TaskProgress(3, enabled=True, lanes=lanes)
    with progress as advance:
        advance({"outcome": "kept"})
        advance({"outcome": "failed"})
        with lanes.take():
            task = progress.bar.tasks[0]
            assert task.completed == 2 and task.fields["tally"].startswith("1 landed, 1 failed, ")
            assert task.fields["tally"].endswith(" per hour")
            assert str(progress.bar.columns[-1].render(task)) == "GPU 0: 1 GPU 1: 0 in flight"


def test_a_run_works_on_as_many_tasks_per_gpu_as_its_cores_allow_by_default(monkeypatch):
    from fusionforge.gpus import default_jobs

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert default_jobs("cuda", 1) == 14 and default_jobs("cuda", 2) == 6 and default_jobs("cuda", 8) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert default_jobs("cuda", 1) == 14 and default_jobs("cuda", 8) == 14
    assert default_jobs("cpu", 1) == 1


# A check-like child, quick to start: beats (the time, to a file) every few ms until it has used "work"
# seconds of CPU.
HEARTBEAT = """
import json, sys, time
from pathlib import Path

request = json.loads(Path(sys.argv[1]).read_text())
out = Path(request["out_dir"])
end = time.process_time() + request["work"]
with open(out / "beats", "a") as beats:
    while time.process_time() < end:
        beats.write(f"{time.time()}\\n")
        beats.flush()
        deadline = time.process_time() + 0.005
        while time.process_time() < deadline:
            pass
"""


def _check_like_child(tmp_path, gate, work, timeout, results):
    from fusionforge.verify import sandbox

    (tmp_path / "heartbeat.py").write_text(HEARTBEAT)
    with gate.pausable():
        results.append(sandbox.start_child("heartbeat", {"out_dir": str(tmp_path), "work": work}, tmp_path,
                                           "cpu").finish(timeout))


def _beats(tmp_path):
    path = tmp_path / "beats"
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def test_a_timing_pauses_the_checks_children_and_their_time_limits_wait():
    """No beat of a check's child while a timing holds the GPU, its beats go on after, and the pause does
    not count against its time limit (4 s for 0.5 s of work and a 5 s timing)."""
    import tempfile

    from fusionforge.gpus import DeviceGate, paused_group

    gate, results = DeviceGate(), []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        worker = threading.Thread(target=_check_like_child, args=(folder, gate, 0.5, 4.0, results))
        worker.start()
        deadline = time.time() + 60
        while not _beats(folder) and time.time() < deadline:
            time.sleep(0.01)
        assert _beats(folder), "the child never started"
        with gate.alone():
            began = time.time()
            paused = set(gate._children)
            # paused children hold the GPU's memory but run nothing: the device ceilings may be measured
            assert paused and all(paused_group(group) for group in paused)
            time.sleep(5.0)
            ended = time.time()
        assert not any(paused_group(group) for group in paused)
        worker.join(60)
        beats = _beats(folder)
    _, returncode, _ = results[0]
    assert returncode == 0
    assert not [beat for beat in beats if began <= beat <= ended]
    assert any(beat < began for beat in beats) and any(beat > ended for beat in beats)


def test_a_timing_waits_for_a_checks_own_gpu_work_and_new_children_wait_for_the_timing(tmp_path):
    from fusionforge.gpus import DeviceGate, parent_gpu_work

    gate, events = DeviceGate(), []

    def check_work():
        with gate.pausable(), parent_gpu_work("cpu"):
            events.append(("work", time.time()))
            time.sleep(0.5)
            events.append(("work done", time.time()))

    worker = threading.Thread(target=check_work)
    worker.start()
    while not events:
        time.sleep(0.01)
    with gate.alone():
        events.append(("timing", time.time()))
        starter = threading.Thread(target=_check_like_child, args=(tmp_path, gate, 0.05, 60, []))
        starter.start()
        time.sleep(0.5)
        events.append(("timing done", time.time()))
    worker.join(60)
    starter.join(60)
    when = dict(events)
    assert when["timing"] >= when["work done"]  # the timing waited for the parent's GPU work
    assert min(_beats(tmp_path)) >= when["timing done"]  # the child started after the timing


def test_the_gate_simulation_replays_step_times_under_both_policies():
    """benchmarks/gate_simulation.py: with no time beside the GPU both policies are the GPU's own rate; with
    checks longer than the timings, pausing the checks beats draining them."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_simulation.py"
    spec = importlib.util.spec_from_file_location("gate_simulation", path)
    simulation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(simulation)
    only_gpu = [(0.0, 2.0)]
    assert simulation.simulate(only_gpu, 14, "drain", 0) == pytest.approx(1800)
    assert simulation.simulate(only_gpu, 14, "pause", 0) == pytest.approx(1800)
    even = [(28.0, 3.0)]  # checks all alike: draining them costs nothing
    assert simulation.simulate(even, 14, "drain", 0) == pytest.approx(simulation.simulate(even, 14, "pause", 0))
    mixed = [(20.0, 2.0), (40.0, 4.0), (30.0, 3.0)]  # the longest check in flight holds every timing up
    drain, pause = (simulation.simulate(mixed, 14, policy, 1) for policy in ("drain", "pause"))
    assert drain < pause < 3600 / 3.0  # never faster than the GPU's mean timing allows


def test_a_timing_sees_a_paused_child_woken_during_it(tmp_path):
    """A file being timed could wake (SIGCONT) the paused checks to slow its baselines: the gate notices a
    paused child running, and not the timing's own child, released on purpose."""
    import signal
    import subprocess
    import sys

    from fusionforge.gpus import DeviceGate

    gate = DeviceGate()
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
                for _ in range(2)]
    try:
        with gate.pausable(), gate.starting_child() as register:
            for child in children:
                register(child.pid)
        with gate.alone() as woken:
            time.sleep(0.2)
        assert woken == set()
        with gate.alone() as woken:
            gate.release_child(children[0].pid)  # the timing's own child: let go on purpose
            os.killpg(children[1].pid, signal.SIGCONT)  # a neighbour woken behind the gate's back
            time.sleep(0.3)
        assert woken == {children[1].pid}
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_sliced_runs_wall_clock_leaves_out_the_gaps_between_slices(tmp_path):
    """run_profile --slices: the slices' time only, the last slice cut at the last outcome."""
    import datetime

    log = tmp_path / "slices.log"
    log.write_text("slice start 1000 end 1500 status 124\nslice start 1600 end 2100 status 1\n")
    last = datetime.datetime.fromtimestamp(1900, datetime.timezone.utc)
    assert _run_profile().sliced_wall(log, last) == 500 + 300
    assert _run_profile().sliced_wall(log, datetime.datetime.fromtimestamp(1400, datetime.timezone.utc)) == 400


# A child that saves an output file (``*.pt``, as the checker's child does after each call) every ``every`` seconds,
# ``count`` times, then sleeps ``then`` seconds.
SAVING = """
import json, sys, time
from pathlib import Path

request = json.loads(Path(sys.argv[1]).read_text())
out = Path(request["out_dir"])
for k in range(request["count"]):
    time.sleep(request["every"])
    (out / f"triton_{k}.pt").write_bytes(b"")
time.sleep(request["then"])
"""


@pytest.mark.parametrize("count, then, killed_after", [(6, 0.0, None), (0, 30.0, (1.5, 4.0)), (60, 0.0, (6.0, 9.0)),
                                                       (2, 30.0, (3.0, 6.5))])
def test_the_time_limit_counts_from_each_output_saved_up_to_its_cap(tmp_path, count, then, killed_after):
    """A 1.5 s limit: six outputs 0.8 s apart finish (4.8 s in all); no output, or none after the second (1.6 s),
    is killed 1.5 s after the last one; outputs that never stop are killed at PROGRESS_CAP x 1.5 s."""
    from fusionforge.verify import sandbox

    assert sandbox.PROGRESS_CAP == 4
    (tmp_path / "saving.py").write_text(SAVING)
    began = time.monotonic()
    _, returncode, _ = sandbox.start_child("saving", {"out_dir": str(tmp_path), "count": count, "every": 0.8,
                                                      "then": then}, tmp_path, "cpu").finish(1.5)
    took = time.monotonic() - began
    if killed_after is None:
        assert returncode == 0
    else:
        assert returncode is None and killed_after[0] <= took <= killed_after[1], took
