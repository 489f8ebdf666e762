"""The checker's tolerance: an element over the max abs bound passes only where the chain is ill-conditioned.

The case is the one an H200 run met: a float32 matmul -> minimum -> sqrt(|h|) task whose split-TF32
(tf32x3) kernel was right to float32 accuracy but failed the max abs rule alone at one element, a sqrt of
a dot product that cancelled to ~1e-6 (PyTorch's own error there happened to be small).
"""

import functools
from pathlib import Path

import pytest
import torch

from fusionforge.kernelfile import load_module
from fusionforge.tasks import TaskGenerator
from fusionforge.verify import analysis
from fusionforge.verify.checker import compare, input_sensitivity

# the task of that run (seed 17): the generator makes it again from its chain
SQRT_TASK = TaskGenerator().generate(17, dtype="float32", ops="matmul,minimum:row,sqrt")
DIMS = {"M": 37, "N": 131, "K": 53}


def _tf32(a: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 explicit mantissa bits), to nearest."""
    bits = a.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _tf32x3_chain(x, w, rowvec):
    """The chain with its matmul as split TF32 does it: big*big + big*small + small*big, fp32 sums."""
    xb, wb = _tf32(x), _tf32(w)
    xs, ws = _tf32(x - xb), _tf32(w - wb)
    h = (xs @ wb + xb @ ws) + xb @ wb
    return torch.sqrt(torch.abs(torch.minimum(h, rowvec.unsqueeze(-1))))


def _moved(task, inputs, ref, seed):
    return functools.partial(input_sensitivity, task.reference, inputs, ref, seed)


def _cases(seeds):
    task = SQRT_TASK
    for seed in seeds:
        inputs = task.make_inputs(DIMS, seed)
        ref = task.reference(inputs)
        yield task, seed, inputs, ref, task.function(*inputs), _tf32x3_chain(*inputs)


def test_split_tf32_is_float32_accurate_and_passes_where_the_max_abs_rule_alone_fails():
    alone_failed = 0
    for task, seed, inputs, ref, own, out in _cases(range(300)):
        alone_failed += not compare(out, ref, own, torch.float32)["passed"]
        stats = compare(out, ref, own, torch.float32, _moved(task, inputs, ref, seed))
        assert stats["passed"], (seed, stats)
    assert alone_failed > 0  # the case is real: the max abs rule alone fails this correct kernel


# the corrupted outputs of the GPU sweep, and two more
SWEEP = load_module(Path(__file__).parents[1] / "benchmarks" / "tolerance_sweep.py", "tolerance_sweep")


def _corrupted(out: torch.Tensor) -> dict[str, torch.Tensor]:
    one = out.clone()
    one[3, 5] += 1e-3 * out.abs().max()
    return {**SWEEP.corruptions(out), "one_element": one, "last_k_dropped": None}


@pytest.mark.parametrize("bug", ["tile_bf16", "tile_scaled", "all_bf16", "one_element", "last_k_dropped"])
def test_localized_and_precision_bugs_still_fail(bug):
    for task, seed, inputs, ref, own, out in _cases(range(20)):
        wrong = _corrupted(out)[bug]
        if wrong is None:  # a mask that misses the last K column in the bottom-right tile
            x, w, rowvec = inputs
            cut = x.clone()
            cut[-16:, -1] = 0
            wrong = out.clone()
            wrong[-16:, -16:] = _tf32x3_chain(cut, w, rowvec)[-16:, -16:]
        stats = compare(wrong, ref, own, torch.float32, _moved(task, inputs, ref, seed))
        assert not stats["passed"], (bug, seed)


def test_the_sensitivity_is_computed_only_when_an_element_is_over_the_max_abs_bound():
    def never():
        raise AssertionError("computed although every element was within the bound")

    task, seed, inputs, ref, own, out = next(_cases([0]))
    assert compare(own, ref, own, torch.float32, never)["passed"]


def test_an_ill_conditioned_output_is_judged_by_its_rounding_sensitivity_in_norm_too():
    """Where PyTorch happens to land near the reference, 2 x its error is no bound for a correct kernel's: the
    relative error is also allowed SENSITIVITY_FACTOR x the norm of the reference's movement under input rounding,
    and only that."""
    ref = torch.tensor([0.0311643, 0.0151831], dtype=torch.float64)
    own = (ref * (1 + 1e-7)).float()
    out = (ref * (1 + 3e-5)).float()  # each element within its bound below, the norm over 2 x PyTorch's + floor

    def sensitive():
        return ref.abs() * 1e-5

    def insensitive():
        return ref.abs() * 1e-7

    assert compare(out, ref, own, torch.float32, sensitive)["passed"]
    stats = compare(out, ref, own, torch.float32, insensitive)
    assert not stats["passed"] and stats["rel_err"] > stats["tolerance"]


def test_a_max_abs_failure_says_which_rule_it_broke():
    task, seed, inputs, ref, own, out = next(_cases([0]))
    wrong = out.clone()
    wrong[3, 5] += 1e-4 * out.abs().max()
    stats = compare(wrong, ref, own, torch.float32, _moved(task, inputs, ref, seed))
    assert stats["max_abs_index"] == [3, 5] and stats["rel_err"] <= stats["tolerance"]
    failure = analysis.mismatch_failure(stats, "Triton", "test[0]", {"refill": True, "dtype": "float32"})
    assert "over the max abs tolerance" in failure.message and "rounding bound" in failure.message
    assert "> tolerance" not in failure.message and "A few elements are off" in failure.root_cause


def test_the_sensitivity_is_large_only_where_the_chain_is_ill_conditioned():
    task, seed, inputs, ref, own, out = next(_cases([1]))
    relative = input_sensitivity(task.reference, inputs, ref, seed) / ref.abs()
    smallest = ref.abs().argmin()  # sqrt of the dot product nearest zero
    assert relative.median() < 1e-6 and relative.reshape(-1)[smallest] > 100 * relative.median()


CUMSUM_TASK = TaskGenerator().generate(0, dtype="float32", ops="mul:row,cumsum,tanh")


def _fp32_cumsum_chain(x, rowvec):
    """The chain in float32 with the running sum kept in float32, one column at a time (a correct fp32 scan; PyTorch's
    own CPU cumsum accumulates in float64, so its error is no guide to an fp32 kernel's)."""
    h = x * rowvec[:, None]
    running, columns = torch.zeros(h.shape[0]), []
    for j in range(h.shape[1]):
        running = running + h[:, j]
        columns.append(running)
    return torch.stack(columns, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_float32_cumsum_carries_the_rounding_of_its_running_sums(seed):
    """Where a prefix sum cancels to near zero (then tanh keeps the error and shrinks the bound), an fp32 scan is off by
    the rounding of the large partial sums before it: inputs' rounding alone does not bound it, the accumulation's
    does (``Op.accumulates``); an exclusive scan still fails."""
    x, rowvec = CUMSUM_TASK.make_inputs({"M": 6, "N": 3000}, seed)
    ref, own = CUMSUM_TASK.reference([x, rowvec]), CUMSUM_TASK.function(x, rowvec)
    scanned = _fp32_cumsum_chain(x, rowvec)

    def judge(out, accumulates):
        return compare(out, ref, own, torch.float32,
                       lambda: input_sensitivity(CUMSUM_TASK.reference, [x, rowvec], ref, seed, accumulates))

    assert CUMSUM_TASK.accumulates
    assert not judge(torch.tanh(scanned), accumulates=False)["passed"]
    assert judge(torch.tanh(scanned), accumulates=True)["passed"]
    assert not judge(torch.tanh(scanned - x * rowvec[:, None]), accumulates=True)["passed"]


def test_the_cumsum_rounding_bound_holds_draw_after_draw():
    """The accumulation's rounding enters the bound whole, with a random sign: a uniform fraction of it (one draw per
    element) left a correct fp32 scan failing 3 times in 40."""
    failed = []
    for seed in range(40):
        x, rowvec = CUMSUM_TASK.make_inputs({"M": 4, "N": 3000}, seed)
        ref, own = CUMSUM_TASK.reference([x, rowvec]), CUMSUM_TASK.function(x, rowvec)
        bound = functools.partial(input_sensitivity, CUMSUM_TASK.reference, [x, rowvec], ref, seed, True)
        stats = compare(torch.tanh(_fp32_cumsum_chain(x, rowvec)), ref, own, torch.float32, bound)
        if not stats["passed"]:
            failed.append(seed)
    assert failed == []


def _judged(picks, values, own_values, largest=True):
    """The checker's compare of int64 ``picks`` against the index rule (verify/indices.py)."""
    picks = torch.tensor(picks)
    ref = (values.argmax(-1) if largest else values.argmin(-1)).reshape(picks.shape)
    return compare(picks, ref, ref, torch.int64, picked_from=(values, own_values, largest))


def test_an_index_passes_where_its_value_is_within_rounding_of_the_extremum():
    values = torch.tensor([[0.0, 1.0, 1.0 - 1e-9, 0.5], [3.0, -1.0, 2.0, 2.9]], dtype=torch.float64)
    exact = values.float()  # PyTorch at the dtype: exact here, so the bound is the floor, 1e-5 of the row's magnitude
    assert _judged([1, 0], values, exact)["passed"] and _judged([2, 0], values, exact)["passed"]  # a tie either way
    short = _judged([1, 3], values, exact)
    assert not short["passed"] and short["rel_err"] == 0.5 and short["max_abs_index"] == [1]
    assert short["max_abs_err"] == pytest.approx(0.1) and short["value"] == 3 and short["expected"] == 0
    assert not _judged([4, 0], values, exact)["passed"]  # past the row: no value to pick
    assert _judged([0, 1], values, exact, largest=False)["passed"]  # argmin mirrored
    assert not _judged([3, 1], values, exact, largest=False)["passed"]
    rounded = values + torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.06]], dtype=torch.float64)
    assert _judged([1, 3], values, rounded.float())["passed"]  # PyTorch's own 16-bit error widens the bound to 0.12
    integers = compare(torch.tensor([2, 0]), values.argmax(-1), None, torch.int64)  # a file without a task
    assert not integers["passed"] and integers["rule"] == "exact" and integers["max_abs_index"] == [0]


def test_pytorch_picks_at_16_bits_pass_and_16_bit_values_in_a_float32_task_fail():
    """The rule admits PyTorch's own choice at the task dtype in every row, and catches a float32 task's values rounded
    to bf16 (a kernel cutting precision) on most draws: only rows with a near-tie at bf16's rounding show it."""
    half = TaskGenerator().generate(0, dtype="bfloat16", ops="square,sub:col,argmax")
    full = TaskGenerator().generate(0, dtype="float32", ops="tanh,mul:full,argmin")
    caught = 0
    for seed in range(20):
        for dims in half.shapes["test"][:4]:
            inputs = half.make_inputs(dims, seed)
            assert _judged(half.function(*inputs).tolist(), *half.picked_from(inputs))["passed"]
        rows_off = 0
        for dims in full.shapes["test"]:
            inputs = full.make_inputs(dims, seed)
            cut = (torch.tanh(inputs[0]) * inputs[1]).to(torch.bfloat16).float().argmin(-1, keepdim=True)
            stats = _judged(cut.tolist(), *full.picked_from(inputs))
            rows_off += round(stats["rel_err"] * cut.numel())
        caught += rows_off > 0
    assert caught >= 16, caught  # 18 of 20 when written; a check draws each shape twice
