"""The built-in code generator: deterministic, seed-format files that pass the checker."""

import ast
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import triton
from conftest import DEVICE

from fusionforge import ops as catalog
from fusionforge.cli import main
from fusionforge.codegen import resolve, variants
from fusionforge.codegen.convolution import tap_loop
from fusionforge.codegen.source import Code, Kernel, fit
from fusionforge.codegen.tuning import TWO_REDUCTION_MAX_SPLITS, TWO_REDUCTION_TILE
from fusionforge.implement import BuiltinImplementer, PastAttempt, UnsupportedTask, generate
from fusionforge.implement.builtin import next_variant
from fusionforge.kernelfile import load_module, next_free_path, parse
from fusionforge.ops import Family
from fusionforge.tasks import FusionTask, TaskGenerator
from fusionforge.verify import check_file

GEN = TaskGenerator()
EASY = [GEN.generate(seed, difficulty="easy") for seed in range(10)]


def test_generation_is_deterministic():
    assert generate(EASY[0]) == generate(GEN.generate(0, difficulty="easy"))


def _unread_parameters(source: str) -> list[str]:
    """``kernel(parameter)`` for each parameter of a @triton.jit function in ``source`` that its body never reads."""
    unread = []
    for fn in (node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)):
        if any("jit" in ast.unparse(d) for d in fn.decorator_list):
            read = {node.id for node in ast.walk(fn) if isinstance(node, ast.Name)}
            unread += [f"{fn.name}({a.arg})" for a in fn.args.args if a.arg not in read]
    return unread


def test_kernels_take_no_parameter_they_do_not_read():
    """Every @triton.jit function of every variant of seeds 0..199 reads each of its parameters."""
    unused = []
    for seed in range(200):
        task = GEN.generate(seed)
        unused += [f"seed {seed} {variant} {kernel}" for variant in variants(task)
                   for kernel in _unread_parameters(generate(task, variant=variant))]
    assert not unused


def test_a_size_named_only_in_a_comment_is_not_passed():
    body = Code()("# rows of n_cols values", "h = tl.load(x_ptr + row * row_len + cols)  # n_rows programs")
    kernel = Kernel("k", ["x_ptr"], [("row_len", "row_len"), ("n_cols", "N"), ("n_rows", "M")], [], ["k."], body)
    assert kernel.read_sizes() == [("row_len", "row_len")] and kernel.size_args() == ["row_len"]
    assert "def k(x_ptr, row_len):" in kernel.text()


@pytest.mark.parametrize("family", [None, "convolution", "attention", "pooling", "fp8", "loss", "scan", "gather",
                                    "arg_reduction", "spatial_reduction"])
def test_generated_triton_sections_keep_to_120_columns(family):
    """Seeds 0..29 of each family: no TRITON line past 120 columns, and breaking the lines changed no statement."""
    for seed in range(30):
        source = generate(GEN.generate(seed, family=family) if family else GEN.generate(seed))
        triton_section = source.split("# <TRITON>")[1].split("# </TRITON>")[0]
        assert max(map(len, triton_section.splitlines())) <= 120, f"seed {seed}"


def test_fit_breaks_comments_calls_and_sums_the_way_a_person_would():
    long_call = "    h = tl.load(x_ptr + rows[:, None] * row_len + cols[None, :], mask=mask, other=0.0).to(tl.float32)"
    source = "\n".join([
        "    # " + "word " * 30,
        long_call + "  # [BLOCK_M, BLOCK_N] the program's tile, masked past the row",
        "    total = first_value_with_a_long_name * another_long_factor + tl.sum(tl.where(mask, h * h, 0.0), axis=1) "
        "- offset_value",
        '    """x [M, K], w [N, K], running_mean1 [N], running_var1 [N], gamma1 [N], beta1 [N], residual3 [M, N] -> '
        '[M, N]: allocate, launch."""',
        "    x = 'a # in a string is not a comment'"])
    lines = fit(source).splitlines()
    assert max(map(len, lines)) <= 120
    assert lines[0].startswith("    # word") and lines[1].startswith("    # word")
    assert lines[2] == "    # [BLOCK_M, BLOCK_N] the program's tile, masked past the row" and lines[3] == long_call
    assert lines[4].startswith("    total = (first_value") and lines[5].lstrip().startswith("- offset_value)")
    assert lines[6].startswith('    """x [M, K]') and "[M,\n" not in fit(source) and lines[-2] == '    """'
    assert lines[-1] == "    x = 'a # in a string is not a comment'"
    assert ast.dump(ast.parse("def f():\n" + "\n".join(lines[3:6]))) == \
        ast.dump(ast.parse("def f():\n" + long_call + "\n" + source.splitlines()[2]))


def test_easy_sample_covers_dtypes_ranks_and_broadcasts():
    assert {t.dtype for t in EASY} == {"float32", "float16", "bfloat16"}
    assert {len(t.inputs[0].shape) for t in EASY} == {2, 3}
    assert {s.params["operand"] for t in EASY for s in t.steps if "operand" in s.params} >= {"scalar", "col", "full"}


@pytest.mark.parametrize("task", EASY + [GEN.generate(1, dtype="float32", ops="mul:row,div:full,minimum:scalar")],
                         ids=lambda t: t.signature)
def test_pointwise_plan_passes_the_checker(tmp_path, task):
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    assert parse(path).ok
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype", [("mul:row,add:col,relu", "float32"), ("add:col,gelu,mul:scalar", "bfloat16")])
def test_pointwise_tiles_run_in_row_major_order(tmp_path, ops, dtype):
    """Chains with a vector run over [BLOCK_M, BLOCK_N] tiles numbered row by row on one grid dimension. At the test
    shape, 7 rows of 2500 values make 4 x 3 tiles of [2, 1024], the last row and column of tiles masked."""
    task = GEN.generate(3, dtype=dtype, ops=ops)
    task = replace(task, shapes={**task.shapes, "test": [{**dims, "M": 7, "N": 2500} for dims in task.shapes["test"]]})
    source = generate(task)
    assert "tiles_n = tl.cdiv(n_cols, BLOCK_N)" in source and "(tl.program_id(0) % tiles_n) * BLOCK_N" in source
    assert "grid = (triton.cdiv(n_rows, BLOCK_M) * triton.cdiv(n_cols, BLOCK_N),)" in source
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


ROW_CHAINS = ["sum", "mean", "max", "min", "logsumexp", "l2norm", "var", "add:col,softmax", "mul:row,log_softmax",
              "relu,layer_norm,gelu", "rms_norm,add:full", "l2_normalize,tanh", "group_norm,silu", "batch_norm",
              "instance_norm,add:row", "exp,var,sqrt"]


