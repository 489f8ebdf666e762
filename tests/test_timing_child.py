"""The timing child's two steps (ready beside other work, then timing with the GPU alone) and its stop rule."""

import json
import random
import time
from pathlib import Path

import pytest

from fusionforge.bench.timer import MEDIAN_PRECISION, Settling, median_is_stable
from fusionforge.verify import sandbox

# A child in the timer's shape: seal key, preparation, ready, wait for "go", then the part that needs the GPU.
CHILD = """
import json, sys, time
from pathlib import Path
from fusionforge.verify.sandbox import Seal, die_with_parent, ready_and_wait

die_with_parent()
seal = Seal(keep_stdin=True)
request = json.loads(Path(sys.argv[1]).read_text())
out = Path(request["out_dir"])
if request.get("die_before_ready"):
    raise SystemExit(3)
time.sleep(request.get("prepare_seconds", 0))
(out / "prepared").write_text("yes")
if not ready_and_wait(request["ready_fd"]):
    raise SystemExit(0)
(out / "went").write_text(str(time.time()))
seal.write(out, {"timed": True, "stdin_closed": sys.stdin.closed})
"""


def _start(tmp_path, **request):
    (tmp_path / "two_step_child.py").write_text(CHILD)
    return sandbox.start_child("two_step_child", {"out_dir": str(tmp_path), **request}, tmp_path, "cpu", ready=True)


def test_a_ready_child_waits_for_go_and_then_seals_its_result(tmp_path):
    child = _start(tmp_path)
    assert not sandbox.idle_on_gpu(child.proc.pid)
    assert child.wait_ready(60)
    time.sleep(0.3)
    assert (tmp_path / "prepared").exists() and not (tmp_path / "went").exists()  # nothing past ready before go
    assert sandbox.idle_on_gpu(child.proc.pid)  # idle until "go": the device ceilings may be measured beside it
    child.go()
    assert not sandbox.idle_on_gpu(child.proc.pid)
    result, returncode, _ = child.finish(60)
    assert returncode == 0 and result == {"timed": True, "stdin_closed": True}


def test_a_child_let_go_without_go_ends_without_timing(tmp_path):
    child = _start(tmp_path)
    assert child.wait_ready(60)
    child.proc.stdin.close()  # the parent no longer wants it: end of file, no "go"
    result, returncode, _ = child.finish(60)
    assert returncode == 0 and result is None and not (tmp_path / "went").exists()


def test_a_child_that_dies_while_preparing_is_not_ready_and_says_why(tmp_path):
    child = _start(tmp_path, die_before_ready=True)
    started = time.perf_counter()
    assert not child.wait_ready(60)
    assert time.perf_counter() - started < 30  # its exit ends the wait
    result, returncode, _ = child.finish(1)
    assert result is None and returncode == 3


def test_an_interrupt_kills_children_waiting_for_go(tmp_path):
    child = _start(tmp_path)
    assert child.wait_ready(60)
    assert sandbox.kill_running() >= 1
    result, returncode, _ = child.finish(10)
    assert result is None and returncode is not None and returncode < 0


def test_a_result_planted_while_the_child_waits_is_refused(tmp_path):
    child = _start(tmp_path)
    assert child.wait_ready(60)
    (tmp_path / sandbox.RESULT).write_text(json.dumps({"body": "{}", "mac": "0" * 64}))  # not the child's
    child.proc.stdin.close()
    result, returncode, _ = child.finish(60)
    assert returncode == 0 and "forged" in result


def test_a_timing_child_that_did_not_get_ready_beside_the_checks_is_started_again(tmp_path, monkeypatch):
    """Preparing beside other work can fail (out of memory, too slow under load): the timing starts it again."""
    from fusionforge.bench import benchmark

    (tmp_path / "two_step_child.py").write_text(CHILD)
    starts = []

    def start(module, request, scratch, device, ready=False):
        starts.append(scratch)
        (scratch / "two_step_child.py").write_text(CHILD)
        return sandbox.start_child("two_step_child", {**request, "die_before_ready": len(starts) == 1}, scratch,
                                   "cpu", ready=ready)

    monkeypatch.setattr(benchmark, "start_child", start)
    monkeypatch.setattr(benchmark, "input_sets", lambda task, device, seeds: [{"label": "bench[0]", "seed": 1}])
    timing = benchmark.TimingChild(tmp_path / "file.py", None, 60)
    assert not timing.ready
    raw, returncode, _ = timing.time()
    timing.close()
    assert len(starts) == 2 and returncode == 0 and raw == {"timed": True, "stdin_closed": True}


