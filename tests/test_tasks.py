"""FusionTask and TaskGenerator: determinism, validity, shape families, cost model, degeneracy screen."""

import math
import random
import subprocess
import sys

import pytest
import torch

from fusionforge import ops as catalog
from fusionforge.ops import Family
from fusionforge.tasks import (
    ARG_TEST_ROW,
    ARG_TEST_ROWS,
    BENCH_MIN_BYTES,
    BENCH_MIN_FLOPS,
    CHANNEL_DIM,
    CHUNKED_TEST_ROW,
    DTYPES,
    LONG_ROW,
    LONG_TEST_ROW,
    WIDE_ROW_MAX,
    ChainKind,
    FusionTask,
    TaskError,
    TaskGenerator,
    chain_groups,
    classify,
    longest_row,
    probe_dims,
    row_length,
    screen,
    unseen_dims,
    wide_dims,
)

GEN = TaskGenerator()


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % p for p in range(2, int(n**0.5) + 1))


def test_same_seed_same_json():
    a = [GEN.generate(s).to_json() for s in range(20)]
    b = [TaskGenerator().generate(s).to_json() for s in range(20)]
    assert a == b


def test_same_seed_same_json_in_a_fresh_interpreter():
    code = "from fusionforge.tasks import TaskGenerator; print(TaskGenerator().generate(1234).to_json())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == GEN.generate(1234).to_json()


def test_json_round_trip():
    task = GEN.generate(7)
    again = FusionTask.from_json(task.to_json())
    assert again.to_json() == task.to_json()


def test_malformed_task_is_a_clear_error():
    with pytest.raises(TaskError, match="malformed task"):
        FusionTask.from_dict({"id": "x"})
    bad = GEN.generate(7).to_dict()
    bad["dtype"] = "float8"
    with pytest.raises(TaskError, match="dtype"):
        FusionTask.from_dict(bad)


@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_generated_task_is_valid(seed):
    task = GEN.generate(seed)
    assert task.dtype in DTYPES and task.id.startswith("ff-")
    assert screen(task) is None
    test = task.shapes["test"]
    assert len(test) >= 3
    sizes = [v for d in test for v in d.values()]
    assert any(_is_prime(v) for v in sizes) and any(v & (v - 1) for v in sizes)
    for k, dims in enumerate(test):
        inputs = task.make_inputs(dims, seed=seed)
        out = task.function(*inputs)
        assert tuple(out.shape) == task.output_dims(dims)
        assert out.dtype == getattr(torch, task.dtype)
        assert torch.isfinite(out).all()
        largest = max(t.numel() for t in inputs + [out] if isinstance(t, torch.Tensor))
        assert largest < (20 * LONG_TEST_ROW if k == 3 else 200_000)  # CPU-sized; a fourth shape has long rows
    bench = task.to_dict()["cost"]["bench"][0]
    assert bench["bytes"] >= BENCH_MIN_BYTES or bench["flops"] >= BENCH_MIN_FLOPS


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_difficulty_shapes_the_chain(difficulty):
    for seed in range(15):
        task = GEN.generate(seed, difficulty=difficulty)
        families = [catalog.get(s.op).family for s in task.steps]
        pointwise = sum(f in (Family.UNARY, Family.BINARY) for f in families)
        rows = sum(f in (Family.REDUCTION, Family.NORM) for f in families)
        if difficulty == "easy":
            assert 2 <= pointwise == len(families) <= 3
        elif difficulty == "medium":
            assert rows == 1 and pointwise >= 1 and families[0] is not Family.MATMUL
        else:
            assert families[0] is Family.MATMUL or families.count(Family.REDUCTION) >= 2


@pytest.mark.parametrize("ops, difficulty, family", [
    ("batch_norm", "easy", "pointwise"),
    ("relu,batch_norm,add:scalar", "easy", "pointwise"),
    ("batch_norm,softmax", "medium", "reduction"),
    ("relu,layer_norm", "medium", "reduction"),
    ("matmul,batch_norm", "hard", "matmul"),
    ("sum,sum", "hard", "reduction"),
])
def test_forced_chains_are_labelled_by_what_they_compute(ops, difficulty, family):
    """An inference batch norm is a per-channel affine map: alone or with pointwise ops, an easy chain."""
    task = GEN.generate(3, ops=ops)
    assert task.difficulty == difficulty
    assert classify([s.op for s in task.steps]).family == family


@pytest.mark.parametrize("op", ["log", "sqrt", "rsqrt", "reciprocal"])
def test_labels_name_the_running_value_h(op):
    """After a matmul x @ w, a label such as rsqrt(|x| + 0.5) would read as the input x."""
    task = GEN.generate(0, ops=f"bmm,{op}")
    label = task.description.split(" -> ")[1]
    assert "|h|" in label and "x" not in label, label


def test_forced_chain_and_params_sampled():
    task = GEN.generate(5, dtype="bfloat16", ops="linear_bias,add:row,gelu,layer_norm")
    assert [s.op for s in task.steps] == ["linear_bias", "add", "gelu", "layer_norm"]
    assert task.steps[1].params == {"operand": "row"}
    assert [i.name for i in task.inputs] == ["x", "w", "bias", "rowvec1", "gamma3", "beta3"]
    assert task.difficulty == "hard"
    assert "h = F.linear(x, w, bias)" in task.pytorch_source()


@pytest.mark.parametrize("ops, message", [
    ("gleu", "unknown op 'gleu'; valid ops:"),
    ("relu,linear", "matmul root and must come first"),
    ("relu:col", "only binary ops take"),
    ("softmax,instance_norm,sum,sum,sum", "ops that fit there"),
    ("relu,softmax,sum,sum", "output constant"),
])
def test_bad_chains_name_the_problem(ops, message):
    with pytest.raises(TaskError, match=message):
        GEN.generate(0, ops=ops)


def test_reference_is_float64_and_matches_the_function():
    task = GEN.generate(11, dtype="float16", ops="add:col,silu,softmax")
    inputs = task.make_inputs(task.shapes["test"][0], seed=1)
    ref = task.reference(inputs)
    assert ref.dtype == torch.float64
    err = (task.function(*inputs).double() - ref).norm() / ref.norm()
    assert 0 < err < 3e-3  # fp16 PyTorch lands near, not on, the float64 reference


@pytest.mark.parametrize("ops, budget_heads", [("rotary_attention,add:full", 3), ("attention,tanh", 5),
                                                 ("attention", 1)])