@pytest.mark.parametrize("ops", ROW_CHAINS)
def test_row_plan_passes_the_checker(tmp_path, ops):
    task = GEN.generate(len(ops), ops=ops)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


SHORT_ROW_CHAINS = [("sum", "float16"), ("mean", "bfloat16"), ("max", "float32"), ("min", "float16"),
                    ("logsumexp", "bfloat16"), ("l2norm", "float32"), ("var", "float16"),
                    ("add:col,mul:row,sum,sqrt", "float16"), ("maximum:full,div:col,mean,add:scalar", "float32")]


@pytest.mark.parametrize("ops, dtype", SHORT_ROW_CHAINS)
def test_short_row_reductions_read_several_rows_per_program(tmp_path, ops, dtype):
    """Rows under 2 KB at every shape: a [ROWS, BLOCK_N] tile per program, its last tile part masked at the test
    shapes. The same chain over long bench rows keeps one row per program."""
    task = GEN.generate(7, dtype=dtype, ops=ops)
    long_rows = replace(task, shapes={**task.shapes, "bench": [{**dims, "N": 4096} for dims in task.shapes["bench"]]})
    assert "ROWS" not in generate(long_rows)
    task = replace(task, shapes={"test": [{**dims, "N": min(dims["N"], 300)} for dims in task.shapes["test"]],
                                 "bench": [{**dims, "N": 384} for dims in task.shapes["bench"]]})
    source = generate(task)
    assert "ROWS = max(1, 2048 // BLOCK_N)" in source and "mask=row_mask)" in source
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def _sampled(op: str, rank: int) -> FusionTask:
    return next(t for t in (GEN.generate(s, difficulty="medium") for s in range(2000))
                if len(t.inputs[0].shape) == rank and any(step.op == op for step in t.steps))


LONG_ROW_CHAINS = [("sum", "float16"), ("mean", "bfloat16"), ("max", "float32"), ("min", "float16"),
                   ("add:col,logsumexp,exp", "bfloat16"), ("l2norm", "float32"), ("var", "float16"),
                   ("exp,var,sqrt", "float32"), ("add:col,softmax", "float16"), ("mul:row,log_softmax", "bfloat16"),
                   ("relu,layer_norm,gelu", "float32"), ("rms_norm,add:full", "bfloat16"),
                   ("l2_normalize,tanh", "float16"), ("group_norm,silu", "float32"),
                   ("instance_norm,add:row", "bfloat16")]
LONG_ROW = 20011  # a prime above MAX_ROW_BLOCK


def _with_long_rows(task: FusionTask) -> FusionTask:
    """``task`` with rows of LONG_ROW values or more at its bench shape and at one more test shape (its last test
    shape, N widened); a group norm's rows are groups, so its N grows by the group count."""
    groups = next((s.params["groups"] for s in task.steps if s.op == "group_norm"), 1)
    test = task.shapes["test"]
    return replace(task, shapes={"test": [*test, {**test[-1], "N": LONG_ROW * groups}],
                                 "bench": [{**dims, "N": LONG_ROW * groups} for dims in task.shapes["bench"]]})


@pytest.mark.parametrize("task", [GEN.generate(7, dtype=dtype, ops=ops) for ops, dtype in LONG_ROW_CHAINS]
                         + [_sampled("group_norm", 3), _sampled("batch_norm", 3),
                            GEN.generate(567, difficulty="medium"), GEN.generate(860, difficulty="medium"),
                            GEN.generate(7, dtype="float16", ops="matmul,softmax")],
                         ids=lambda task: f"{task.signature}-{task.dtype}")
def test_long_rows_are_walked_in_slices(tmp_path, task):
    """Every row op over rows longer than registers hold, alone or after a matmul: CHUNK-wide slices (the long test
    shape's rows of 20011 values take five of 4096, the last masked), one pass for a reduction and for batch norm
    (per channel), two for a normalization (its statistics, then normalize and store); a 3D group norm in tiles of
    channels and positions (at the long test shape, two or more tiles a group at every TILE)."""
    task = _with_long_rows(task)
    source = generate(task)
    one_pass = any(catalog.get(s.op).family is Family.REDUCTION or s.op == "batch_norm" for s in task.steps)
    tiled = len(task.inputs[0].shape) == 3 and any(s.op == "group_norm" for s in task.steps)
    loop = ("for tile in range(0, tl.cdiv(group_chans, C_BLOCK) * n_blocks):" if tiled else
            "for start in range(0, row_len, CHUNK):")
    assert source.count(loop) == (1 if one_pass else 2)
    assert not _unread_parameters(source)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_a_walked_mean_far_from_zero_keeps_pytorchs_accuracy(tmp_path):
    """A 3D group norm over values 130 spreads from zero (20 + 0.15 z), walked in 268 tiles a group: the running mean
    is carried as an offset from the first tile's, so what is rounded at each tile is spread-sized and the output is
    within twice PyTorch's own float32 error (a mean rounded at its full size every tile is about 8x PyTorch's)."""
    task = _sampled("group_norm", 3)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    module = load_module(path)
    module.fused_kernel_triton.configs = [triton.Config({"TILE": 512}, num_warps=4)]  # 268 tiles of 67 x 2048
    inputs = task.make_inputs({"B": 2, "M": 134, "N": 2048}, 0)
    inputs[0] = 20 + 0.15 * torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(0))
    ref = task.reference(inputs)
    own, out = task.function(*inputs), module.fused_kernel_triton_wrapper(*inputs)
    own_error, error = (float((value.double() - ref).norm() / ref.norm()) for value in (own, out))
    assert error <= 2 * own_error, (error, own_error)


def test_a_norm_of_planes_mostly_clamped_to_one_value_keeps_pytorchs_accuracy(tmp_path):
    """An instance norm of a conv2d's planes after a max with a scalar past most of their values (the checker's
    mixed edge draw): a plane's spread is far below its mean, so the mean's own fp32 rounding, divided by it, would
    dominate the output (7x PyTorch's float32 error); the kernel takes it back (what the centered values still sum
    to: a corrected two-pass) and stays within twice PyTorch's error."""
    task = GEN.generate(1, ops="conv2d,maximum:scalar,instance_norm,abs", dtype="float32")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    module = load_module(path)
    module.fused_kernel_triton.configs = module.fused_kernel_triton.configs[:1]
    module.instance_norm_kernel.configs = [triton.Config({}, num_warps=4)]
    inputs = task.make_inputs(task.shapes["test"][1], 5, edge=1)
    ref = task.reference(inputs)
    own, out = task.function(*inputs), module.fused_kernel_triton_wrapper(*inputs)
    own_error, error = (float((value.double() - ref).norm() / ref.norm()) for value in (own, out))
    assert error <= 2 * own_error, (error, own_error)


