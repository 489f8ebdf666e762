"""The benchmark's verdict, statistics and report (pure logic, CPU) and its CPU path (not timed)."""

import json
import random
from pathlib import Path

import pytest
import triton
import triton.language as tl

from fusionforge.bench import render_report
from fusionforge.bench.benchmark import BenchResult, judge, spread, summarize
from fusionforge.bench.roofline import floor_ms
from fusionforge.cli import main
from fusionforge.verify import Verdict

FIXTURES = Path(__file__).parent / "fixtures"
RATES = {"device_key": "test", "copy_GBs": 3000.0, "matmul_TFLOPs_float16": 700.0,
         "matmul_TFLOPs_bfloat16": 700.0, "matmul_TFLOPs_float32": 50.0}


def _store_one(out_ptr):
    tl.store(out_ptr, 1.0)


def raw(eager: float, compiled: float, triton: float, jitter: float = 0.01, wall_extra: float = 0.01,
        hidden: float = 0.0, launch_ms: float = 0.0, overlap_ms: float = 0.0, nbytes: int = 268_435_456,
        flops: int = 0, **extra) -> dict:
    """A timing child's result: ``wall_extra`` of synchronize latency on every wall-clock call, ``hidden`` ms
    of Triton GPU work the events miss, ``launch_ms`` of Triton host time (launches) the events overlap,
    ``overlap_ms`` of eager's and torch.compile's host time during which their GPU work already runs."""
    rng = random.Random(0)

    def draw(ms):
        return [ms * (1 + rng.uniform(-jitter, jitter)) for _ in range(200)]

    return {"times_ms": {"eager": draw(eager), "compile": draw(compiled), "triton": draw(triton)},
            "wall_ms": {"eager": [eager + wall_extra] * 20, "compile": [compiled + wall_extra] * 20,
                        "triton": [triton + wall_extra + hidden + launch_ms] * 20},
            "host_ms": {"eager": [0.005 + overlap_ms] * 20, "compile": [0.02 + overlap_ms] * 20,
                        "triton": [0.01 + launch_ms] * 20},
            "bytes_io": nbytes, "flops_counted": flops, "dtype": "float16", "calls": 200, "flush_bytes": 2**28,
            "l2_bytes": 50 * 2**20, "compile_seconds": 3.0, "launches_per_call": 1, "side_streams": 0,
            "kernels": {"fused_kernel_triton": {"registers": 32, "spills": 0, "shared_bytes": 0, "num_warps": 4,
                                                "num_stages": 3}},
            "tampered": [], "device": "test GPU", **extra}


def result() -> BenchResult:
    return BenchResult(check=Verdict(file="f.py", device="cuda"))


def test_summarize_gives_median_and_percentiles():
    s = summarize([float(v) for v in range(1, 102)])
    assert s["median_ms"] == 51 and s["p20_ms"] == 21 and s["p80_ms"] == 81 and s["calls"] == 101


def test_floor_is_the_larger_of_memory_and_compute():
    assert floor_ms(3e9, 0, "float16", RATES) == pytest.approx(1.0)
    assert floor_ms(3e6, 7e11, "float16", RATES) == pytest.approx(1.0)
    assert floor_ms(3e6, 5e10, "float32", RATES) == pytest.approx(1.0)


def test_float32_ceiling_counts_three_tf32_passes():
    """Three TF32 passes keep float32 accuracy: a third of the TF32 rate bounds float32 when it beats fp32 FMA."""
    with_tf32 = {**RATES, "matmul_TFLOPs_tf32": 375.0}
    assert floor_ms(3e6, 1.25e11, "float32", with_tf32) == pytest.approx(1.0)
    assert floor_ms(3e6, 5e10, "float32", {**RATES, "matmul_TFLOPs_tf32": 90.0}) == pytest.approx(1.0)
    assert floor_ms(3e6, 7e11, "float16", with_tf32) == pytest.approx(1.0)


def test_faster_when_speedup_exceeds_the_spread():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10), None, RATES)
    assert r.passed and r.faster and r.faster_than_compile and r.failure is None
    assert r.speedup == pytest.approx(3.6, rel=0.02)
    assert r.roofline["triton_fraction_of_floor"] == pytest.approx(0.0894 / 0.10, rel=0.02)


def test_inside_the_spread_is_slower():
    r = judge(result(), raw(eager=0.100, compiled=0.09, triton=0.099, jitter=0.05), None, RATES)
    assert not r.faster and r.status == "fail" and r.failure.category == "slower"
    assert "memory-bound" in r.failure.root_cause and "1 kernel launch" in r.failure.root_cause
    assert r.failure.planned_fix