def test_attention_reference_in_head_slices_equals_the_whole(monkeypatch, ops, budget_heads):
    """A few (batch, head) pairs a slice, whole batches or part of one: the same float64 values as all at once."""
    from fusionforge import tasks

    task = GEN.generate(4, dtype="float32", ops=ops)
    dims = {**task.shapes["test"][0], "B": 3, "NH": 4}
    inputs = task.make_inputs(dims, seed=2)
    whole = task.reference(inputs)
    calls = []
    function = task.function
    monkeypatch.setattr(type(task), "function", property(lambda self: lambda *a: calls.append(a[0].shape) or
                                                          function(*a)))
    monkeypatch.setattr(tasks, "REFERENCE_SCORES_BYTES", budget_heads * 8 * dims["S"] ** 2)
    sliced = task.reference(inputs)
    assert len(calls) == (3 * 4 // 4 if budget_heads == 5 else 3 * math.ceil(4 / budget_heads))
    assert all(shape[0] * shape[1] <= budget_heads for shape in calls)
    assert sliced.shape == whole.shape and torch.equal(sliced, whole)


def test_make_inputs_is_deterministic_and_seed_dependent():
    task = GEN.generate(3, ops="linear_bias,relu")
    dims = task.shapes["test"][0]
    a, b, c = task.make_inputs(dims, 1), task.make_inputs(dims, 1), task.make_inputs(dims, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    x, w = a[0].float(), a[1].float()
    assert x.abs().max() <= 4.0  # activations: clipped normal
    assert abs(w.std().item() * math.sqrt(dims["K"]) - 1) < 0.3  # weights: fan-in scaled


def test_edge_draws_sit_near_the_ends_of_each_clipped_range():
    """edge -1: every clipped normal input near its low end; 1: the first near its high end, the others low.
    Values stay inside the distribution's range; weights (fan-in scaled) and other kinds are drawn as usual."""
    task = GEN.generate(3, ops="linear_bias,add:row,relu")
    dims = task.shapes["test"][0]
    usual = task.make_inputs(dims, 5)
    for edge in (-1, 1):
        x, w, bias, row = (v.double() for v in task.make_inputs(dims, 5, edge=edge))
        assert x.abs().max() <= 4.0 and bool((x * edge > 2.5).all())  # z = edge (4 - |n| / 4), |n| < 6 here
        assert torch.equal(w, usual[1].double())
        for vector, spec in ((bias, task.inputs[2]), (row, task.inputs[3])):
            edge_value = spec.init["mean"] - spec.init["std"] * spec.init["clip"]
            assert bool((vector - edge_value).abs().le(spec.init["std"] * 1.6).all()), spec.name
    q, k, v = GEN.generate(1, ops="attention").make_inputs({"B": 1, "NH": 1, "S": 8, "D": 64}, 3, edge=1)
    assert bool((q > 2.5).all()) and bool((k < -2.5).all()) and bool((v < -2.5).all())


def test_scalar_inputs_are_python_floats_away_from_zero():
    task = GEN.generate(3, ops="div:scalar,relu")
    for seed in range(20):
        scalar = task.make_inputs(task.shapes["test"][0], seed)[1]
        assert isinstance(scalar, float) and 0.5 <= abs(scalar) <= 2.0


def test_cost_model_counts_bytes_and_flops():
    task = GEN.generate(0, dtype="float16", ops="linear_bias,relu")
    dims = {"M": 128, "N": 64, "K": 32}
    cost = task.cost(dims)
    assert cost["bytes"] == 2 * (128 * 32 + 64 * 32 + 64 + 128 * 64)
    assert cost["flops"] == 2 * 128 * 64 * 32 + 128 * 64
    # eager: linear reads x, w, bias and writes h; relu reads h and writes h
    assert cost["unfused_bytes"] == 2 * (128 * 32 + 64 * 32 + 64 + 128 * 64) + 2 * 2 * 128 * 64


def test_group_norm_channels_divide_into_groups():
    for seed in range(10):
        task = GEN.generate(seed, ops="group_norm")
        groups = task.steps[0].params["groups"]
        for dims in task.shapes["test"] + task.shapes["bench"]:
            channel = dims["M"] if len(task.inputs[0].shape) == 3 else dims["N"]
            assert channel % groups == 0


@pytest.mark.parametrize("ops", ["embedding,selu,group_norm,minimum", "matmul,group_norm", "conv2d,group_norm"])
def test_unseen_shapes_keep_channels_a_multiple_of_the_groups(ops):
    """An embedding's ids are rank 1, its product rank 2: the channels are its product's last dim."""
    for seed in range(12):
        task = GEN.generate(seed, ops=ops)
        groups = chain_groups((s.op, s.params) for s in task.steps)
        dims = unseen_dims(task, random.Random(seed))
        assert groups > 1 and dims is not None and dims[CHANNEL_DIM[task.rank]] % groups == 0
        inputs = task.make_inputs(dims, seed, "cpu")
        assert tuple(task.function(*inputs).shape) == tuple(task.output_dims(dims))


@pytest.mark.parametrize("family", [None, "scan", "loss", "gather", "fp8", "arg_reduction", "pooling",
                                    "spatial_reduction", "convolution"])
def test_wide_shapes_take_rows_past_1024_and_stay_small(family):
    """The last dim of the first input and of the output (rank >= 2) past 1024 where free (a chain not rooted in a
    product: its bench row where that is longer), the others 1-3."""
    for seed in range(8):
        task = GEN.generate(seed, family=family) if family else GEN.generate(seed)
        dims = wide_dims(task, random.Random(seed))
        if dims is None:
            continue
        bench = task.shapes["bench"][0]
        longs = [name for name in ("N", "K", "W") if name in dims and dims[name] > 1024]
        assert longs
        assert all(dims[name] < 2048 or dims[name] == min(bench[name], WIDE_ROW_MAX) // 16 * 16 for name in longs)
        assert math.prod(task.output_dims(dims)) <= 2 * WIDE_ROW_MAX * 3 * 3
        out = task.function(*task.make_inputs(dims, seed))
        assert tuple((out[0] if task.quantizer else out).shape) == tuple(task.output_dims(dims))


def test_wide_rows_are_the_bench_rows_only_off_products():
    """A row chain's wide row is its bench row (a block capped short of it fails on the CPU too); a matmul's K and N
    stay in WIDE_ROW, where the interpreter's tiles stay cheap."""
    rows = GEN.generate(0, ops="add:col,gelu")
    rows.shapes["bench"] = [{"M": 7872, "N": 8192}]
    assert wide_dims(rows, random.Random(0))["N"] == 8192
    product = GEN.generate(0, ops="linear_bias,gelu")
    dims = wide_dims(product, random.Random(0))
    assert all(dims[name] < 2048 for name in ("N", "K") if dims[name] > 1024)


def test_all_ops_get_used():
    """The original mix uses every op of its families; each asked-for family uses every op of its own (and
    convolutions a global pooling: a spatial reduction after them)."""
    used = {s.op for seed in range(300) for s in GEN.generate(seed).steps}
    new = {op.name for op in catalog.SCAN_OPS + catalog.LOSS_OPS + catalog.ARG_REDUCTION_OPS + catalog.SPATIAL_OPS
           + catalog.GATHER_OPS + catalog.POOL_OPS + catalog.ATTENTION_OPS + catalog.CONV_OPS + catalog.FP8_OPS
           + catalog.QUANTIZE_OPS}
    assert used == set(catalog.CATALOG) - new
    for family, ops in (("scan", catalog.SCAN_OPS), ("loss", catalog.LOSS_OPS),
                        ("arg_reduction", catalog.ARG_REDUCTION_OPS), ("spatial_reduction", catalog.SPATIAL_OPS),
                        ("gather", catalog.GATHER_OPS), ("pooling", catalog.POOL_OPS),
                        ("attention", catalog.ATTENTION_OPS), ("convolution", catalog.CONV_OPS),
                        ("fp8", catalog.FP8_OPS + catalog.QUANTIZE_OPS)):
        drawn = {s.op for seed in range(40) for s in GEN.generate(seed, family=family).steps}
        assert {op.name for op in ops} <= drawn
        also = {op.name for op in catalog.SPATIAL_OPS} if family == "convolution" else set()
        assert drawn <= set(catalog.CATALOG) - new | {op.name for op in ops} | also


@pytest.mark.parametrize("ops, plan, family, difficulty", [
    ("relu,add:col", "pointwise", "pointwise", "easy"), ("exp,softmax,tanh", "row", "reduction", "medium"),
    ("square,sum,sqrt,max", "two_reductions", "reduction", "hard"), ("linear,batch_norm,softmax", "matmul", "matmul",
                                                                       "hard"),
    ("matmul,softmax,sum", None, "matmul", "hard"), ("softmax,layer_norm", None, "reduction", "medium"),
    ("relu,softmax,max,sum", None, "reduction", "hard"), ("var,softmax", None, "reduction", "medium"),
    ("abs,add:col,argmax", "row", "arg_reduction", "medium"), ("linear,argmin", None, "matmul", "hard"),
    ("softmax,argmax", None, "arg_reduction", "medium"), ("silu,spatial_max", "row", "spatial_reduction", "medium"),
    ("embedding,relu,rms_norm", "row", "gather", "medium"), ("embedding,add:col", "pointwise", "gather", "medium"),
    ("embedding,mse_loss", None, "gather", "medium"), ("dequantize_fp8_rows,gelu", "pointwise", "fp8", "medium"),
    ("dequantize_fp8_tensor,relu,softmax", "row", "fp8", "medium"), ("silu,quantize_fp8_rows", "row", "fp8", "medium"),
    ("tanh,mul:col,quantize_fp8_tensor", "row", "fp8", "medium"), ("linear,quantize_fp8_rows", None, "fp8", "hard"),
    ("softmax,quantize_fp8_rows", None, "fp8", "medium")])
def test_one_classification_gives_plan_family_and_difficulty(ops, plan, family, difficulty):
    kind = classify(ops.replace(":col", "").split(","))
    assert (kind.plan, kind.family, kind.difficulty) == (plan, family, difficulty)
    if plan is not None:
        assert GEN.generate(3, ops=ops).difficulty == difficulty


def test_test_shapes_walk_the_loops_the_bench_shape_walks():
    """A matmul's lopsided test shape spans several 64-wide k-steps; a task whose bench rows are longer than
    registers hold (a 3D group norm) gets a fourth test shape with rows that long too, the others unchanged."""
    matmul = GEN.generate(2, ops="linear,relu")
    assert matmul.shapes["test"][2]["K"] > 64
    group_norm = next(t for t in (GEN.generate(s, difficulty="medium") for s in range(200))
                      if len(t.inputs[0].shape) == 3 and any(step.op == "group_norm" for step in t.steps))
    test, bench = group_norm.shapes["test"], group_norm.shapes["bench"]
    assert longest_row(group_norm, bench) > LONG_ROW and len(test) == 4
    assert longest_row(group_norm, test[3:]) >= LONG_TEST_ROW > LONG_ROW >= longest_row(group_norm, test[:3])
    assert test[3] == {**test[2], "B": 1, "M": test[3]["M"]}  # a group's channels grow, N and K stay small
    assert len(GEN.generate(2, ops="relu,softmax").shapes["test"]) == 3


def test_families_are_drawn_only_when_asked_for():
    """Without a family a seed keeps its task; with one it draws a chain of that family, the same every time."""
    assert GEN.generate(5).to_json() == GEN.generate(5, family=None).to_json()
    for family in ("scan", "loss", "arg_reduction", "spatial_reduction", "gather", "convolution", "fp8"):
        task = GEN.generate(5, family=family)
        assert task.to_json() == GEN.generate(5, family=family).to_json()
        assert task.family == family and task.difficulty == "medium"


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "fp4"}, "unknown family 'fp4'"),
    ({"family": "scan", "ops": "cumsum"}, "not both"),
    ({"family": "loss", "difficulty": "hard"}, "loss tasks are medium"),
    ({"ops": "mse_loss,relu"}, "mse_loss is a loss and ends the chain"),
    ({"ops": "argmax,relu"}, "argmax is an arg reduction and ends the chain"),
    ({"ops": "relu,embedding"}, "embedding is a gather root and must come first"),
    ({"ops": "matmul,cross_entropy"}, None),
])
def test_family_and_loss_chain_errors(kwargs, message):
    if message is None:  # a matmul root before a loss is a valid chain the built-in generator has no plan for
        assert GEN.generate(1, **kwargs).family == "matmul"
        return
    with pytest.raises(TaskError, match=message):
        GEN.generate(1, **kwargs)