@pytest.mark.parametrize("seed", [67, 156])
def test_generated_short_row_reductions_pass_the_checker(tmp_path, seed):
    """Generated [B, M, N] tasks whose bench rows are 1 KB (67: var) and 1.5 KB (156: sum, then a per-row op)."""
    task = GEN.generate(seed)
    assert len(task.inputs[0].shape) == 3
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    assert "ROWS = max(1, 2048 // BLOCK_N)" in path.read_text()
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


MATMUL_CHAINS = ["linear_bias,relu", "linear,add:col,gelu", "matmul,mul:row,tanh", "bmm,add:full",
                 "linear_bias,gelu,layer_norm", "matmul,softmax", "linear,relu,sum,sqrt", "bmm,rms_norm"]
TWO_REDUCTION_CHAINS = ["sum,sum", "relu,mean,max", "square,sum,sqrt,logsumexp", "exp,logsumexp,add:col,var",
                        "mul:col,var,l2norm,add:scalar", "abs,min,min"]


HARD_CASES = [(ops, ("float32", "float16", "bfloat16")[k % 3])
              for k, ops in enumerate(MATMUL_CHAINS + TWO_REDUCTION_CHAINS)]


@pytest.mark.parametrize("ops, dtype", HARD_CASES)
def test_hard_plans_pass_the_checker(tmp_path, ops, dtype):
    task = GEN.generate(2, dtype=dtype, ops=ops)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype", [("linear,batch_norm,hardswish", "bfloat16"),
                                        ("bmm,batch_norm,relu", "float32")])
def test_batch_norm_fuses_into_the_matmul_epilogue(tmp_path, ops, dtype):
    task = GEN.generate(4, dtype=dtype, ops=ops)
    source = generate(task)
    assert source.count("@triton.jit") == 1
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype", [("linear_bias,gelu,layer_norm", "bfloat16"), ("matmul,add:row,tanh", "float16"),
                                        ("linear,batch_norm,hardswish", "bfloat16"),
                                        ("linear_bias,mul:full,sigmoid", "float16"), ("bmm,add:full,tanh", "bfloat16")])
def test_16bit_matmul_variants_pass_the_checker(tmp_path, ops, dtype):
    """First the persistent variant (TMA descriptors, one program per SM, warp specialization), then tiled.
    Batched: 3-D descriptors, the test shapes' odd K through the padded copy."""
    task = GEN.generate(2, dtype=dtype, ops=ops)
    assert variants(task) == ["persistent", "tiled"]
    assert "warp_specialize=True" in generate(task)
    for variant in variants(task):
        source = generate(task, 1, variant)
        assert resolve(task, variant).variant == variant
        path = tmp_path / f"{variant}_fused_kernels.py"
        path.write_text(source)
        verdict = check_file(path, task=task, timeout=240)
        assert verdict.passed, (variant, verdict.failure and verdict.failure.message)


@pytest.mark.parametrize("ops, dtype, reduction", [
    ("linear_bias,sigmoid,min", "float16", "min"), ("matmul,sum", "float32", "sum"),
    ("linear,mean,sub:scalar", "bfloat16", "mean"), ("bmm,maximum:row,l2norm", "bfloat16", "l2norm"),
    ("bmm,logsumexp,square", "float32", "logsumexp"), ("linear,max", "float16", "max"),
    ("matmul,relu,var", "bfloat16", "var")])
def test_reduction_after_a_matmul_never_stores_the_product(tmp_path, ops, dtype, reduction):
    """Tiles write per-row partials ([rows, tiles of N], fp32); a combine kernel merges them."""
    task = GEN.generate(3, dtype=dtype, ops=ops)
    for variant in variants(task):
        source = generate(task, 1, variant)
        assert f"{reduction}_combine_kernel" in source and "torch.empty((M, N)" not in source
        path = tmp_path / f"{variant}_fused_kernels.py"
        path.write_text(source)
        verdict = check_file(path, task=task, timeout=240)
        assert verdict.passed, (variant, verdict.failure and verdict.failure.message)


@pytest.mark.parametrize("ops, dtype", [("square,sum,sum", "float32"), ("relu,mean,mean", "bfloat16"),
                                        ("max,max", "float16"), ("abs,min,min", "float32"),
                                        ("square,sum,sqrt,logsumexp", "float16"),
                                        ("mul:col,var,l2norm,add:scalar", "bfloat16"),
                                        ("exp,logsumexp,add:col,var", "float32")])