def test_slower_analysis_names_launches_and_spills():
    data = raw(eager=0.2, compiled=0.1, triton=0.4, launches_per_call=3)
    data["kernels"]["fused_kernel_triton"]["spills"] = 12
    r = judge(result(), data, None, RATES)
    assert r.failure.category == "slower"
    assert "fuse the 3 launches" in r.failure.planned_fix.lower() and "spills" in r.failure.planned_fix


def test_slower_analysis_says_when_the_call_is_host_bound():
    """Seen on the H200: a two-launch wrapper with 0.15 ms of host time per call against 0.065 ms of kernels."""
    r = judge(result(), raw(eager=0.081, compiled=0.07, triton=0.079, jitter=0.3, launch_ms=0.15), None, RATES)
    assert r.failure.category == "slower"
    assert "host-bound" in r.failure.root_cause and "percentiles" in r.failure.root_cause
    assert "cut the wrapper's host work" in r.failure.planned_fix.lower()
    quick = judge(result(), raw(eager=0.100, compiled=0.09, triton=0.099, jitter=0.05), None, RATES)
    assert "host-bound" not in quick.failure.root_cause


def test_under_the_floor_is_suspicious():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.05), None, RATES)
    assert r.status == "suspicious" and any("past physics" in s for s in r.suspicious)


def test_a_matmul_faster_than_cublas_is_not_past_physics_until_far_beyond_it():
    """Seen on the H200: a persistent TMA bf16 kernel at 729 TFLOP/s against cuBLAS's 680 at 8192^3 (the
    ceiling), honest and verified. Only a matmul far past the measured ceiling is suspicious."""
    flops = 7e11  # 1.0 ms at RATES' float16 ceiling
    fast = judge(result(), raw(eager=1.3, compiled=1.05, triton=1.0 / 1.07, nbytes=3_000_000, flops=flops),
                 None, RATES)
    assert fast.passed and not fast.suspicious and fast.roofline["triton_fraction_of_floor"] > 1.05
    far = judge(result(), raw(eager=1.3, compiled=1.05, triton=1.0 / 1.4, nbytes=3_000_000, flops=flops), None, RATES)
    assert far.status == "suspicious" and any("past physics" in s for s in far.suspicious)


def test_work_outside_the_timed_stream_is_suspicious():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, hidden=0.3), None, RATES)
    assert r.status == "suspicious" and any("escapes the timed stream" in s for s in r.suspicious)


def test_host_overhead_shared_by_all_contenders_is_not_hidden_work():
    """Seen on the H100: 0.05 ms kernels with 0.13 ms of launch + synchronize on the wall clock."""
    r = judge(result(), raw(eager=0.78, compiled=0.0508, triton=0.0508, wall_extra=0.13,
                            nbytes=8192 * 8192 * 2 + 8192 * 4), None, RATES)
    assert r.passed and not r.suspicious


def test_host_time_of_a_several_kernel_wrapper_is_not_hidden_work():
    """Seen on the H100: a two-kernel 0.108 ms wrapper with 0.49 ms on the wall clock, nearly all of it launches."""
    r = judge(result(), raw(eager=0.115, compiled=0.099, triton=0.1084, launch_ms=0.35), None, RATES)
    assert r.passed and not r.suspicious and r.timings["triton"]["host_median_ms"] == pytest.approx(0.36)
    hidden = judge(result(), raw(eager=0.115, compiled=0.099, triton=0.1084, launch_ms=0.35, hidden=0.2), None, RATES)
    assert hidden.status == "suspicious" and any("escapes the timed stream" in s for s in hidden.suspicious)


def test_host_time_before_a_single_launch_is_not_hidden_work():
    """Seen on the H200: an autotuned one-kernel wrapper, 0.128 ms by events and 0.12 ms on the host before its
    launch, 0.24 ms on the wall clock; eager's and torch.compile's host time overlaps their GPU work, so their
    gaps are negative and are no baseline."""
    timing = {"eager": 0.6126, "compiled": 0.1953, "triton": 0.1282, "launch_ms": 0.11, "overlap_ms": 0.1}
    r = judge(result(), raw(**timing), None, RATES)
    assert r.passed and not r.suspicious
    hidden = judge(result(), raw(**timing, hidden=0.1), None, RATES)
    assert hidden.status == "suspicious" and any("escapes the timed stream" in s for s in hidden.suspicious)


def test_patched_timers_are_suspicious():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, tampered=["torch.cuda.Event.elapsed_time"]),
              None, RATES)
    assert r.status == "suspicious"


def test_the_timer_knows_when_the_file_replaces_a_step_of_its_own(monkeypatch):
    """A file imported by the timing child could swap the steps that build torch.compile's contender or verify
    its outputs (the child runs as __main__, reachable through sys.modules): each one is watched."""
    from fusionforge.bench import timer
    from fusionforge.verify.hostguard import tampered

    assert tampered(timer.PROTECTED) == []
    for name in ("compile_chain", "warm_up", "verify_call", "output_dtype", "median_is_stable", "input_sensitivity",
                 "quantized_reference"):
        with monkeypatch.context() as patch:
            patch.setattr(timer, name, lambda *args, **kwargs: None)
            assert tampered(timer.PROTECTED) == [name]