def test_loss_shape_rules():
    ce = catalog.get("cross_entropy")
    assert catalog.out_shape(ce, ("M", "N"), {"reduction": "none"}) == ("M",)
    assert catalog.out_shape(ce, ("M", "N"), {"reduction": "mean"}) == ()
    with pytest.raises(catalog.ShapeError, match="rank 2"):
        catalog.out_shape(ce, ("B", "M", "N"), {"reduction": "none"})
    assert catalog.out_shape(catalog.get("kl_div"), ("B", "M", "N"), {}) == ()
    assert catalog.out_shape(catalog.get("cumsum"), ("B", "M", "N"), {}) == ("B", "M", "N")


def test_class_indices_and_probabilities_are_drawn_as_their_kinds():
    task = GEN.generate(0, ops="cross_entropy", dtype="bfloat16")
    dims = task.shapes["test"][0]
    x, target = task.make_inputs(dims, seed=3)
    assert target.dtype == torch.int64 and target.shape == (dims["M"],)
    assert 0 <= int(target.min()) and int(target.max()) < dims["N"]
    assert task.reference([x, target]).dtype == torch.float64  # the logits in float64, the classes kept
    assert task.output_dtype == "float32"  # a loss is float32, as PyTorch gives it on upcast logits
    assert task.cost(dims)["bytes"] == x.numel() * 2 + target.numel() * 8 + (dims["M"] if task.output_shape else 1) * 4
    kl = GEN.generate(0, ops="kl_div", dtype="float32")
    probabilities = kl.make_inputs(kl.shapes["test"][0], seed=3)[1]
    assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-5) and bool((probabilities > 0).all())