def test_two_reductions_merge_slices_of_rows(tmp_path, ops, dtype):
    """A program per tile of a batch's rows; a combine kernel merges the tiles' states. Forced here to tiles of 2
    rows and at most 2 slices a batch, so each program also walks several tiles (odd M leaves a partial one) and
    every merge path runs, within a program and across slices."""
    task = GEN.generate(5, dtype=dtype, ops=ops)
    source = generate(task)
    block = f"BLOCK_M = max(1, min(triton.next_power_of_2(n_rows), {TWO_REDUCTION_TILE} // BLOCK_N))"
    cap = f"triton.cdiv(triton.cdiv(n_rows, BLOCK_M), {TWO_REDUCTION_MAX_SPLITS})"
    assert block in source and cap in source and "_combine_kernel[(n_batch,)]" in source
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source.replace(block, "BLOCK_M = 2").replace(cap, "triton.cdiv(triton.cdiv(n_rows, BLOCK_M), 2)"))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops", ["square,sum,sqrt,logsumexp", "mul:col,var,l2norm,add:scalar"])
def test_two_reductions_read_one_tile_a_program(ops):
    """At the bench shape each program reads one 2048-value tile, loaded with evict_first by a one-stage loop (an
    asynchronous pipeline's copies would drop the hint), on 2 warps and no autotuner (its dispatch costs host time)."""
    task = GEN.generate(5, dtype="float16", ops=ops)
    source = generate(task)
    assert "eviction_policy='evict_first'" in source and "num_stages=1)" in source
    assert "num_warps=2)" in source and "autotune" not in source
    assert "fused_kernel_triton[(n_batch * n_splits,)]" in source
    dims = task.shapes["bench"][0]
    block_n = triton.next_power_of_2(dims["N"])
    block_m = max(1, min(triton.next_power_of_2(dims["M"]), TWO_REDUCTION_TILE // block_n))
    assert triton.cdiv(dims["M"], block_m) <= TWO_REDUCTION_MAX_SPLITS


@pytest.mark.parametrize("ops", ["linear,logsumexp", "matmul,relu,var"])
def test_partials_beyond_the_tiles_used_are_never_read(tmp_path, ops):
    """On a GPU the autotuner may pick a BLOCK_N larger than the smallest: the partial buffers then have
    unwritten (poisoned) columns past n_tiles. Reproduced here by sizing them for BLOCK_N = 8."""
    task = GEN.generate(3, dtype="float16", ops=ops)
    source = generate(task)
    smallest = 'min(config.kwargs["BLOCK_N"] for config in fused_kernel_triton.configs)'
    assert smallest in source
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source.replace(smallest, "8"))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def _past(source: str, category: str, variant: str | None = None) -> PastAttempt:
    return PastAttempt(1, source, f"FAILURE ANALYSIS ({category})", {"category": category}, variant)


def test_retries_move_to_the_next_variant_unless_the_failure_was_transient():
    task = GEN.generate(2, dtype="float16", ops="linear,relu")
    persistent, tiled = generate(task), generate(task, 2, "tiled")
    assert "warp_specialize=True" in persistent and "warp_specialize" not in tiled
    assert next_variant(task, []) == "persistent"
    assert next_variant(task, [_past(persistent, "slower", "persistent")]) == "tiled"
    assert next_variant(task, [_past(persistent, "slower", "persistent"), _past(tiled, "compile", "tiled")]) == \
        "persistent"
    assert next_variant(task, [_past(tiled, "timeout", "tiled")]) == "tiled"
    assert next_variant(task, [_past(persistent, "slower")]) == "tiled"  # a log without the variant: the default
    single = GEN.generate(2, dtype="float16", ops="relu,sum")
    assert variants(single) == ["registers"]
    assert next_variant(single, [_past(generate(single), "slower", "registers")]) == "registers"
    with pytest.raises(UnsupportedTask):
        generate(single, 1, "persistent")
    retry = BuiltinImplementer().implement(task, 2, [_past(persistent, "slower", "persistent")])
    assert retry.variant == "tiled" and retry.source == generate(task, 2, "tiled") and "ATTEMPT = 2" in retry.source


def test_builtin_says_when_it_has_nothing_new():
    """The same kernel after a non-transient failure would only re-roll the verdict: the loop stops."""
    builtin = BuiltinImplementer()
    single = GEN.generate(2, dtype="float16", ops="relu,sum")
    tiled = generate(single)
    assert builtin.implement(single, 2, [_past(tiled, "slower")]).exhausted
    assert builtin.implement(single, 2, [_past(tiled, "timeout")]).source is not None
    task = GEN.generate(2, dtype="float32", ops="linear,relu")
    both = [_past(generate(task), "slower", "tf32x3"), _past(generate(task, 2, "tiled"), "slower", "tiled")]
    assert builtin.implement(task, 2, both[:1]).source is not None
    assert builtin.implement(task, 3, both).exhausted


def test_fp32_matmul_variants_keep_fp32_accuracy():
    """Three-pass TF32 first (tensor cores), IEEE FMA dots as the retry; never plain TF32."""
    task = GEN.generate(2, dtype="float32", ops="linear,relu")
    assert variants(task) == ["tf32x3", "tiled"]
    first, retry = generate(task), generate(task, 2, "tiled")
    assert 'input_precision="tf32x3"' in first and "ieee" not in first
    assert 'input_precision="ieee"' in retry and "tf32x3" not in retry


def test_row_plan_times_warps_only_where_no_count_wins_everywhere(tmp_path):
    """The row kernel's autotuner sees 1, 2 and 4 warps up to 1024 lanes, 4 and 8 at 2048 and 4096, 4, 8 and 16
    at 8192, one count above (the interpreter runs each of them once while tuning)."""
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(GEN.generate(3, ops="square,mean,sqrt")))
    module = load_module(path)
    configs = module.row_configs()
    assert [c.num_warps for c in configs] == [1, 2, 4, 8, 16]
    chosen = {block: [c.num_warps for c in module.row_warps(configs, {}, BLOCK_N=block)]
              for block in (128, 1024, 2048, 4096, 8192, 16384)}
    assert chosen == {128: [1, 2, 4], 1024: [1, 2, 4], 2048: [4, 8], 4096: [4, 8], 8192: [4, 8, 16], 16384: [16]}


@pytest.mark.parametrize("ops", ["softmax", "sum"])
def test_looped_rows_take_the_widest_slice_that_divides_them(tmp_path, ops):
    """A looped row kernel takes 16384 or 8192 values a slice on 16 warps where the width divides the row, else
    4096 on 8."""
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(_with_long_rows(GEN.generate(7, dtype="float16", ops=ops))))
    module = load_module(path)
    chosen = {n: module.row_slices(n) for n in (20011, 24576, 32768, 49152, 65536)}
    assert chosen == {20011: (4096, 8), 24576: (8192, 16), 32768: (16384, 16), 49152: (16384, 16),
                      65536: (16384, 16)}


@pytest.mark.parametrize("n_cols, group_chans, tile, expected", [
    (1024, 64, 16384, (16, 1024)), (768, 48, 16384, (64, 256)), (2048, 16, 4096, (2, 2048)),
    (64, 6, 256, (4, 64)), (97, 3, 256, (2, 128)), (500, 4, 256, (1, 256)), (20000, 8, 16384, (1, 16384))])
def test_group_norm_tiles_fit_channels_and_positions(tmp_path, n_cols, group_chans, tile, expected):
    """A 3D group norm's looped kernel: [C_BLOCK, BLOCK_N] tiles of TILE values at most, BLOCK_N the widest power
    of two dividing N when it is 128 wide or all of N (no padding), else N padded; C_BLOCK no more than the group's
    channels padded; per-channel operands a vector per tile, no division per value; TILE autotuned."""
    task = _with_long_rows(_sampled("group_norm", 3))
    groups = next(s.params["groups"] for s in task.steps if s.op == "group_norm")
    source = generate(task)
    assert "cols //" not in source and "[:, None]" in source
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    module = load_module(path)
    args = {"n_cols": n_cols, "n_chan": group_chans * groups, "TILE": tile}
    args["BLOCK_N"] = module.tile_width(args)
    assert (module.tile_channels(args), args["BLOCK_N"]) == expected
    assert [(c.kwargs["TILE"], c.num_warps) for c in module.group_configs()] == [(16384, 16), (8192, 8), (4096, 4)]


@pytest.mark.parametrize("ops, dtype", [("batch_norm", "float16"), ("dequantize_fp8_tensor,batch_norm,relu", "float32"),
                                        ("embedding,batch_norm,silu", "bfloat16")])
