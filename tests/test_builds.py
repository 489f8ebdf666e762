"""Kernels compiled for Hopper on the CPU: the shared memory each launch needs at the bench shape (verify/builds.py)."""

from pathlib import Path

import pytest

from fusionforge.codegen import generate
from fusionforge.tasks import TaskGenerator
from fusionforge.verify import check_file
from fusionforge.verify.builds import TARGETS, _judge, build_failure, build_report, target_for

GEN = TaskGenerator()
GOOD = Path(__file__).parent / "fixtures" / "good" / "pointwise_bias_gelu_fp16.py"
LIMIT = TARGETS["sm_90"][1]


def _site(*shared, errors=0):
    builds = [{"config": f"BLOCK_M={64 * (k + 1)}", "shared": s, "error": None} for k, s in enumerate(shared)]
    return {"kernel": "fused_kernel_triton", "line": 40,
            "builds": builds + [{"config": "BLOCK_M=8", "shared": None, "error": "PTXASError: x"}] * errors}


def test_a_launch_fails_only_when_every_config_is_past_the_limit():
    assert _judge({"sites": [_site(LIMIT + 1, LIMIT)]}, "sm_90") is None  # the autotuner takes the one that fits
    failure = _judge({"sites": [_site(LIMIT // 4), _site(LIMIT + 4096, 2 * LIMIT)]}, "sm_90")
    assert failure.category == "compile" and failure.implementation == "Triton" and failure.line == 40
    assert f"Required: {LIMIT + 4096}, Hardware limit: {LIMIT}" in failure.message and "BLOCK_M=64" in failure.message
    assert "shared memory" in failure.root_cause and "num_stages" in failure.planned_fix


def test_a_build_that_failed_otherwise_predicts_nothing():
    """The harness, not the file, may be at fault: such a launch is passed over, and a wrapper that could not run on
    meta tensors too."""
    assert _judge({"sites": [_site(LIMIT + 1, errors=1)]}, "sm_90") is None
    assert _judge({"sites": [_site(errors=2)]}, "sm_90") is None
    assert _judge({"skipped": "RuntimeError: .item() on a meta tensor"}, "sm_90") is None


@pytest.mark.parametrize("family, seed, kernels", [
    ("attention", 19, 1),  # float32, head dim 128: the tiles that once needed 256-512 KiB
    ("attention", 13, 2),  # bfloat16 rotary: the keys' rotation, then attention
    ("convolution", 6, 2),  # bfloat16 conv2d, then a spatial mean
    ("convolution", 1, 1),  # float32 conv2d
])
def test_the_generators_kernels_fit_hopper_at_their_bench_shapes(tmp_path, family, seed, kernels):
    """Every launch of the wrapper at the bench shape (meta tensors), every autotune config compiled for sm_90
    with Triton's own argument specialization: all fit, none is a config the autotuner could only discard."""
    task = GEN.generate(seed, family=family)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    report = build_report(path, task)
    assert len(report["sites"]) == kernels, report
    for site in report["sites"]:
        assert site["builds"] and all(b["error"] is None and 0 <= b["shared"] <= LIMIT for b in site["builds"]), site
        assert site["line"] and "fused_kernel_triton_wrapper" not in site["kernel"]
    assert build_failure(path, task) is None


def test_a_wrapper_that_cannot_run_on_meta_tensors_is_not_built(tmp_path):
    """A wrapper that cannot run on meta tensors (here one that refuses them; the check refuses host reads of the
    values, the usual reason): no prediction, and the check passes."""
    text = GOOD.read_text().replace("    x = x.contiguous()\n", "    x = x.contiguous()\n    if x.is_meta:\n"
                                    "        raise RuntimeError('data needed')\n", 1)
    assert "data needed" in text
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(text)
    assert "skipped" in build_report(path, None)
    verdict = check_file(path, build_target="sm_90")
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_a_launch_with_a_config_left_unbuilt_is_not_judged():
    """Past MAX_BUILDS a config is not compiled: the one left out might have fitted."""
    site = _site(LIMIT + 1)
    site["builds"].append({"config": "BLOCK_M=16", "shared": None, "error": "not built (MAX_BUILDS)"})
    assert _judge({"sites": [site]}, "sm_90") is None


def test_the_build_target_comes_from_the_call_then_the_environment(monkeypatch):
    monkeypatch.delenv("FUSIONFORGE_BUILD_TARGET", raising=False)
    assert target_for(None) == "sm_90" and target_for("none") is None
    monkeypatch.setenv("FUSIONFORGE_BUILD_TARGET", "none")
    assert target_for(None) is None and target_for("sm_90") == "sm_90"
    with pytest.raises(ValueError, match="sm_80"):
        target_for("sm_80")


def test_check_takes_a_build_target_or_none(capsys):
    from fusionforge.cli import main

    assert main(["check", str(GOOD), "--build-target", "sm_80"]) == 2
    assert "sm_90 or none" in capsys.readouterr().err
    assert main(["check", str(GOOD), "--build-target", "none"]) == 0


DESCRIPTORS = Path(__file__).parent / "fixtures" / "good" / "pointwise_padded_descriptor_bias_gelu_fp16.py"


def test_a_configs_hook_sets_the_descriptor_blocks_it_is_built_with(tmp_path):
    """Autotuned over two tiles whose pre_hook sets the host descriptors' block shapes (as Triton's autotuner runs
    it before each launch): each config builds with its own blocks, not the wrapper's placeholder."""
    text = DESCRIPTORS.read_text()
    text = text.replace("@triton.jit\ndef fused_kernel_triton(", '''def _descriptor_blocks(nargs):
    for name in ("x_desc", "out_desc"):
        nargs[name].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_N"]]


@triton.autotune(configs=[triton.Config({"BLOCK_M": 16, "BLOCK_N": 64}, pre_hook=_descriptor_blocks),
                          triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, pre_hook=_descriptor_blocks)],
                 key=["n_cols"])
@triton.jit
def fused_kernel_triton(''', 1)
    text = text.replace("    BLOCK_M, BLOCK_N = 16, 64\n", "", 1)
    text = text.replace("[BLOCK_M, BLOCK_N])\n", "[1, 8])  # the config's hook sets the block\n")
    text = text.replace("    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(n_pad, BLOCK_N))\n",
                        "    grid = lambda meta: (triton.cdiv(M, meta['BLOCK_M']), "
                        "triton.cdiv(n_pad, meta['BLOCK_N']))\n", 1)
    text = text.replace(", N, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)", ", N)", 1)
    assert text.count("_descriptor_blocks") == 3 and "BLOCK_M=BLOCK_M" not in text
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(text)
    report = build_report(path, None)
    (site,) = report["sites"]
    assert len(site["builds"]) == 2 and all(b["error"] is None for b in site["builds"]), site
    assert build_failure(path, None) is None