def test_a_mean_loss_still_must_depend_on_every_input():
    """A single value's bar is lower (a mean averages an input's effect), but an input it ignores still fails."""
    task = GEN.generate(0, ops="mse_loss", dtype="float32")
    assert screen(task) is None
    ignored = FusionTask.from_dict(task.to_dict())
    ignored.__dict__["function"] = lambda x, target: torch.nn.functional.mse_loss(x, torch.zeros_like(target))
    assert screen(ignored) == f"output independent of input {task.inputs[1].name}"


def test_fp8_tasks_read_e4m3_values_and_scales_in_the_task_dtype():
    """x is float8 e4m3 [M, N] drawn across most of its range (finite: within +-448), its scale [M, 1] or [1] in the
    task's dtype; the float64 reference dequantizes exactly."""
    for seed in range(16):
        task = GEN.generate(seed, family="fp8")
        if task.quantizer:
            continue
        x, scale = task.inputs[:2]
        assert (x.dtype, x.shape) == ("float8_e4m3fn", ["M", "N"]) and scale.dtype == task.dtype
        assert scale.shape == (["M", 1] if task.steps[0].op == "dequantize_fp8_rows" else [1])
        values = task.make_inputs(task.shapes["test"][0], seed)
        assert values[0].dtype == torch.float8_e4m3fn and bool(values[0].float().isfinite().all())
        assert 200 < float(values[0].float().abs().max()) <= 448
        if len(task.steps) == 1:
            assert torch.equal(task.reference(values[:2]), values[0].double() * values[1].double())


def test_fp8_quantization_ends_a_chain_with_values_and_their_scales():
    """Half the fp8 family's tasks quantize their chain: two outputs, the e4m3 values (h / scale, within +-448) and
    the float32 scales (amax / 448, a row's or the tensor's); the reference's in float64, each value rounded once.
    The screen judges the values quantized."""
    quantizers = [task for task in (GEN.generate(seed, family="fp8") for seed in range(12)) if task.quantizer]
    assert {task.quantizer.name for task in quantizers} == {"quantize_fp8_rows", "quantize_fp8_tensor"}
    for task in quantizers:
        rows = task.quantizer.scales == "rows"
        assert task.outputs == [(task.output_shape, "float8_e4m3fn"),
                                ([*task.output_shape[:-1], 1] if rows else [1], "float32")]
        assert task.to_dict()["outputs"][1]["dtype"] == "float32" and FusionTask.from_dict(task.to_dict()).quantizer
        inputs = task.make_inputs(task.shapes["test"][0], 3)
        values, scales = task.reference(inputs)
        assert values.dtype == torch.float8_e4m3fn and scales.dtype == torch.float64
        h = task.values(inputs, float64=True)
        amax = h.abs().amax(dim=-1, keepdim=True) if rows else h.abs().amax().reshape(1)
        assert torch.equal(scales, amax / 448)
        assert torch.equal(values, (h / scales).to(torch.float8_e4m3fn)) and float(values.float().abs().max()) == 448
        own_values, own_scales = task.function(*inputs)
        assert own_values.dtype == torch.float8_e4m3fn and own_scales.dtype == torch.float32
    with pytest.raises(TaskError, match="an fp8 quantization and ends the chain"):
        GEN.generate(1, ops="quantize_fp8_rows,relu")


def test_scan_and_loss_tasks_test_a_row_of_several_chunks():
    """A kernel carrying state from chunk to chunk of a row (8192 values or fewer a chunk) carries it on the CPU too."""
    for family in ("scan", "loss"):
        for seed in range(6):
            task = GEN.generate(seed, family=family)
            assert max(dims["N"] for dims in task.shapes["test"]) >= CHUNKED_TEST_ROW > 8192
    assert max(d["N"] for d in GEN.generate(0, ops="softmax").shapes["test"]) < CHUNKED_TEST_ROW  # others keep theirs


def test_class_indices_reach_both_edges_of_a_row():
    """Every draw holds the last class and class 0, so a kernel wrong in a row's last chunk meets its case."""
    task = GEN.generate(0, ops="cross_entropy", dtype="float16")
    for seed in range(3):
        for dims in task.shapes["test"]:
            target = task.make_inputs(dims, seed)[1]
            assert int(target[0]) == dims["N"] - 1 and int(target[-1]) == 0


def test_arg_reductions_give_int64_indices_and_judge_them_by_the_values_picked_from():
    argmax = catalog.get("argmax")
    assert catalog.out_shape(argmax, ("B", "M", "N"), {"keepdim": False}) == ("B", "M")
    assert catalog.out_shape(argmax, ("M", "N"), {"keepdim": True}) == ("M", 1)
    task = GEN.generate(0, ops="abs,add:col,argmax", dtype="bfloat16")
    assert task.output_dtype == "int64" and task.arg_reduction is argmax
    assert task.inputs[0].init == catalog.LOGITS  # clipped where no two values of a row meet the clip
    dims = task.shapes["test"][0]
    x, bias = task.make_inputs(dims, seed=3)
    values, own_values, largest = task.picked_from([x, bias])
    assert values.dtype == torch.float64 and own_values.dtype == torch.bfloat16 and largest
    assert torch.equal(values, x.double().abs() + bias.double())
    assert torch.equal(task.reference([x, bias]).reshape(-1), values.argmax(dim=-1))
    assert task.cost(dims)["bytes"] == x.numel() * 2 + bias.numel() * 2 + dims["M"] * 8  # an int64 index per row
    assert GEN.generate(0, ops="relu,softmax").picked_from([]) is None


def test_arg_reduction_tasks_test_many_rows_of_2_to_the_14_minus_1():
    """A kernel that drops a row's partial last chunk of any power-of-two width c misses c - 1 values of a 16383 row."""
    for seed in range(4):
        task = GEN.generate(seed, family="arg_reduction")
        long = [d for d in task.shapes["test"] if d["N"] == ARG_TEST_ROW]
        assert len(long) == 1 and long[0]["M"] == ARG_TEST_ROWS and long[0].get("B", 1) == 1


@pytest.mark.parametrize("ops, reason", [
    ("hardsigmoid,argmax", "near-ties"),  # saturates at 1 for h >= 3: a vocabulary row holds dozens of such values
    ("add:scalar,argmin", "output independent of input alpha0"),  # a shift moves no index
    ("cos,argmax", "near-ties"),  # cos is flat at its max: two values within rounding of it in most rows
])
def test_arg_reductions_whose_index_says_little_are_screened(ops, reason):
    with pytest.raises(TaskError, match=reason):
        TaskGenerator(max_tries=6).generate(0, ops=ops, dtype="float16")