def test_batch_norm_of_a_2d_value_loads_its_vectors_once_a_tile(tmp_path, ops, dtype):
    """Inference batch norm of an [M, N] value reduces nothing and its channels are the columns: the pointwise plan's
    tiles load its four per-column vectors once a tile (the row plan loaded them again for every row: 0.145 against
    0.093 ms after an fp8 dequantization, H100); a [B, M, N] value's stays in the row plan, a scalar each a row."""
    task = GEN.generate(3, ops=ops, dtype=dtype)
    assert (resolve(task).kind, resolve(task).variant) == ("pointwise", "tiles")
    source = generate(task)
    assert re.search(r"running_mean = tl.load\(running_mean\d_ptr \+ cols, mask=col_mask, other=0.0\)", source)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(source)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message
    assert resolve(_sampled("batch_norm", 3)).kind == "row"


def test_row_plan_on_3d_channel_norms(tmp_path):
    batch_norm = _sampled("batch_norm", 3)
    group_norm = _sampled("group_norm", 3)
    assert "C_BLOCK" in generate(group_norm)  # its bench rows exceed the register budget: the looped variant
    small = replace(group_norm, shapes={"test": group_norm.shapes["test"][:3],  # without the long-row shape
                                        "bench": group_norm.shapes["test"][:1]})
    assert "C_BLOCK" not in generate(small)  # rows that fit in registers: one block per row
    for task in (batch_norm, group_norm, small):
        path = tmp_path / "001_fused_kernels.py"
        path.write_text(generate(task))
        verdict = check_file(path, task=task, timeout=240)
        assert verdict.passed, verdict.failure and verdict.failure.message


def test_generated_file_runs_on_its_own(tmp_path):
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(EASY[1]))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "=== ATTEMPT 1:" in out.stdout and "FINAL TEST REPORT - ATTEMPT 1" in out.stdout
    assert "SUCCESS: Both implementations completed successfully!" in out.stdout


def test_chains_without_a_plan_say_so(tmp_path, capsys):
    task = GEN.generate(0, ops="relu,softmax,max,sum")
    with pytest.raises(UnsupportedTask, match="no plan yet for chains with several normalizations"):
        generate(task)
    path = tmp_path / "task.json"
    path.write_text(task.to_json())
    assert main(["implement", str(path), "-o", str(tmp_path / "001_fused_kernels.py")]) == 1
    assert "no plan yet" in capsys.readouterr().err


def test_implement_writes_the_next_free_number(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "task.json").write_text(EASY[2].to_json())
    (tmp_path / "007_fused_kernels.py").write_text("")
    assert next_free_path(tmp_path).name == "008_fused_kernels.py"
    assert main(["implement", "task.json"]) == 0
    assert (tmp_path / "008_fused_kernels.py").read_text() == generate(EASY[2])
    assert main(["implement", "missing.json"]) == 2


def _anchor_tasks():
    return load_module(Path(__file__).parents[1] / "benchmarks" / "anchor_tasks.py").anchor_tasks()


ANCHOR_TASKS = _anchor_tasks()


@pytest.mark.parametrize("name, task, differs", ANCHOR_TASKS, ids=[name for name, _, _ in ANCHOR_TASKS])
def test_anchor_chains_through_the_generator_pass_the_check(tmp_path, name, task, differs):
    """The eight anchor chains as tasks (benchmarks/anchor_tasks.py): the generated files pass at the test shapes."""
    from fusionforge.verify import check_file

    assert task.dtype == "float16" and task.shapes["bench"][0]["M"] >= 4096
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_the_generator_and_the_implementers_never_import_the_pipeline_or_the_dataset():
    """Imports run one way: the attempt loop and data/ use the generator and the implementers, never the reverse."""
    import fusionforge

    root = Path(fusionforge.__file__).parent
    found = []
    for path in [*(root / "codegen").glob("*.py"), *(root / "implement").glob("*.py")]:
        if path.name == "agent.py":  # the hand-out state of `fusionforge attempt`: not an implementer
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name} imports {m}" for m in modules
                      if m in ("fusionforge.pipeline", "fusionforge.dataset")]
    assert not found


def test_step_numbers_in_every_kernel_match_the_chain():
    """Every ``# k. <label>`` comment of every kernel (a matmul's row kernel and combine kernel included) names
    step k of the task's chain, for every variant of seeds 0..199."""
    import re

    from fusionforge.tasks import step_label

    wrong = []
    for seed in range(200):
        task = GEN.generate(seed)
        for variant in variants(task):
            for k, label in re.findall(r"^\s*# (\d+)\. (.+?)(?: \(over [MN]\))?: ", generate(task, 1, variant), re.M):
                if step_label(task.steps[int(k) - 1]) != label:
                    wrong.append(f"seed {seed} {variant}: # {k}. {label}")
    assert not wrong


def test_a_pointwise_op_is_one_catalog_entry(tmp_path, monkeypatch):
    """An op added to the catalog alone (its PyTorch and Triton forms) is generated, in every plan, and computes
    what PyTorch does (run here in-process, with the GPU semantics the checker's child gives the interpreter: the
    child itself would not know the new op)."""
    import torch

    from fusionforge.verify.interpreter import install_gpu_semantics

    if DEVICE == "cpu":
        install_gpu_semantics()
    op = catalog._unary("cube", "torch.pow({x}, 3)", "{x} * {x} * {x}", "x^3", 2)
    monkeypatch.setitem(catalog.CATALOG, "cube", op)
    for k, ops in enumerate(["cube,add:col", "cube,softmax", "linear,cube", "cube,sum,max"]):
        task = GEN.generate(1, dtype="float32", ops=ops)
        source = generate(task)
        assert "cube: x^3" in source and "h = h * h * h" in source
        path = tmp_path / f"{k:03d}_fused_kernels.py"
        path.write_text(source)
        inputs = task.make_inputs(task.shapes["test"][0], seed=k)
        out = load_module(path).fused_kernel_triton_wrapper(*inputs)
        torch.testing.assert_close(out.double(), task.reference(inputs), rtol=1e-4, atol=1e-4)