def test_over_ten_x_needs_the_wall_clock_recheck():
    confirmed = judge(result(), raw(eager=1.2, compiled=0.11, triton=0.1), None, RATES)
    assert confirmed.passed and "confirm" in confirmed.note
    hidden = judge(result(), raw(eager=1.2, compiled=0.11, triton=0.1, hidden=0.4), None, RATES)
    assert hidden.status == "suspicious"


def test_launch_monitor_records_each_launch_stream_once_by_its_handle(monkeypatch):
    """On a GPU the monitor keys launch streams by the handle Triton's launcher reads and builds a Stream
    object only for a handle it has not seen (the GPU calls are faked: this build has no CUDA)."""
    import torch
    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit
    from triton.runtime import driver

    from fusionforge.verify.launches import LaunchMonitor

    class FakeDriver:
        handle = 7

        def get_current_device(self):
            return 0

        def get_current_stream(self, device):
            return self.handle

    fake, built = FakeDriver(), []
    for cls in (jit.JITFunction, interpreter.InterpretedFunction, autotuner.Autotuner, autotuner.Heuristics):
        monkeypatch.setattr(cls, "run", cls.run)  # the monitor's wrapper is undone after the test
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(driver, "_active", fake)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: built.append(fake.handle) or f"stream {fake.handle}")
    monitor = LaunchMonitor()
    monitor.install()
    monitor.skip = True  # no launch reaches Triton
    kernel = triton.jit(_store_one)
    for handle in (7, 7, 9, 7):
        fake.handle = handle
        kernel[(1,)](None)
    assert len(monitor.launches) == 4
    assert monitor.streams == {7: "stream 7", 9: "stream 9"}
    assert built == [7, 9]


def test_timer_waits_only_on_the_side_streams(monkeypatch):
    """join_launch_streams makes the current stream wait on every other stream a kernel was launched on."""
    from fusionforge.bench import timer

    class Monitor:
        streams = {7: "main", 9: "side", 11: "other side"}

        def stream_handle(self):
            return 7

    waits = []
    monkeypatch.setattr(timer, "_current_stream", lambda: "main")
    monkeypatch.setattr(timer, "_wait_stream", lambda current, stream: waits.append((current, stream)))
    timer.join_launch_streams(Monitor())
    assert waits == [("main", "side"), ("main", "other side")]
    Monitor.streams = {7: "main"}
    waits.clear()
    timer.join_launch_streams(Monitor())
    assert waits == []


def test_report_has_the_seed_layout():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, jitter=0.0), None, RATES)
    text = render_report(r, attempt=2, fancy=True)
    assert "FINAL TEST REPORT - ATTEMPT 2" in text
    assert "PyTorch Implementation: ✓ SUCCESS" in text and "Triton Implementation:  ✓ SUCCESS" in text
    assert "PyTorch Time: 0.0720s (0.36ms per run)" in text and "Triton Time:  0.0200s (0.10ms per run)" in text
    assert "🏆 RESULT: Triton is 3.60x FASTER than PyTorch" in text
    assert "torch.compile" in text and "of the floor" in text
    assert "✅ SUCCESS: Both implementations completed successfully!" in text
    assert render_report(r, fancy=False).isascii()
    assert "FINAL TEST REPORT\n" in render_report(r, fancy=False)  # a plain bench is no attempt
    as_json = json.loads(r.to_json())
    assert as_json["timings"]["triton"]["p20_ms"] <= as_json["timings"]["triton"]["median_ms"]
    assert as_json["context"]["flush_bytes"] == 2**28 and as_json["context"]["calls"] == 200


def test_spread_is_the_mean_relative_band():
    a = {"median_ms": 1.0, "p20_ms": 0.9, "p80_ms": 1.1}
    assert spread(a, a) == pytest.approx(0.2)