def test_spatial_reductions_take_an_image_and_leave_its_channels():
    mean, image = catalog.get("spatial_mean"), ("B", "C", "H", "W")
    assert catalog.out_shape(mean, image, {"keepdim": False}) == ("B", "C")
    assert catalog.out_shape(mean, image, {"keepdim": True}) == ("B", "C", 1, 1)
    with pytest.raises(catalog.ShapeError, match="H x W planes"):
        catalog.out_shape(mean, ("B", "M", "N"), {"keepdim": False})
    with pytest.raises(catalog.ShapeError, match="a scalar or a full tensor"):
        catalog.out_shape(catalog.get("add"), image, {"operand": "col"})
    with pytest.raises(catalog.ShapeError, match="reductions over H, W"):
        catalog.out_shape(catalog.get("softmax"), image, {})
    task = GEN.generate(0, ops="silu,spatial_mean,add:col", dtype="float16")
    assert task.inputs[0].shape == list(image) and task.output_shape == ["B", "C"] and task.inputs[1].shape == ["C"]
    assert task.steps[1].params["keepdim"] is False  # a forced spatial reduction before other ops drops H and W
    x, bias = task.make_inputs(task.shapes["test"][0], seed=1)
    expected = torch.nn.functional.silu(x.double()).mean(dim=(-2, -1)) + bias.double()
    assert torch.allclose(task.reference([x, bias]), expected, rtol=0, atol=1e-12)
    assert task.cost(task.shapes["bench"][0])["bytes"] >= BENCH_MIN_BYTES
    assert max(d["H"] * d["W"] for d in task.shapes["test"]) > 1024  # a kernel walking planes in chunks walks here


def _pool_task(ops: str, dtype: str, **params) -> FusionTask:
    """The first seed's task of the forced chain ``ops`` whose pooling drew ``params``."""
    for seed in range(400):
        task = GEN.generate(seed, ops=ops, dtype=dtype)
        if all(task.steps[1].params[name] == value for name, value in params.items()):
            return task
    raise AssertionError(f"no seed draws {params} for {ops}")


def test_pooling_leaves_planes_of_pooled_sizes_that_every_shape_holds():
    """max_pool2d / avg_pool2d take [B, C, H, W] to [B, C, P, Q], P = (H + 2 pad - K) // S + 1: P and Q are dims of
    every test and bench shape, so a full operand after the pool is [B, C, P, Q]. A plane is pooled once a chain."""
    window = {"kernel_size": 3, "stride": 2, "padding": 1}
    pool = catalog.get("max_pool2d")
    assert catalog.out_shape(pool, ("B", "C", "H", "W"), window) == ("B", "C", "P", "Q")
    assert catalog.pooled_size(7, window) == 4
    assert catalog.pooled_size(56, {**window, "kernel_size": 2, "padding": 0}) == 28
    for shape in (("B", "C", "P", "Q"), ("B", "M", "N"), ("B", "C")):
        with pytest.raises(catalog.ShapeError, match="H x W planes"):
            catalog.out_shape(pool, shape, window)
    assert catalog.out_shape(catalog.get("spatial_mean"), ("B", "C", "P", "Q"), {"keepdim": False}) == ("B", "C")
    pooled = GEN.generate(0, ops="relu,max_pool2d,spatial_mean")  # a reduction of the pooled planes: no plan yet
    assert pooled.output_shape[:2] == ["B", "C"] and classify([s.op for s in pooled.steps]).plan is None
    with pytest.raises(TaskError, match="H x W planes"):
        GEN.generate(0, ops="relu,max_pool2d,max_pool2d")
    task = _pool_task("silu,max_pool2d,add:full", "float16", **window)
    assert task.output_shape == ["B", "C", "P", "Q"] and task.inputs[1].shape == ["B", "C", "P", "Q"]
    for dims in task.shapes["test"] + task.shapes["bench"]:
        pooled = catalog.pooled_size(dims["H"], window), catalog.pooled_size(dims["W"], window)
        assert (dims["P"], dims["Q"]) == pooled
    x, residual = task.make_inputs(task.shapes["test"][0], seed=1)
    expected = torch.nn.functional.max_pool2d(torch.nn.functional.silu(x.double()), 3, 2, 1) + residual.double()
    assert torch.allclose(task.reference([x, residual]), expected, rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    cost = task.cost(bench)
    out = bench["B"] * bench["C"] * bench["P"] * bench["Q"]
    assert cost["bytes"] == (bench["B"] * bench["C"] * bench["H"] * bench["W"] + 2 * out) * 2 >= BENCH_MIN_BYTES
    assert cost["flops"] == task.cost({**bench, "B": 1})["flops"] * bench["B"]
    assert classify([s.op for s in task.steps]) == ChainKind("pool", "pooling", "medium")


def test_a_task_whose_pooled_sizes_disagree_with_its_window_is_refused():
    d = _pool_task("relu,avg_pool2d", "float32", padding=1, count_include_pad=False).to_dict()
    d["shapes"]["bench"][0]["Q"] += 1
    with pytest.raises(TaskError, match="sizes its pooling or convolution leaves"):
        FusionTask.from_dict(d)


def test_average_pooling_counts_the_padding_as_its_parameter_says():
    """count_include_pad=False divides a border window's sum by its positions inside the plane, True by K^2."""
    for include in (True, False):
        task = _pool_task("abs,avg_pool2d", "float32", kernel_size=3, stride=1, padding=1, count_include_pad=include)
        (x,) = task.make_inputs(task.shapes["test"][0], seed=2)
        corner = float(x.double().abs()[0, 0, :2, :2].sum()) / (9 if include else 4)
        assert float(task.reference([x])[0, 0, 0, 0]) == pytest.approx(corner, rel=1e-12)


def test_attention_starts_a_chain_from_a_query_a_key_and_a_value():
    """q, k, v [B, NH, S, D] give softmax(q k^T scale) v, [B, NH, S, D], the value the ops after it see. The cost
    counts 4 D FLOPs per (query, key) pair, half the pairs where causal; the probe is a test shape's (but D)."""
    for causal in (False, True):
        task = next(t for t in (GEN.generate(seed, ops="attention,relu", dtype="bfloat16") for seed in range(40))
                    if t.steps[0].params["causal"] is causal)
        shape = ["B", "NH", "S", "D"]
        assert [(i.name, i.role, i.shape) for i in task.inputs] == [
            ("q", "query", shape), ("k", "key", shape), ("v", "value", shape)]
        assert task.rank == 4 and task.output_shape == shape
        assert classify([s.op for s in task.steps]) == ChainKind("attention", "attention", "hard")
        q, k, v = task.make_inputs(task.shapes["test"][0], seed=3)
        scale = task.steps[0].params["scale"]
        expected = torch.nn.functional.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), is_causal=causal, scale=scale).relu()
        assert torch.allclose(task.reference([q, k, v]), expected, rtol=0, atol=1e-12)
        bench = task.shapes["bench"][0]
        values = bench["B"] * bench["NH"] * bench["S"] * bench["D"]
        pairs = bench["S"] * ((bench["S"] + 1) / 2 if causal else bench["S"])
        assert task.cost(bench)["flops"] == int(4 * bench["B"] * bench["NH"] * bench["D"] * pairs) + values
        assert task.cost(bench)["bytes"] == 4 * values * 2 >= BENCH_MIN_BYTES
        assert probe_dims(task) == {**task.shapes["test"][0], "D": bench["D"]}
    with pytest.raises(TaskError, match="must come first"):
        GEN.generate(0, ops="relu,attention")