def test_the_kernels_tiled_for_a_gpu_walk_their_loops_at_a_test_shape(tmp_path):
    """Files carry only the GPU's configs, and the interpreter runs them all: at one test shape at least, a 3D
    group norm's looped kernel walks several tiles a group at every TILE; a persistent matmul's k-loop takes
    several steps at every config, and its two programs (a CPU's) walk several output tiles each at one config
    at least (the loop's code is the same at every config)."""
    for seed in (84, 281):  # a 3D group norm alone, and after a batched matmul
        task = GEN.generate(seed)
        groups = next(s.params["groups"] for s in task.steps if s.op == "group_norm")
        path = tmp_path / f"{seed}_fused_kernels.py"
        path.write_text(generate(task))
        module = load_module(path)
        for config in module.group_configs():
            walks = []
            for dims in task.shapes["test"]:
                args = {"n_cols": dims["N"], "n_chan": dims["M"], "TILE": config.kwargs["TILE"]}
                args["BLOCK_N"] = module.tile_width(args)
                walks.append(triton.cdiv(dims["M"] // groups, module.tile_channels(args)) *
                             triton.cdiv(dims["N"], args["BLOCK_N"]))
            assert max(walks) >= 2, (seed, config)
    for seed in range(200):
        task = GEN.generate(seed)
        if variants(task)[0] != "persistent":
            continue
        path = tmp_path / f"{seed}_fused_kernels.py"
        path.write_text(generate(task))
        walks = []
        for config in load_module(path).matmul_configs():
            m, n, k = (config.kwargs[f"BLOCK_{d}"] for d in "MNK")
            assert any(dims["K"] > k for dims in task.shapes["test"]), (seed, config)
            walks += [dims.get("B", 1) * triton.cdiv(dims["M"], m) * triton.cdiv(dims["N"], n)
                      for dims in task.shapes["test"]]
        assert max(walks) > 2, seed


FAMILY_CHAINS = [("cumsum", "float16"), ("silu,cumprod", "float32"), ("add:row,logcumsumexp,tanh", "bfloat16"),
                 ("tanh,cross_entropy", "bfloat16"), ("mul:col,kl_div", "float16"), ("abs,mse_loss", "float32")]


@pytest.mark.parametrize("ops, dtype", FAMILY_CHAINS)
def test_scan_and_loss_plans_pass_the_checker(tmp_path, ops, dtype):
    """Scans in registers and losses walked in tiles (cross-entropy's vocabulary adds a 20011-class test row, walked in
    several slices) pass the checker; both reductions of cross-entropy are covered over the seeds."""
    task = GEN.generate(len(ops), dtype=dtype, ops=ops)
    plan = resolve(task)
    assert plan.kind == ("loss" if task.family == "loss" else "row")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_cross_entropy_tasks_get_a_long_test_row_and_both_reductions():
    tasks = [GEN.generate(seed, ops="cross_entropy") for seed in range(12)]
    assert {t.steps[0].params["reduction"] for t in tasks} == {"none", "mean"}
    assert all(max(d["N"] for d in t.shapes["test"]) > 20000 for t in tasks)
    assert {tuple(t.output_shape) for t in tasks} == {("M",), ()}


def test_loss_tiles_hold_several_short_rows_or_walk_a_long_one(tmp_path):
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(GEN.generate(1, dtype="float16", ops="mse_loss")))
    module = load_module(path)
    assert {n: module.loss_tiles(n) for n in (97, 512, 4096, 20011, 128256)} == {
        97: (32, 128, 8), 512: (8, 512, 8), 4096: (1, 4096, 8), 20011: (1, 4096, 8), 128256: (1, 4096, 8)}


def test_scans_over_rows_too_long_for_registers_are_refused():
    task = GEN.generate(3, ops="cumsum")
    task.shapes["test"].append({"M": 2, "N": 40000})
    with pytest.raises(UnsupportedTask, match="scans rows held in registers"):
        resolve(task)


@pytest.mark.parametrize("seed, form", [(1, "registers"), (13, "short_rows"), (3, "slices")])
def test_arg_reduction_plans_pass_the_checker(tmp_path, seed, form):
    """argmax and argmin over rows held in registers, several short rows a tile ([B, M, N] tasks; their 16383-value
    test row fills a tile alone) and rows walked in slices (a vocabulary, with its 20011-value test row): the first
    index of the extremum, tl.max / tl.min with return_indices, an int64 store."""
    task = GEN.generate(seed, family="arg_reduction")
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("row", form)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    assert "dtype=torch.int64" in path.read_text()
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("seed, form", [(2, "registers"), (0, "short_rows")])
def test_spatial_reduction_plans_pass_the_checker(tmp_path, seed, form):
    """Mean and max over H x W of [B, C, H, W]: the row plan over planes of H x W contiguous values, a plane a
    program or several short ones a tile; the ops after it see [B, C] (a per-channel vector: plane % C)."""
    task = GEN.generate(seed, family="spatial_reduction")
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("row", form)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    assert "row_len = x.shape[-2] * x.shape[-1]" in path.read_text()
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype, params", [
    ("sigmoid,max_pool2d,sub:full", "float16", dict(kernel_size=3, stride=2, padding=1)),
    ("neg,max_pool2d", "float32", dict(kernel_size=2, stride=1, padding=1)),
    ("exp,avg_pool2d,mul:scalar", "bfloat16", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("mul:full,avg_pool2d,tanh", "float32", dict(kernel_size=2, stride=2, padding=1, count_include_pad=True)),
    ("square,avg_pool2d", "float16", dict(kernel_size=3, stride=2, padding=0))])
def test_pool_plans_pass_the_checker(tmp_path, ops, dtype, params):
    """Max and average pooling, strided and overlapping windows, padded or not: [rows, Q] tiles of the output, each
    window offset one masked load of x with the ops before the pool applied to it; padding -inf for a max, 0 for a
    sum (after the ops: exp of the padding is no 1), a sum over K^2 or over the positions inside the plane."""
    task = next(t for t in (GEN.generate(seed, ops=ops, dtype=dtype) for seed in range(400))
                if all(t.steps[1].params[name] == value for name, value in params.items()))
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("pool", "windows")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    text = path.read_text()
    assert "for i in tl.static_range(KERNEL_SIZE):" in text and "F.max_pool2d" not in text.split("# <TRITON>")[1]
    assert ("rows_inside" in text) == (params.get("count_include_pad") is False)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype, causal", [
    ("attention", "float16", True), ("attention,sub:full", "float32", False), ("attention,silu,mul:scalar",
                                                                               "bfloat16", False),
    ("rotary_attention", "float32", True)])
def test_attention_plan_passes_the_checker(tmp_path, ops, dtype, causal):
    """Flash attention: BLOCK_M queries a program, the keys walked BLOCK_N at a time with an online softmax (the
    test shapes' sequences of 97 and 130 span several blocks), causal or not, the ops after it in registers; float32
    takes three TF32 passes a product, IEEE products on the retry. Rotary embeddings: a first kernel rotates the
    keys once, q is rotated as it loads."""
    task = next(t for t in (GEN.generate(seed, ops=ops, dtype=dtype) for seed in range(40))
                if t.steps[0].params["causal"] is causal)
    expected = ["tf32x3", "ieee"] if dtype == "float32" else ["flash"]
    assert variants(task) == expected
    for variant in expected:
        plan = resolve(task, variant)
        assert (plan.kind, plan.variant) == ("attention", variant)
        path = tmp_path / f"{variant}" / "001_fused_kernels.py"
        path.parent.mkdir()
        path.write_text(generate(task, variant=variant))
        kernels = path.read_text().split("# <TRITON>")[1]
        assert f"CAUSAL={causal}" in kernels and "scaled_dot_product" not in kernels
        assert kernels.count(f'input_precision="{variant}"') == (2 if dtype == "float32" else 0)
        assert ("def rotary_kernel(" in kernels) == ops.startswith("rotary")
        verdict = check_file(path, task=task, timeout=240)
        assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype", [("causal_conv1d", "float16"), ("causal_conv1d,silu,mul:row", "bfloat16"),
                                        ("causal_conv1d,gelu,add:col", "float32")])