def test_bench_on_cpu_verifies_and_says_not_timed(capsys):
    assert main(["bench", str(FIXTURES / "bench" / "slow_but_correct.py"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "pass" and out["timed"] is False and "timing needs a CUDA GPU" in out["note"]
    assert out["timings"] == {} and out["speedup"] is None


def test_bench_of_a_wrong_kernel_fails(capsys):
    assert main(["bench", str(FIXTURES / "bad" / "mismatch_sigmoid_not_gelu.py")]) == 1
    out = capsys.readouterr().out
    assert "Triton Implementation:  " in out and "FAILURE ANALYSIS\n" in out and "ATTEMPT" not in out


def test_bench_of_several_files_checks_in_parallel_and_reports_each(capsys):
    good = [FIXTURES / "good" / "pointwise_bias_gelu_fp16.py", FIXTURES / "good" / "row_bias_softmax_fp32.py"]
    bad = FIXTURES / "bad" / "mismatch_sigmoid_not_gelu.py"
    assert main(["bench", *map(str, good), "--jobs", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in out] == list(map(str, good)) and all(r["status"] == "pass" for r in out)
    assert main(["bench", str(good[0]), str(bad), "-j", "2"]) == 1
    text = capsys.readouterr().out
    assert f"{good[0]}:\n" in text and f"{bad}:\n" in text and "FAILURE ANALYSIS" in text  # each as it is final
    assert text.strip().endswith("1 of 2 files pass")
    assert main(["bench", str(good[0]), str(bad), "--task", "t.json"]) == 2


ANCHORS = sorted((Path(__file__).parents[1] / "benchmarks" / "anchors").glob("*.py"))


@pytest.mark.parametrize("path", ANCHORS, ids=[p.stem for p in ANCHORS])
def test_anchor_kernels_pass_the_checker(path):
    from fusionforge.verify import check_file

    verdict = check_file(path, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_the_gate_lets_checks_overlap_and_gives_each_timing_the_gpu_alone(monkeypatch):
    """Eight threads bench through one gate (fake check, preparation and timing that record who runs beside them)."""
    import threading
    import time
    from types import SimpleNamespace

    from fusionforge.bench import DeviceGate, benchmark
    from fusionforge.gpus import parent_gpu_work

    lock = threading.Lock()
    running = {"check": 0, "timing": 0}
    seen = {"most_checks": 0, "timing_beside_other_work": 0, "timings": 0}

    def section(kind):
        with lock:
            running[kind] += 1
            seen["most_checks"] = max(seen["most_checks"], running["check"])
            if kind == "timing" and (running["check"] or running["timing"] > 1):
                seen["timing_beside_other_work"] += 1
        time.sleep(0.02)
        with lock:
            if kind == "timing" and (running["check"] or running["timing"] > 1):
                seen["timing_beside_other_work"] += 1
            running[kind] -= 1

    def fake_check(path, task=None, device=None, timeout=None):
        with parent_gpu_work("cpu"):  # a check's GPU work in this process (its child's, a timing pauses)
            section("check")
        return SimpleNamespace(passed=True)

    class FakeTimingChild:
        def __init__(self, path, task, timeout):
            with parent_gpu_work("cpu"):  # made ready beside the checks
                section("check")

        def close(self):
            pass

    def fake_time(verdict, path, task=None, timeout=None, device=None, timing=None):
        assert isinstance(timing, FakeTimingChild)
        section("timing")
        with lock:
            seen["timings"] += 1
        return "timed"

    monkeypatch.setattr(benchmark, "check_file", fake_check)
    monkeypatch.setattr(benchmark, "TimingChild", FakeTimingChild)
    monkeypatch.setattr(benchmark, "_task_of", lambda path: None)
    monkeypatch.setattr(benchmark, "time_checked", fake_time)
    gate = DeviceGate()
    threads = [threading.Thread(target=benchmark.bench_file, args=(f"{k}.py",), kwargs={"device": "cuda", "gate": gate})
               for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["timings"] == 8
    assert seen["most_checks"] >= 2  # the checks did run side by side
    assert seen["timing_beside_other_work"] == 0


def test_a_timing_whose_paused_neighbours_ran_is_suspicious(monkeypatch):
    from contextlib import contextmanager
    from types import SimpleNamespace

    from fusionforge.bench import DeviceGate, benchmark

    class WokenGate(DeviceGate):
        @contextmanager
        def alone(self):
            yield {4242}  # a paused check seen running during the timing

    monkeypatch.setattr(benchmark, "check_and_prepare",
                        lambda path, task, device, timeout, phases: (SimpleNamespace(passed=True), None))
    monkeypatch.setattr(benchmark, "time_checked",
                        lambda verdict, path, task=None, timeout=None, device=None, timing=None:
                        BenchResult(check=verdict, timed=True))
    result = benchmark.bench_file("x.py", device="cuda", gate=WokenGate())
    assert result.status == "suspicious" and "did not have the GPU alone" in result.suspicious[0]
    assert benchmark.bench_file("x.py", device="cuda", gate=DeviceGate()).status == "pass"


def test_a_stopped_gate_ends_every_wait_and_every_section_with_an_interrupt():
    import threading

    from fusionforge.bench import DeviceGate

    gate = DeviceGate()
    outcomes = []

    def waiter():
        try:
            with gate.shared():  # waits: a timing holds the gate
                outcomes.append("entered")
        except KeyboardInterrupt:
            outcomes.append("interrupted")

    with pytest.raises(KeyboardInterrupt):
        with gate.alone():
            thread = threading.Thread(target=waiter)
            thread.start()
            thread.join(0.2)
            assert thread.is_alive()
            gate.stop()
            thread.join(5)
    assert outcomes == ["interrupted"]
    with pytest.raises(KeyboardInterrupt):
        with gate.shared():
            pass


def verified_calls(n: int = 6, launches: int = 1, wrong_round: int | None = None) -> list[dict]:
    calls = []
    for r in range(n):
        good = r != wrong_round
        calls.append({"round": r, "why": "first" if r < 2 else "random", "launches": launches, "passed": good,
                      "kind": "mismatch", "rel_err": 1e-4 if good else 0.2, "tolerance": 2e-3,
                      "max_abs_err": 1e-3 if good else 3.0, "max_abs_tolerance": 1e-2, "max_abs_index": [5, 7],
                      "value": 0.1, "expected": 3.1})
    return calls


def test_a_wrong_timed_call_fails_as_cheat():
    ok = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, verified=verified_calls(),
                             launch_counts={"1": 200}), None, RATES)
    assert ok.passed and ok.context["verified_calls"] == 6
    bad = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, verified=verified_calls(wrong_round=4),
                              launch_counts={"1": 200}), None, RATES)
    assert bad.status == "fail" and bad.failure.category == "cheat"
    assert "round 4" in bad.failure.message and "1 of 6 verified timed calls" in bad.failure.message
    assert "new values in the same tensors" in bad.failure.root_cause


def test_timed_calls_that_launch_less_than_the_verified_ones_fail_as_cheat():
    r = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.10, verified=verified_calls(launches=2),
                            launch_counts={"0": 90, "2": 110}), None, RATES)
    assert r.failure.category == "cheat" and "90 timed calls launched fewer kernels (0)" in r.failure.message