def test_rotary_attention_rotates_q_and_k_by_their_positions_first():
    """cos and sin [S, D] are RoPE's tables (angle s / 10000^(2i / D), each half of D repeated), the same in every
    draw; the reference attends with q and k rotated: x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1]."""
    task = GEN.generate(3, ops="rotary_attention,gelu", dtype="float32")
    assert [(i.name, i.shape) for i in task.inputs[3:]] == [("cos", ["S", "D"]), ("sin", ["S", "D"])]
    assert classify([s.op for s in task.steps]) == ChainKind("attention", "attention", "hard")
    dims = task.shapes["test"][0]
    q, k, v, cos, sin = task.make_inputs(dims, seed=1)
    assert torch.equal(cos, task.make_inputs(dims, seed=2)[3])  # a table, not a draw
    half = dims["D"] // 2
    angle = 5 * 10000.0 ** (-3 / half)  # position 5, dim 3 (and 3 + D / 2)
    assert cos[5, 3].item() == pytest.approx(math.cos(angle))
    assert sin[5, 3 + half].item() == pytest.approx(math.sin(angle))

    def rope(x):
        x = x.double()
        return x * cos.double() + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin.double()

    params = task.steps[0].params
    expected = torch.nn.functional.scaled_dot_product_attention(rope(q), rope(k), v.double(),
                                                                is_causal=params["causal"], scale=params["scale"])
    assert torch.allclose(task.reference([q, k, v, cos, sin]), torch.nn.functional.gelu(expected), atol=1e-12)