def test_conv_plan_passes_the_checker(tmp_path, ops, dtype):
    """A causal conv1d: [rows, N] output tiles, each tap one shifted masked tile of x (the 1031-long test sequence spans
    several tiles), the bias and the ops after it in registers."""
    task = GEN.generate(2, ops=ops, dtype=dtype)
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("conv", "taps")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels, wrapper = path.read_text().split("# <TRITON>")[1].split("def fused_kernel_triton_wrapper")
    assert "for t in tl.static_range(TAPS):" in kernels and "conv1d" not in wrapper
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("seed, ops, dtype, variant, taps", [(6, "conv2d,silu", "bfloat16", "gemm", False),
                                                            (21, "conv2d,batch_norm,tanh,mul:full", "float32", "tf32x3",
                                                             True)])
def test_conv2d_plan_passes_the_checker(tmp_path, seed, ops, dtype, variant, taps):
    """A conv2d as an implicit GEMM a group: output tiles of positions by channels, x's windows gathered (zeros in the
    padding), tl.dot; tap by tap where the bench shape's groups have 64 input channels or more (the weight as
    [R, R, J, C]), else a window's values flattened; an inference batch norm after it per output channel. The
    132-channel, 32-input test shape spans several tiles of each."""
    task = GEN.generate(seed, ops=ops, dtype=dtype)
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("conv2d", variant) and tap_loop(task) is taps
    assert variants(task) == (["tf32x3", "ieee"] if dtype == "float32" else ["gemm"])
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels, wrapper = path.read_text().split("# <TRITON>")[1].split("def fused_kernel_triton_wrapper")
    assert "acc = tl.dot(a, w, acc" in kernels and "conv2d(" not in wrapper
    assert ("for step in range(0, steps):" in kernels) is taps  # taps and channel blocks, one loop
    assert ("a = a_next" in kernels) is taps  # the next step's x tile gathered ahead of the product
    assert ("weight = weight.permute(2, 3, 1, 0).contiguous()" in wrapper) is taps  # a tap's tile: rows of channels
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype, kernel, form", [
    ("conv2d,batch_norm,group_norm,mul:full", "float32", "group_norm_kernel", "group_tiles"),
    ("conv2d,gelu,instance_norm,relu", "bfloat16", "instance_norm_kernel", "registers")])
def test_a_norm_after_a_conv2d_is_a_second_kernel_over_its_planes(tmp_path, ops, dtype, kernel, form):
    """A group or instance norm after a conv2d: the conv2d kernel writes its epilogue's value [B, C, P, Q] and the
    norm's kernel reads it as [B, C, P Q], a 3D norm's rows (a group's planes walked in tiles where they are long: the
    group norm's test shape has rows of 20011 values or more), the ops after it fused there."""
    task = GEN.generate(5, ops=ops, dtype=dtype)
    plan = resolve(task)
    assert plan.kind == "conv2d" and (plan.rows.step.op.name, plan.rows.form, plan.rows.rank) == (
        ops.split(",")[2], form, 3)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    wrapper = path.read_text().split("def fused_kernel_triton_wrapper")[1]
    assert f"{kernel}[(" in wrapper and "h = h.view(batch, n_chan, out_h * out_w)" in wrapper
    assert "norm(" not in wrapper.split("# </TRITON>")[0]  # no PyTorch norm in the wrapper
    verdict = check_file(path, task=task, timeout=300)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_a_global_pooling_after_a_conv2d_reduces_its_planes_in_a_second_kernel(tmp_path):
    """A mean over a conv2d's P x Q planes (global average pooling): the conv2d kernel writes [B, C, P, Q], the
    spatial reduction's kernel reads each plane as a row, several short planes a program."""
    task = GEN.generate(3, ops="conv2d,relu,spatial_mean", dtype="bfloat16")
    plan = resolve(task)
    assert plan.kind == "conv2d" and (plan.rows.step.op.name, plan.rows.form, plan.rows.rank) == (
        "spatial_mean", "short_rows", 4)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    wrapper = path.read_text().split("def fused_kernel_triton_wrapper")[1].split("# </TRITON>")[0]
    assert "spatial_mean_kernel[(" in wrapper and "mean(" not in wrapper
    verdict = check_file(path, task=task, timeout=300)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("seed, ops, dtype, stride", [(3, "conv_transpose2d,batch_norm,tanh", "bfloat16", 2),
                                                     (1, "conv_transpose2d,silu", "float32", 1)])
def test_conv_transpose2d_plan_passes_the_checker(tmp_path, seed, ops, dtype, stride):
    """A conv_transpose2d as an implicit GEMM a phase (p mod S, q mod S) of the output: each program's positions
    share a phase, so a tap serves all of them or none (no masked-off products); the weight read as [R, R, K, C];
    the 132-channel test shape spans two tiles of output channels."""
    task = GEN.generate(seed, ops=ops, dtype=dtype)
    assert task.steps[0].params["stride"] == stride
    assert resolve(task).kind == "conv_transpose2d"
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels, wrapper = path.read_text().split("# <TRITON>")[1].split("def fused_kernel_triton_wrapper")
    assert "if (shift_h % STRIDE == 0) & (shift_w % STRIDE == 0):" in kernels and "conv_transpose2d(" not in wrapper
    assert "weight = weight.permute(2, 3, 0, 1).contiguous()" in wrapper and "STRIDE * STRIDE)" in wrapper
    verdict = check_file(path, task=task, timeout=300)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype", [("depthwise_conv2d,batch_norm,relu", "bfloat16"),
                                        ("depthwise_conv2d,gelu,add:full", "float32")])