def test_a_floor_that_pytorch_beats_is_a_wrong_floor_not_a_cheat():
    """Seen on the H200: ceilings measured beside other checks gave a floor above eager's and compile's times."""
    r = judge(result(), raw(eager=0.08, compiled=0.07, triton=0.05), None, RATES)
    assert r.roofline["floor_wrong"] and not r.suspicious and r.passed
    assert "floor" in r.note and "wrong" in r.note
    contended = judge(result(), raw(eager=0.36, compiled=0.11, triton=0.05),
                      None, {**RATES, "contended": "other processes use the GPU (pids 7)"})
    assert contended.roofline["floor_wrong"] and not contended.suspicious and "uncertain" in contended.note


def test_ceilings_are_trusted_only_when_measured_alone_and_consistent():
    from fusionforge.bench.roofline import plausible

    samples = {"copy_GBs": [3000.0, 3010.0, 2990.0], "matmul_TFLOPs_float16": [650.0, 655.0, 660.0]}
    rates, why = plausible(samples, [])
    assert rates == {"copy_GBs": 3010.0, "matmul_TFLOPs_float16": 660.0} and not why
    assert plausible(samples, [1234])[0] is None and "1234" in plausible(samples, [1234])[1]
    busy = {**samples, "matmul_TFLOPs_float16": [271.0, 655.0, 680.0]}
    rates, why = plausible(busy, None)
    assert rates is None and "matmul_TFLOPs_float16" in why


def test_a_contended_measurement_is_measured_again_and_never_cached(monkeypatch, tmp_path):
    from fusionforge.bench import roofline

    good = {name: [100.0, 101.0, 100.5] for name in roofline.RATES}
    busy = {name: [40.0, 101.0, 100.5] for name in roofline.RATES}
    answers = [(busy, [], ""), (good, [], "")]
    monkeypatch.setattr(roofline, "CACHE", tmp_path / "rates.json")
    monkeypatch.setattr(roofline, "device_key", lambda index: "GPU X|torch t|triton t")
    monkeypatch.setattr(roofline, "_measure_in_child", lambda: answers.pop(0))
    monkeypatch.setattr(roofline.time, "sleep", lambda seconds: None)
    rates = roofline.device_rates()
    assert rates["copy_GBs"] == 101.0 and "contended" not in rates and not answers
    assert json.loads((tmp_path / "rates.json").read_text())["GPU X|torch t|triton t"]["copy_GBs"] == 101.0
    roofline.forget("GPU X|torch t|triton t")
    answers[:] = [(busy, [], "")] * roofline.ATTEMPTS
    rates = roofline.device_rates()
    assert "disagree" in rates["contended"] and not answers
    assert json.loads((tmp_path / "rates.json").read_text()) == {}