def test_a_causal_conv1d_starts_a_chain_from_channels_of_positions():
    """x [B, M, N], weight [M, T] (T taps, fan-in scaled), bias [M] give h_bmn = bias_m + sum_t weight_mt x_bm(n-T+1+t)
    with zeros before n = 0: [B, M, N]. T is a dim of every shape; a test sequence of 1031 positions spans several
    tiles. The cost counts 2 T FLOPs and a bias add an output."""
    task = GEN.generate(5, ops="causal_conv1d,silu", dtype="float32")
    assert [(i.name, i.role, i.shape) for i in task.inputs] == [
        ("x", "activation", ["B", "M", "N"]), ("weight", "weight", ["M", "T"]), ("bias", "bias", ["M"])]
    assert task.rank == 3 and task.output_shape == ["B", "M", "N"]
    assert classify([s.op for s in task.steps]) == ChainKind("conv", "convolution", "medium")
    assert all("T" in dims for dims in task.shapes["test"] + task.shapes["bench"])
    assert {"B": 1, "M": 3, "N": 1031, "T": 4} in task.shapes["test"]
    dims = task.shapes["test"][2]
    x, weight, bias = (v.double() for v in task.make_inputs(dims, seed=3))
    taps = dims["T"]
    padded = torch.nn.functional.pad(x, (taps - 1, 0))
    expected = sum(weight[:, t, None] * padded[..., t:t + dims["N"]] for t in range(taps)) + bias[:, None]
    assert torch.allclose(task.reference([x, weight, bias]), torch.nn.functional.silu(expected), rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    values = bench["B"] * bench["M"] * bench["N"]
    assert task.cost(bench)["flops"] == (2 * bench["T"] + 1 + catalog.get("silu").flops) * values
    assert task.cost(bench)["bytes"] >= BENCH_MIN_BYTES
    with pytest.raises(TaskError, match="must come first"):
        GEN.generate(0, ops="relu,causal_conv1d")


def test_a_conv2d_starts_a_chain_from_image_channels():
    """x [B, K, H, W], weight [C, J, R, R] (J = K / groups, fan-in J R R), bias [C] give [B, C, P, Q]; J, P and Q
    follow from the shape and the window's parameters in every shape, and a task whose sizes disagree is refused. A
    test shape of 132 output channels and 32 input channels spans several tiles of each. The cost counts 2 J R R
    FLOPs and a bias add an output."""
    task = GEN.generate(41, ops="conv2d,silu", dtype="float16")
    params = task.steps[0].params
    assert [(i.name, i.role, i.shape) for i in task.inputs] == [
        ("x", "activation", ["B", "K", "H", "W"]), ("weight", "weight", ["C", "J", "R", "R"]), ("bias", "bias", ["C"])]
    assert task.rank == 4 and task.output_shape == ["B", "C", "P", "Q"]
    assert classify([s.op for s in task.steps]) == ChainKind("conv2d", "convolution", "medium")
    assert classify(["conv2d", "batch_norm", "relu"]).plan == "conv2d"  # conv, batch norm, activation
    assert classify(["relu", "batch_norm", "max_pool2d"]).plan is None  # a pool's plan takes pointwise ops only
    with pytest.raises(TaskError, match="rank-4 value takes pointwise ops"):
        GEN.generate(0, ops="conv2d,layer_norm")
    assert {"B": 1, "K": 32, "C": 132, "H": 12, "W": 12, "R": 3} in [
        {k: d[k] for k in ("B", "K", "C", "H", "W", "R")} for d in task.shapes["test"]]
    for dims in task.shapes["test"] + task.shapes["bench"]:
        assert dims["K"] % params["groups"] == 0 == dims["C"] % params["groups"]
        assert dims["J"] == dims["K"] // params["groups"]
        assert (dims["P"], dims["Q"]) == (catalog.conv_size(dims["H"], dims["R"], params),
                                           catalog.conv_size(dims["W"], dims["R"], params)) and dims["P"] >= 1
    assert catalog.conv_size(12, 3, {"stride": 1, "padding": 1, "dilation": 2}) == 10
    assert catalog.conv_size(56, 3, {"stride": 2, "padding": 0, "dilation": 1}) == 27
    dims = task.shapes["test"][0]
    x, weight, bias = (v.double() for v in task.make_inputs(dims, seed=3))
    assert weight.shape == (dims["C"], dims["J"], dims["R"], dims["R"])
    expected = torch.nn.functional.conv2d(x, weight, bias, params["stride"], params["padding"], params["dilation"],
                                          params["groups"])
    assert torch.allclose(task.reference([x, weight, bias]), torch.nn.functional.silu(expected), rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    values = bench["B"] * bench["C"] * bench["P"] * bench["Q"]
    taps = bench["J"] * bench["R"] ** 2
    assert task.cost(bench)["flops"] == 2 * taps * values + values + int(catalog.get("silu").flops * values)
    assert task.cost(bench)["bytes"] >= BENCH_MIN_BYTES
    shapes = {**task.shapes, "test": [{**task.shapes["test"][0], "P": task.shapes["test"][0]["P"] + 1}]}
    with pytest.raises(TaskError, match="convolution leaves"):
        FusionTask.from_dict({**task.to_dict(), "shapes": shapes})
    with pytest.raises(TaskError, match="must come first"):
        GEN.generate(0, ops="relu,conv2d")


@pytest.mark.parametrize("ops", ["conv2d,batch_norm,group_norm,mul:full", "conv2d,gelu,instance_norm,relu"])
def test_a_group_or_instance_norm_follows_a_conv2d_over_its_planes(ops):
    """A group norm or an instance norm of a conv2d's [B, C, P, Q] output: per sample and group of channels (or one
    channel) over their planes, as PyTorch computes it. Channels are multiples of the norm's groups and the conv's; a
    norm whose bench rows are longer than registers hold gets a test shape with rows of LONG_TEST_ROW values or more,
    grown by its planes. Right after the conv an instance norm takes each channel's mean away, the conv's bias with
    it: no valid task."""
    task = GEN.generate(5, ops=ops, dtype="float32")
    norm = task.steps[2]
    assert classify([s.op for s in task.steps]) == ChainKind("conv2d", "convolution", "medium")
    groups = max(task.steps[0].params["groups"], norm.params.get("groups", 1))
    for dims in task.shapes["test"] + task.shapes["bench"]:
        assert dims["C"] % groups == 0
        per_row = (dims["C"] // norm.params["groups"] if norm.op == "group_norm" else 1) * dims["P"] * dims["Q"]
        assert row_length(norm, 4, dims) == per_row
    if longest_row(task, task.shapes["bench"]) > LONG_ROW:
        assert row_length(norm, 4, task.shapes["test"][-1]) >= LONG_TEST_ROW
    dims = task.shapes["test"][0]
    inputs = [v.double() for v in task.make_inputs(dims, seed=1)]
    x, weight, bias = inputs[:3]
    conv = torch.nn.functional.conv2d(x, weight, bias, *(task.steps[0].params[k] for k in ("stride", "padding",
                                                                                           "dilation", "groups")))
    if norm.op == "group_norm":
        h = torch.nn.functional.batch_norm(conv, *inputs[3:7], training=False, eps=task.steps[1].params["eps"])
        h = torch.nn.functional.group_norm(h, norm.params["groups"], *inputs[7:9], eps=norm.params["eps"]) * inputs[9]
    else:
        h = torch.nn.functional.gelu(conv)
        h = torch.relu(torch.nn.functional.instance_norm(h, weight=inputs[3], bias=inputs[4], eps=norm.params["eps"]))
    assert torch.allclose(task.reference(inputs), h, rtol=0, atol=1e-12)
    with pytest.raises(TaskError, match="independent of input bias"):
        GEN.generate(0, ops="conv2d,instance_norm")
    for seed in range(12):  # a group norm of 8 groups after a conv2d of 4: channels in multiples of 8
        task = GEN.generate(seed, ops="conv2d,group_norm,relu", dtype="float16")
        groups = max(task.steps[0].params["groups"], task.steps[1].params["groups"])
        assert all(dims["C"] % groups == 0 for dims in task.shapes["test"] + task.shapes["bench"])


def test_a_spatial_reduction_follows_a_conv2d_over_its_planes():
    """Global pooling after a conv2d: a mean or max over its P x Q planes (rows of P Q values), a conv2d plan with a
    second kernel; after a 2D pooling a spatial reduction has no plan."""
    task = GEN.generate(4, ops="conv2d,batch_norm,spatial_max,sigmoid", dtype="float32")
    assert classify([s.op for s in task.steps]) == ChainKind("conv2d", "convolution", "medium")
    assert task.output_shape == ["B", "C"]
    for dims in task.shapes["test"] + task.shapes["bench"]:
        assert row_length(task.steps[2], 4, dims) == dims["P"] * dims["Q"]
    dims = task.shapes["test"][0]
    inputs = [v.double() for v in task.make_inputs(dims, seed=1)]
    conv = torch.nn.functional.conv2d(*inputs[:3], *(task.steps[0].params[k] for k in ("stride", "padding",
                                                                                       "dilation", "groups")))
    h = torch.nn.functional.batch_norm(conv, *inputs[3:7], training=False, eps=task.steps[1].params["eps"])
    assert torch.allclose(task.reference(inputs), torch.sigmoid(h.amax(dim=(-2, -1))), rtol=0, atol=1e-12)
    assert classify(["conv2d", "spatial_mean", "batch_norm"]).plan is None  # only pointwise ops after it
    assert classify(["relu", "max_pool2d", "spatial_mean"]).plan is None


def test_a_conv_transpose2d_upsamples_image_channels():
    """x [B, K, H, W], weight [K, C, R, R] (fan-in K R R), bias [C] give [B, C, P, Q], P = (H - 1) S - 2 pad +
    dil (R - 1) + 1 in every shape, as F.conv_transpose2d computes it (one group). Its cost counts 2 C R R FLOPs an
    input value and a bias add an output; the convolution family draws it."""
    task = GEN.generate(2, ops="conv_transpose2d,relu", dtype="float32")
    params = task.steps[0].params
    assert [(i.name, i.shape) for i in task.inputs] == [("x", ["B", "K", "H", "W"]), ("weight", ["K", "C", "R", "R"]),
                                                        ("bias", ["C"])]
    assert classify([s.op for s in task.steps]) == ChainKind("conv_transpose2d", "convolution", "medium")
    for dims in task.shapes["test"] + task.shapes["bench"]:
        for side, of in (("P", "H"), ("Q", "W")):
            assert dims[side] == (dims[of] - 1) * params["stride"] - 2 * params["padding"] + \
                params["dilation"] * (dims["R"] - 1) + 1 == catalog.conv_size(dims[of], dims["R"], params, True)
    dims = task.shapes["test"][0]
    x, weight, bias = (v.double() for v in task.make_inputs(dims, seed=3))
    expected = torch.nn.functional.conv_transpose2d(x, weight, bias, params["stride"], params["padding"], 0, 1,
                                                    params["dilation"])
    assert torch.allclose(task.reference([x, weight, bias]), torch.relu(expected), rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    outputs = bench["B"] * bench["C"] * bench["P"] * bench["Q"]
    products = bench["B"] * bench["K"] * bench["H"] * bench["W"] * bench["C"] * bench["R"] ** 2
    assert task.cost(bench)["flops"] == 2 * products + outputs + int(catalog.get("relu").flops * outputs)
    assert any(GEN.generate(seed, family="convolution").steps[0].op == "conv_transpose2d" for seed in range(20))


def test_a_depthwise_conv2d_convolves_each_channel_with_its_own_window():
    """x [B, C, H, W], weight [C, 1, R, R] (fan-in R R), bias [C] give [B, C, P, Q] (F.conv2d with groups = C); a
    test plane 263 wide spans several column tiles. The cost counts 2 R R FLOPs and a bias add an output."""
    task = GEN.generate(3, ops="depthwise_conv2d,batch_norm,relu", dtype="float16")
    params = task.steps[0].params
    assert [(i.name, i.shape) for i in task.inputs[:3]] == [
        ("x", ["B", "C", "H", "W"]), ("weight", ["C", 1, "R", "R"]), ("bias", ["C"])]
    assert task.output_shape == ["B", "C", "P", "Q"] and "J" not in task.shapes["bench"][0]
    assert classify([s.op for s in task.steps]) == ChainKind("depthwise", "convolution", "medium")
    assert any(d["W"] == 263 for d in task.shapes["test"])
    for dims in task.shapes["test"] + task.shapes["bench"]:
        assert (dims["P"], dims["Q"]) == (catalog.conv_size(dims["H"], dims["R"], params),
                                           catalog.conv_size(dims["W"], dims["R"], params))
    dims = task.shapes["test"][0]
    x, weight, bias, *stats = (v.double() for v in task.make_inputs(dims, seed=3))
    expected = torch.nn.functional.conv2d(x, weight, bias, params["stride"], params["padding"], params["dilation"],
                                          groups=dims["C"])
    expected = torch.relu(torch.nn.functional.batch_norm(expected, *stats, training=False,
                                                         eps=task.steps[1].params["eps"]))
    assert torch.allclose(task.reference([x, weight, bias, *stats]), expected, rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    values = bench["B"] * bench["C"] * bench["P"] * bench["Q"]
    flops = (2 * bench["R"] ** 2 + 1) * values + int(catalog.get("batch_norm").flops * values) + values
    assert task.cost(bench)["flops"] == flops


def test_an_embedding_lookup_starts_a_chain_from_int64_ids_and_a_table():
    """ids [M] (int64, every row of the table reachable, its first and last named) pick rows of weight [V, N]; the
    ops after it see [M, N]. The table is read a row per id, so its bytes count M rows, not V; the probe keeps V
    small (a vocabulary's table is gigabytes)."""
    task = GEN.generate(4, ops="embedding,relu,rms_norm", dtype="bfloat16")
    assert [(i.name, i.role, i.shape, i.dtype) for i in task.inputs[:2]] == [
        ("ids", "ids", ["M"], "int64"), ("weight", "table", ["V", "N"], "bfloat16")]
    assert task.rank == 2 and task.output_shape == ["M", "N"] and task.signature.startswith("bfloat16|r2|embedding")
    dims = task.shapes["test"][0]
    ids, weight, gamma = task.make_inputs(dims, seed=3)
    assert ids.dtype == torch.int64 and int(ids.min()) == 0 and int(ids.max()) == dims["V"] - 1
    eps = task.steps[2].params["eps"]
    expected = torch.nn.functional.rms_norm(weight.double()[ids].relu(), (dims["N"],), gamma.double(), eps=eps)
    assert torch.allclose(task.reference([ids, weight, gamma]), expected, rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    assert bench["V"] in (32000, 50257, 128256) and bench["N"] in (1024, 2048, 4096)
    cost = task.cost(bench)
    assert cost["bytes"] >= BENCH_MIN_BYTES
    assert cost["bytes"] == bench["M"] * 8 + (2 * bench["M"] * bench["N"] + bench["N"]) * 2  # ids, rows, out, gamma
    assert probe_dims(task)["V"] == dims["V"]
    assert task.shapes["test"][-1] == {"M": 4, "N": 1031, "V": 20011}  # ids past 16383, rows past 1024


def test_a_lookup_before_an_arg_reduction_draws_its_table_as_logits():
    task = GEN.generate(2, ops="embedding,add:col,argmax", dtype="float32")
    assert task.inputs[1].init == catalog.LOGITS
    assert GEN.generate(2, ops="embedding,relu,sum").inputs[1].init == catalog.ACTIVATION


@pytest.mark.parametrize("ops, index_shape", [("gather,layer_norm", ["M", "N"]), ("index_select,relu,sum", ["N"])])
def test_a_gather_picks_n_of_each_rows_k_values(ops, index_shape):
    """x [M, K] and int64 indices into its last dimension ([M, N] a row each, or [N] shared) give [M, N], the row
    the ops after it see. The cost counts the M x N values picked, not all of x; the probe keeps K small."""
    task = GEN.generate(2, ops=ops, dtype="float16")
    x, index = task.inputs[:2]
    assert (x.name, x.shape, index.name, index.shape, index.dtype) == ("x", ["M", "K"], "index", index_shape, "int64")
    assert task.rank == 2 and task.step_shapes()[0] == ("M", "N") and index.init == catalog.COLUMN_INDEX
    dims = task.shapes["test"][0]
    values = task.make_inputs(dims, seed=5)
    assert int(values[1].min()) == 0 and int(values[1].max()) == dims["K"] - 1
    picked = values[0].double().gather(-1, values[1] if index_shape == ["M", "N"] else
                                       values[1].expand(dims["M"], -1))
    first = task.steps[1].op  # the reference evaluates the chain on those picks
    expected = {"layer_norm": lambda h: torch.nn.functional.layer_norm(
        h, h.shape[-1:], values[2].double(), values[3].double(), eps=task.steps[1].params["eps"]),
                "relu": lambda h: h.relu().sum(-1, keepdim=task.steps[2].params["keepdim"])}[first](picked)
    assert torch.allclose(task.reference(values), expected, rtol=0, atol=1e-12)
    bench = task.shapes["bench"][0]
    assert bench["K"] >= bench["N"] and task.cost(bench)["bytes"] >= BENCH_MIN_BYTES
    assert task.cost(bench)["bytes"] == task.cost({**bench, "K": 2 * bench["K"]})["bytes"]  # x: the values picked
    assert probe_dims(task)["K"] == dims["K"]
    assert task.shapes["test"][-1] == {"M": 4, "N": 1031, "K": 4099}  # indices past 127 and 4095, picks past 1024