def test_a_timing_child_too_slow_to_get_ready_is_stopped_before_the_next_timing(tmp_path, monkeypatch):
    """Still preparing when its time ran out, it would share the GPU with the timings that follow."""
    from fusionforge.bench import benchmark

    def start(module, request, scratch, device, ready=False):
        (scratch / "two_step_child.py").write_text(CHILD)
        return sandbox.start_child("two_step_child", {**request, "prepare_seconds": 30}, scratch, "cpu", ready=ready)

    monkeypatch.setattr(benchmark, "start_child", start)
    monkeypatch.setattr(benchmark, "input_sets", lambda task, device, seeds: [{"label": "bench[0]", "seed": 1}])
    timing = benchmark.TimingChild(tmp_path / "file.py", None, 2)
    try:
        assert not timing.ready and timing._child.proc.poll() is not None
    finally:
        timing.close()


@pytest.mark.parametrize("noise", [0.002, 0.01, 0.05])
def test_the_median_is_stable_once_its_confidence_interval_is_within_the_precision(noise):
    rng = random.Random(7)
    calls = [1.0 + rng.gauss(0, noise) for _ in range(2000)]
    needed = next(n for n in range(50, 2001, 50) if median_is_stable(calls[:n]))
    # the interval's half width is about 1.25 * 1.96 * noise / sqrt(n): n grows with the noise squared
    expected = (1.25 * 1.96 * noise / MEDIAN_PRECISION) ** 2
    assert needed <= max(100, 2 * expected) and (noise < 0.01 or needed >= expected / 2)


def test_a_median_of_zeros_or_of_widely_spread_calls_is_not_stable_and_a_few_wild_calls_do_not_matter():
    assert not median_is_stable([0.0] * 200)
    assert not median_is_stable([1 + k / 120 for k in range(120)])  # calls spread evenly over 1..2 ms
    rng = random.Random(3)
    calls = [1.0 + rng.gauss(0, 0.001) for _ in range(180)] + [5.0 + rng.random() for _ in range(20)]
    assert median_is_stable(calls)  # 10% of calls far out (a preempted call, a clock change)


def test_the_rounds_stop_only_when_the_medians_hold_still_at_two_checks():
    rng = random.Random(11)

    def calls(center, n):
        return [center + rng.gauss(0, 0.002 * center) for _ in range(n)]

    settling = Settling()
    assert not settling.settled([calls(1.0, 100), calls(0.5, 100)])  # stable, but the first check
    assert settling.settled([calls(1.0, 150), calls(0.5, 150)])
    drifting = Settling()
    assert not drifting.settled([calls(1.0, 100), calls(0.5, 100)])
    assert not drifting.settled([calls(1.02, 150), calls(0.5, 150)])  # moved 2% since: not yet
    assert drifting.settled([calls(1.02, 200), calls(0.5, 200)])
    wild = Settling()
    assert not wild.settled([calls(1.0, 100), [1 + k / 100 for k in range(100)]])  # one contender not stable
    assert not wild.settled([calls(1.0, 150), calls(0.5, 150)])  # stable now, but only since this check


# A parent that starts a ready child, says its pid, and waits to be killed.
PARENT = """
import sys, time
from pathlib import Path
from fusionforge.verify import sandbox

scratch = Path(sys.argv[1])
child = sandbox.start_child("two_step_child", {"out_dir": str(scratch)}, scratch, "cpu", ready=True)
print(child.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_paused_child_dies_with_the_process_that_started_it(tmp_path):
    """A worker killed during a timing leaves its paused children stopped; they must not outlive it."""
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "two_step_child.py").write_text(CHILD)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    child = int(parent.stdout.readline())
    deadline = time.time() + 60
    while not (tmp_path / "prepared").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(child, signal.SIGSTOP)  # paused for a timing
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    else:
        os.killpg(child, signal.SIGKILL)
        pytest.fail("the paused child outlived its parent")