def test_depthwise_plan_passes_the_checker(tmp_path, ops, dtype):
    """A depthwise conv2d: flat blocks of 1024 outputs (a block spans rows and planes of the small test shapes;
    the 263-wide plane, blocks ending mid-row), each tap of the window one block of x times each output's channel's
    weight, a batch norm per output's channel."""
    task = GEN.generate(5, ops=ops, dtype=dtype)
    assert (resolve(task).kind, resolve(task).variant) == ("depthwise", "taps")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels, wrapper = path.read_text().split("# <TRITON>")[1].split("def fused_kernel_triton_wrapper")
    assert "acc += x * tap" in kernels and "N_CHAN=n_chan" in wrapper and "conv2d(" not in wrapper
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def _gather_task(ops: str, bench_n: int | None = None, long_row: int | None = None):
    """A forced gather chain (float32), its bench rows ``bench_n`` long and a test shape of ``long_row``-value
    rows where given: a gather's menu never leaves registers, a task a user writes may."""
    task = GEN.generate(1, ops=ops, dtype="float32")
    if bench_n:
        task.shapes["bench"][0]["N"] = bench_n
    if long_row:
        task.shapes["test"].append({"M": 3, "N": long_row, **({"V": 11} if ops.startswith("embedding") else {"K": 97})})
    return task


@pytest.mark.parametrize("ops, bench_n, long_row, form", [
    ("embedding,cos,group_norm", None, None, "registers"),
    ("embedding,relu,sum", 256, None, "short_rows"),
    ("embedding,mul:col,layer_norm,silu", None, 20011, "slices"),
    ("index_select,cos,group_norm", None, None, "registers"),
    ("gather,relu,sum", 256, None, "short_rows"),
    ("index_select,exp,max", 256, None, "short_rows"),
    ("gather,mul:col,rms_norm", None, 20011, "slices")])
def test_gather_plans_read_where_their_indices_point(tmp_path, ops, bench_n, long_row, form):
    """A gather before the row plan: a lookup's program loads its rows' ids (a 2D group norm's row is one group of
    an id's row) and reads those rows of the table; a gather's loads its indices (index_select's, the same for
    every row) and reads x there. Rows held in registers, several short rows a tile or walked in slices (both
    passes of a normalization)."""
    task = _gather_task(ops, bench_n, long_row)
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("row", form)
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels = path.read_text().split("# <TRITON>")[1]
    pointers = "ids_ptr, weight_ptr" if ops.startswith("embedding") else "x_ptr, index_ptr"
    assert f"def fused_kernel_triton({pointers}" in kernels
    assert not any(f"{name}(" in kernels for name in ("F.embedding", "torch.gather", "torch.index_select"))
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, picks", [
    ("embedding,mul:scalar,add:col", "tokens = tl.load(ids_ptr + rows, mask=row_mask, other=0)"),
    ("gather,mul:scalar,add:col", "picked = tl.load(index_ptr + offsets, mask=mask, other=0)"),
    ("index_select,silu", "picked = tl.load(index_ptr + cols, mask=col_mask, other=0)[None, :]")])
def test_a_gather_before_pointwise_ops_reads_in_tiles(tmp_path, ops, picks):
    """A scaled embedding (or pick) and a per-column shift: [BLOCK_M, BLOCK_N] tiles of the output, each loading
    its rows' ids (or its indices) and reading where they point; the shift's vector loads once per tile."""
    task = GEN.generate(1, ops=ops, dtype="bfloat16")
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("pointwise", "tiles")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    assert picks in path.read_text()
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype, bench_n, long_row, plan_form", [
    ("dequantize_fp8_tensor,gelu", "float16", None, None, ("pointwise", "flat")),
    ("dequantize_fp8_rows,relu,mul:col", "float32", None, None, ("pointwise", "tiles")),
    ("dequantize_fp8_rows,cos,group_norm", "bfloat16", None, None, ("row", "registers")),
    ("dequantize_fp8_rows,relu,sum", "float32", 256, None, ("row", "short_rows")),
    ("dequantize_fp8_tensor,add:col,layer_norm,silu", "bfloat16", None, 20011, ("row", "slices"))])
def test_fp8_plans_scale_the_values_they_load(tmp_path, ops, dtype, bench_n, long_row, plan_form):
    """fp8 dequantization before the pointwise and row plans: e4m3 values loaded as they are, times their scale in
    fp32 (a row's loaded as a per-row vector, a 2D group norm's row one group of it; the tensor's once a program),
    the output in the scale's dtype. Flat blocks, tiles, rows in registers, several short rows a tile, rows walked
    in slices (both passes of a normalization)."""
    task = GEN.generate(1, ops=ops, dtype=dtype)
    if bench_n:
        task.shapes["bench"][0]["N"] = bench_n
    if long_row:
        task.shapes["test"].append({"M": 3, "N": long_row})
    plan = resolve(task)
    assert (plan.kind, plan.variant) == plan_form
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    kernels = path.read_text().split("# <TRITON>")[1]
    assert ".to(tl.float32) * scale" in kernels and "dtype=scale.dtype" in kernels
    assert "x.to(" not in kernels.split("def fused_kernel_triton_wrapper")[1]
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


@pytest.mark.parametrize("ops, dtype, bench_n, long_row, kernels", [
    ("silu,quantize_fp8_rows", "bfloat16", None, None, 1),
    ("gelu,mul:col,quantize_fp8_tensor", "float16", None, None, 2),
    ("sigmoid,sub:row,quantize_fp8_tensor", "bfloat16", 512, None, 2),
    ("tanh,quantize_fp8_rows", "float32", None, 20011, 1),
    ("exp,add:full,quantize_fp8_tensor", "float32", None, 20011, 2)])
def test_fp8_quantization_stores_values_and_scales(tmp_path, ops, dtype, bench_n, long_row, kernels):
    """fp8 quantization in the row plan: a row's amax (registers, or a first pass over slices), its scale stored
    once, the values stored as e4m3 by the cast; a tensor's amax folded in by a first kernel's atomic maxes (a
    program a row; programs striding over tiles of rows where the bench shape's are short), then read by every
    program of the second. The wrapper returns (values, scales)."""
    task = GEN.generate(1, ops=ops, dtype=dtype)
    if bench_n:
        task.shapes["bench"][0]["N"] = bench_n
    if long_row:
        task.shapes["test"].append({"M": 3, "N": long_row})
    plan = resolve(task)
    assert (plan.kind, plan.variant) == ("row", "slices" if long_row else "registers")
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(generate(task))
    text = path.read_text()
    assert text.count("@triton.jit\ndef fused_kernel_triton") == kernels and text.count("def row_configs") <= 1
    assert "return out, scales" in text and ("tl.atomic_max(amax_ptr" in text) == (kernels == 2)
    assert ("for first in range(tl.program_id(0) * ROWS, n_rows" in text) == (bench_n is not None)
    verdict = check_file(path, task=task, timeout=240)
    assert verdict.passed, verdict.failure and verdict.failure.message


def test_lookups_before_a_loss_have_no_plan_yet():
    with pytest.raises(UnsupportedTask, match="a gather followed by a loss or several row ops"):
        resolve(GEN.generate(1, ops="embedding,mse_loss"))