def test_children_idle_on_the_gpu_do_not_spoil_the_ceilings(monkeypatch, tmp_path):
    """A timing child waits for its turn holding the GPU's memory, idle: the ceilings measured beside it are
    the GPU alone's and are cached; any other process on the GPU still makes them contended."""
    from fusionforge.bench import roofline

    good = {name: [100.0, 101.0, 100.5] for name in roofline.RATES}
    monkeypatch.setattr(roofline, "CACHE", tmp_path / "rates.json")
    monkeypatch.setattr(roofline, "device_key", lambda index: "GPU X|torch t|triton t")
    monkeypatch.setattr(roofline, "idle_on_gpu", lambda pid: pid == 4242)
    monkeypatch.setattr(roofline.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(roofline, "_measure_in_child", lambda: (good, [4242], ""))
    assert "contended" not in roofline.device_rates() and (tmp_path / "rates.json").exists()
    roofline.forget("GPU X|torch t|triton t")
    monkeypatch.setattr(roofline, "_measure_in_child", lambda: (good, [4242, 777], ""))
    assert "777" in roofline.device_rates()["contended"]


def test_other_processes_count_only_on_the_measured_gpu(monkeypatch):
    """nvidia-smi lists every GPU of the machine: a neighbour lane's work must not spoil this GPU's ceilings."""
    from types import SimpleNamespace

    from fusionforge.bench import roofline

    listing = "101, GPU-aaaa-1111\n202, GPU-bbbb-2222\n303, GPU-aaaa-1111\n"
    monkeypatch.setattr(roofline.subprocess, "run", lambda *a, **k: SimpleNamespace(returncode=0, stdout=listing))
    assert roofline.gpu_processes("aaaa-1111") == [101, 303]
    assert roofline.gpu_processes("GPU-bbbb-2222") == [202]
    assert roofline.gpu_processes() == [101, 202, 303]


def test_fresh_inputs_give_each_round_new_values_in_the_same_tensors():
    import torch

    from fusionforge.bench.timer import FreshInputs

    pools = [[torch.randn(37, 131), torch.randn(131), 0.5], [torch.randn(37, 131), torch.randn(131), 0.25]]
    pristine = [[v.clone() if isinstance(v, torch.Tensor) else v for v in pool] for pool in pools]
    fresh = FreshInputs(pools, random.Random(0))
    seen, first = [], fresh.refill(0)
    for r in range(6):
        inputs = fresh.refill(r)
        assert inputs is fresh.timed[r % 2] and (r % 2 or inputs is first)
        assert inputs[2] == pools[r % 2][2]  # scalars kept
        for value, source in zip(inputs[:2], pools[r % 2][:2]):  # a permutation of the pool's values
            assert torch.equal(value.reshape(-1).sort().values, source.reshape(-1).sort().values)
        seen.append(inputs[0].clone())
    assert all(not torch.equal(a, b) for k, a in enumerate(seen) for b in seen[k + 1:])
    assert all(torch.equal(a, b) for pool, kept in zip(pools, pristine) for a, b in zip(pool[:2], kept[:2]))


def test_a_timed_output_is_verified_with_the_checkers_tolerance():
    import torch

    from fusionforge.bench.timer import verify_call
    from fusionforge.tasks import TaskGenerator

    task = TaskGenerator().generate(3, dtype="float32", ops="add:col,softmax")
    inputs = task.make_inputs({"M": 41, "N": 97}, 5)
    eager = task.function(*inputs)
    assert verify_call(eager.clone(), eager, inputs, task.reference, torch.float32)["passed"]
    stale = eager.clone()
    stale[30:] = task.function(*task.make_inputs({"M": 41, "N": 97}, 6))[30:]
    verdict = verify_call(stale, eager, inputs, task.reference, torch.float32)
    assert not verdict["passed"] and verdict["kind"] == "mismatch" and verdict["max_abs_index"][0] >= 30
    assert verify_call((eager,), eager, inputs, task.reference, torch.float32) == {
        "passed": False, "kind": "type", "type": "tuple"}


def test_a_timed_index_is_verified_by_the_value_it_picks():
    import torch

    from fusionforge.bench.timer import verify_call
    from fusionforge.tasks import TaskGenerator

    task = TaskGenerator().generate(0, dtype="float16", ops="abs,add:col,argmax")
    inputs = task.make_inputs({"M": 41, "N": 997}, 5)
    eager = task.function(*inputs)
    picks = task.reference(inputs)
    assert verify_call(picks.clone(), eager, inputs, task.reference, torch.int64, picked_from=task.picked_from)[
        "passed"]
    shifted = (picks + 1) % 997  # the neighbour of every row's max
    verdict = verify_call(shifted, eager, inputs, task.reference, torch.int64, picked_from=task.picked_from)
    assert not verdict["passed"] and verdict["rule"] == "index" and verdict["rel_err"] > 0.9


def test_timed_fp8_values_and_scales_are_verified_each_by_its_rule():
    import functools

    import torch

    from fusionforge.bench.timer import verify_call
    from fusionforge.tasks import TaskGenerator
    from fusionforge.verify.checker import quantized_reference

    task = TaskGenerator().generate(0, dtype="bfloat16", ops="silu,quantize_fp8_rows")
    inputs = task.make_inputs({"M": 41, "N": 997}, 5)
    eager = task.function(*inputs)
    reference = functools.partial(quantized_reference, task)
    dtypes = (torch.float8_e4m3fn, torch.float32)
    assert verify_call(tuple(t.clone() for t in eager), eager, inputs, reference, dtypes)["passed"]
    scales = verify_call((eager[0], eager[1] * 1.01), eager, inputs, reference, dtypes)
    assert not scales["passed"] and scales["output"] == 1
    assert verify_call(eager[0], eager, inputs, reference, dtypes) == {
        "passed": False, "kind": "type", "type": "Tensor"}


def test_a_file_without_a_task_is_verified_at_its_pytorch_functions_dtype():
    """The float32 statistic of float16 rows (an anchor): timed outputs are float32, as the checker expects."""
    import torch

    from fusionforge.bench.timer import output_dtype, verify_call
    from fusionforge.kernelfile import load_module

    module = load_module(next(p for p in ANCHORS if p.name == "sq_mean_sqrt.py"), "sq_mean_sqrt_anchor")
    inputs = module.get_inputs()
    assert inputs[0].dtype == torch.float16 and output_dtype(module.fused_kernel_pytorch, inputs) == torch.float32

    def reference(values):
        return module.fused_kernel_pytorch(*[v.double() for v in values])

    eager = module.fused_kernel_pytorch(*inputs)
    assert verify_call(eager.clone(), eager, inputs, reference, output_dtype(module.fused_kernel_pytorch, inputs))[
        "passed"]

def test_the_timer_refuses_a_files_stack_walk_and_allows_a_librarys(tmp_path):
    from fusionforge.verify.hostguard import Refused, StackWatch

    candidate = tmp_path / "walker.py"
    candidate.write_text("import sys\n\ndef wrapper():\n    return sys._getframe(1)\n\n"
                         "def via_inspect():\n    import inspect\n    return inspect.stack()\n")
    namespace: dict = {}
    exec(compile(candidate.read_text(), str(candidate), "exec"), namespace)

    class Monitor:
        inside = False

    watch = StackWatch(Monitor(), str(candidate))
    watch.install()
    with pytest.raises(Refused, match="sys._getframe"):
        watch.watched(namespace["wrapper"])()
    with pytest.raises(Refused):  # a library walking the stack for the file is the file's walk
        watch.watched(namespace["via_inspect"])()
    assert watch.events == ["walks the interpreter's stack (sys._getframe)"]
    import typing

    with watch.watching():  # a walk with no frame of the file's above it (typing naming its caller's module)
        typing.TypeVar("T")
    assert len(watch.events) == 1
    assert namespace["wrapper"]() is not None  # and nothing is refused while no call is watched


def test_inside_a_launch_the_files_own_walk_is_refused_and_tritons_is_the_launchs(tmp_path):
    """Inside a launch the file's own code (a kernel body under the interpreter, a function a kernel calls) is
    still the file's; what Triton's code does there belongs to the launch."""
    from fusionforge.verify.hostguard import TRITON, Refused, StackWatch

    candidate = tmp_path / "walker.py"
    candidate.write_text("import sys\n\ndef wrapper(launch):\n    return launch(lambda: sys._getframe(1))\n")
    namespace: dict = {}
    exec(compile(candidate.read_text(), str(candidate), "exec"), namespace)
    launch_code = ("import sys\n\ndef launch(fn):\n    return fn()\n\n"
                   "def triton_walk(fn):\n    return sys._getframe(1)\n")
    triton_like: dict = {}
    exec(compile(launch_code, f"{TRITON}/runtime/not_a_real_module.py", "exec"), triton_like)

    class Monitor:
        inside = True

    watch = StackWatch(Monitor(), str(candidate))
    watch.install()
    with pytest.raises(Refused, match="sys._getframe"):  # the file's lambda, called by the launch
        watch.watched(namespace["wrapper"])(triton_like["launch"])
    assert watch.watched(namespace["wrapper"])(triton_like["triton_walk"]) is not None  # Triton's own walk


def test_the_timer_refuses_a_file_rewriting_code_it_did_not_define(tmp_path):
    from fusionforge.verify.hostguard import Refused, StackWatch

    candidate = tmp_path / "rewriter.py"
    candidate.write_text("def own():\n    return 1\n\ndef rewrite(target):\n    own.__code__ = (lambda: 2).__code__\n"
                         "    target.__code__ = own.__code__\n")
    namespace: dict = {}
    exec(compile(candidate.read_text(), str(candidate), "exec"), namespace)

    def not_the_files():
        return 0

    class Monitor:
        inside = False

    watch = StackWatch(Monitor(), str(candidate))
    watch.install()
    with pytest.raises(Refused, match="rewrites the code of .*not_the_files"):
        watch.watched(namespace["rewrite"])(not_the_files)
    assert not_the_files() == 0 and namespace["own"]() == 2  # the file's own function may change; others may not


def test_the_timer_protects_what_its_evidence_relies_on():
    from fusionforge.bench import timer

    for name in ("LaunchMonitor.install", "StackWatch._audit", "FileFrames.candidate_called", "FreshInputs.refill",
                 "Seal.write", "compare", "torch.cuda.Event.record", "time.perf_counter"):
        assert name in timer.PROTECTED, name
    assert all(getattr(owner, attribute) is original for owner, attribute, original in timer.PROTECTED.values())


def test_a_timed_file_that_walked_the_stack_fails_as_cheat():
    from fusionforge.bench.benchmark import timed_work_failure

    failure = timed_work_failure({"stack_access": ["walks the interpreter's stack (sys._getframe)"], "verified": []},
                                 [])
    assert failure.category == "cheat" and "reaches into the timer" in failure.message
    assert timed_work_failure({"stack_access": [], "verified": []}, []) is None


def test_a_timed_file_that_changed_pytorchs_settings_fails_as_cheat():
    """The timer reads PyTorch's settings after every timed call: a wrapper that turns cuDNN off only when
    timed (the checker's child saw nothing) slows the eager baseline, and the bench fails it."""
    from fusionforge.bench.benchmark import timed_work_failure

    failure = timed_work_failure({"settings_changed": ["torch.backends.cudnn.enabled: True -> False"], "verified": []},
                                 [])
    assert failure.category == "cheat" and "torch.backends.cudnn.enabled: True -> False" in failure.message
    assert timed_work_failure({"settings_changed": [], "verified": []}, []) is None


def test_a_timed_file_that_computes_differently_fails_as_cheat():
    """A file that tells the timer's process from the checker's (its call count, a clock) and takes another path
    there (cuBLAS for the matmul, then an epilogue kernel) launches kernels the check never saw, and its verified
    timed calls dispatch a matmul."""
    from fusionforge.bench.benchmark import timed_work_failure

    raw = {"file_kernels": ["epilogue_kernel"], "verified": []}
    failure = timed_work_failure(raw, ["fused_kernel_triton"])
    assert failure.category == "cheat" and "never launched: epilogue_kernel" in failure.message
    assert timed_work_failure({**raw, "file_kernels": ["fused_kernel_triton"]}, ["fused_kernel_triton"]) is None
    failure = timed_work_failure({**raw, "compute_ops": ["aten.mm.default"]}, ["epilogue_kernel"])
    assert failure.category == "cheat" and "computed with PyTorch: aten.mm.default" in failure.message


def test_the_timers_watch_names_compute_and_conversions_and_lets_views_and_allocations_be():
    """The verified timed calls' watch reads the checker's rule (``policy.computed_op``): a matmul and a cast are
    compute, a view, an allocation and a same-dtype copy are not; ops inside a launch are the launch's."""
    import types

    import torch

    from fusionforge.bench.timer import ComputeOps

    monitor = types.SimpleNamespace(inside=False)
    watch = ComputeOps(monitor)
    x = torch.ones(4, 4)
    with watch:
        x.view(16), torch.empty(3), x.clone(), x @ x, x.to(torch.float16), x @ x
        monitor.inside = True
        x.exp()
    assert watch.ops == ["aten.mm.default", "aten._to_copy.default (float32 -> float16)"]


def test_report_shows_each_input_set_like_check():
    """`attempt` and `run` print the bench report: on a pass it lists each input set's error, as `check` does."""
    check = Verdict(file="f.py", device="cpu", checks=[
        {"label": "test[0] M=41 N=97 #1", "passed": True, "rel_err": 1.5e-7, "tolerance": 1e-5, "max_abs_err": 3e-7},
        {"label": "ghost replay (launches skipped)", "passed": True, "note": "output changed: the kernels work"}])
    text = render_report(BenchResult(check=check, note="not timed"), attempt=3, fancy=False)
    assert "FINAL TEST REPORT - ATTEMPT 3" in text and "Checked on cpu against the float64 reference:" in text
    assert "[OK] test[0] M=41 N=97 #1" in text and "rel err 1.50e-07 (tol 1.00e-05)" in text
    assert "ghost replay (launches skipped)" in text and "SUCCESS" in text
    check.checks.append({"label": "test[1] M=64 N=128 #1", "passed": False})  # failed before its error was measured
    failing = render_report(BenchResult(check=check), fancy=False)
    line = next(line for line in failing.splitlines() if "test[1] M=64 N=128 #1" in line)
    assert "[FAIL]" in line and line.endswith("failed: see the analysis")
