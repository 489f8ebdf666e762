"""The checker: decides whether a kernel file's Triton implementation is correct. Never imports it.

``check_file`` validates the file statically, runs it in a child process (``runner.py``) in its own
process group under a timeout, and compares what the child saved against a float64 reference built
here from the task (or, for a file without a task, the float64 run of the file's own PyTorch function).

Tolerance, per input set: the candidate's relative L2 error against float64 must be at most
``2 * e + FLOOR[dtype]`` and its max abs error at most ``2 * m + FLOOR[dtype] * max|ref|``, where e and m
are PyTorch's own relative L2 and max abs errors at the task's dtype. Relative measures: a zero or
constant output never passes. A float32 task is thus held to float32 accuracy (TF32 fails): PyTorch's own
answer is computed with TF32 off (``policy.full_float32``; cuDNN's convolutions take it by default).

An element over the max abs bound is still fine where the chain is ill-conditioned there: when its error
is at most ``SENSITIVITY_FACTOR`` times how far the float64 reference moves if the inputs alone are
rounded at the task's dtype (``input_sensitivity``). Near a sqrt's zero or after cancellation in a sum,
any implementation's own rounding moves an element that far, PyTorch's included; elsewhere the slack is
a few units of rounding, so a wrong tile, mask or formula still fails.

Last, a file that passed everything else is screened for reading past public APIs (closures, private attributes,
names fetched at run time: ``reflection.py``), the way to the checker's own objects in the child: a cheat.
"""

from __future__ import annotations

import functools
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fusionforge import kernelfile
from fusionforge.gpus import parent_gpu_work
from fusionforge.kernelbench import KIND as KERNELBENCH
from fusionforge.ops import FP8_MAX
from fusionforge.tasks import FusionTask, TaskError, rel_error, unseen_dims, wide_dims
from fusionforge.verify import analysis, builds, indices, reflection
from fusionforge.verify import memcheck as memcheck_tool
from fusionforge.verify.policy import POISON, full_float32
from fusionforge.verify.sandbox import OUTPUT_CAP, run_child
from fusionforge.verify.verdict import Failure, Verdict

FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float64: 1e-10}
SENSITIVITY_FACTOR = 8.0
EDGE_CONDITIONING = 16.0  # how much worse than an ordinary draw PyTorch's own error may be on an edge draw (edge_holds)
SENSITIVITY_SAMPLES = 2
# A file without a task is checked against its own PyTorch function in float64, within twice that function's own
# error at the file's dtype: the own error may be at most this many FLOORs, or the function computes another thing at
# float64 than at its dtype, and the tolerance would be whatever it makes it.
OWN_ERROR_LIMIT = 16.0
SETTING_WORDS = ("backends.", "use_deterministic_algorithms", "set_float32_matmul_precision")
DEFAULT_TIMEOUT = 300.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def input_sets(task: FusionTask | None, device: str, seeds: int) -> list[dict]:
    """Fresh seeds per check. Task: two seeds per test shape (and the bench shape on a GPU).

    The first draw of each shape, and each edge draw, also runs every further combination of autotune configs
    (``every_config``: the child runs the file once per combination, each forced; ``launches.LaunchMonitor``).
    Then one set at an *unseen* shape and one at a *wide* one, drawn for this check (``drawn_set``). At each test
    shape then come two *edge* sets (``FusionTask.make_inputs``): every input near the low end of its range, then
    the first near its high end and the others low; kept where the task stays as well conditioned as on its own
    draws (``edge_holds``), the wrapper called once (``once``: the other sets' second calls test what calls share).

    After the first test shape's last draw (and the first bench shape) comes a *refill*: the same
    tensor objects with new values written into them (the call's scalars kept), so a wrapper that
    answers from anything keyed on its inputs' addresses returns the old result.
    """
    base = secrets.randbelow(2**31)

    def refill(of: int, seed: int) -> dict:
        shown = sets[of]["label"].split(" #")[0]
        return {"label": f"{shown} #refill", "dims": sets[of].get("dims"), "seed": seed,
                "scalar_seed": sets[of]["seed"], "refill_of": of}

    if task is None:
        sets = [{"label": f"get_inputs() seed {base + k}", "seed": base + k, "every_config": k == 0}
                for k in range(seeds)]
        return sets + [refill(0, base + seeds)]
    sets = []
    for i, dims in enumerate(task.shapes["test"]):
        for j in range(2):
            sets.append({"label": f"test[{i}] {_dims(dims)} #{j + 1}", "dims": dims, "seed": base + 2 * i + j,
                         "every_config": j == 0})
        if i == 0:
            sets.append(refill(len(sets) - 1, base + 500))
    if task.edge_draws:
        sets += filter(None, (drawn_set(task, base + 900, unseen_dims, "unseen"),
                              drawn_set(task, base + 950, wide_dims, "wide")))
        for i, dims in enumerate(task.shapes["test"]):
            for edge in (-1, 1):
                seed = base + 700 + 2 * i + (edge > 0)
                if edge_holds(task, dims, seed, edge):
                    sets.append({"label": f"test[{i}] {_dims(dims)} #{'low' if edge < 0 else 'mixed'} edge",
                                 "dims": dims, "seed": seed, "edge": edge, "once": True, "every_config": True})
    if device == "cuda":
        for i, dims in enumerate(task.shapes["bench"]):
            sets.append({"label": f"bench[{i}] {_dims(dims)}", "dims": dims, "seed": base + 1000 + i,
                         "every_config": True})
            if i == 0:
                sets.append(refill(len(sets) - 1, base + 1500))
    return sets


def calls(input_set: dict) -> tuple[str, ...]:
    """The wrapper calls the child makes on an input set (each a record key): a first and a second, or one."""
    return ("triton",) if input_set.get("once") else ("triton", "triton_again")


def drawn_set(task: FusionTask, seed: int, draw: Callable, label: str) -> dict | None:
    """A set at a shape drawn for this check alone (``tasks.unseen_dims``, ``wide_dims``): a file right only at the
    test shapes its TASK lists, or only on rows of up to 1024 values, fails there. Drawn again (up to 3 times) where
    PyTorch's own answer is not finite there."""
    rng = random.Random(seed)
    for _ in range(3):
        dims = draw(task, rng)
        if dims is None:
            continue
        try:
            with torch.no_grad(), full_float32():
                out = task.function(*task.make_inputs(dims, seed))
        except (RuntimeError, ValueError, IndexError):
            continue
        if all(bool(torch.isfinite(t.double()).all()) for t in _tensors(out)):
            return {"label": f"{label} {_dims(dims)}", "dims": dims, "seed": seed, "once": True}
    return None


def edge_holds(task: FusionTask, dims: dict, seed: int, edge: int) -> bool:
    """Whether an edge draw is a fair test: the task stays as well conditioned there as on its own draws. PyTorch at
    the task dtype must stay finite and within EDGE_CONDITIONING times its relative error on an ordinary draw at
    the same shape, or within the dtype's floor and EDGE_CONDITIONING times its unit roundoff or how far the answer
    moves when the inputs alone are rounded (``input_sensitivity``). An edge draw tests a kernel's range (overflow,
    the start of a running extremum), not its arithmetic on a near-constant row whose answer is PyTorch's own
    rounding: a group of one clamped value, normalized, is its computed mean's last bits over sqrt(eps), which no
    input's rounding moves."""

    takes_values = task.arg_reduction is not None or task.quantizer is not None  # judged by the values it takes
    reference = functools.partial(task.values, float64=True) if task.quantizer else task.reference

    def own_error(inputs: list) -> tuple[float, torch.Tensor] | None:
        with torch.no_grad(), full_float32():
            if takes_values:
                own, ref = task.values(inputs), task.values(inputs, float64=True)
            else:
                own, ref = task.function(*inputs), task.reference(inputs)
        if not (bool(torch.isfinite(ref).all()) and bool(torch.isfinite(own).all())):
            return None
        return rel_error(own.double(), ref), ref

    inputs = task.make_inputs(dims, seed, edge=edge)
    edge_error = own_error(inputs)
    if edge_error is None:
        return False
    at_edge, ref = edge_error
    ordinary = own_error(task.make_inputs(dims, seed))
    if at_edge <= EDGE_CONDITIONING * (ordinary[0] if ordinary else 0.0):
        return True
    dtype = getattr(torch, task.dtype)
    if at_edge > FLOOR[dtype]:
        return False
    # a few roundings of the dtype (all of the floor at 16 bits); indices are judged by the values they pick
    if at_edge <= EDGE_CONDITIONING * torch.finfo(dtype).eps / 2 or task.arg_reduction is not None:
        return True
    with torch.no_grad():
        moved = input_sensitivity(reference, inputs, ref, seed, task.accumulates, dtype)
    return at_edge <= EDGE_CONDITIONING * float(moved.norm()) / max(float(ref.norm()), 1e-300)


def _dims(dims: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in dims.items())


def compare(out, ref: torch.Tensor, own: torch.Tensor | None, dtype: torch.dtype,
            sensitivity: Callable[[], torch.Tensor] | None = None, picked_from: tuple | None = None) -> dict:
    """Compare a candidate output with the float64 reference; ``own`` is PyTorch at the task dtype.

    ``sensitivity`` gives the reference's per-element input sensitivity (``input_sensitivity``); it is called only
    when some element is over the max abs bound or the relative error over its tolerance, and then bounds each
    element (SENSITIVITY_FACTOR times its own) and the relative error (that times its norm). Integer outputs:
    indices of an arg reduction are judged by the values they pick, ``picked_from`` = (float64 values, the values at
    the task dtype, whether the largest is picked) (``indices.judge``); other integers must equal the reference.
    """
    if isinstance(ref, Quantized) or type(out) is not torch.Tensor:  # noqa: E721 - a plain tensor, or a quantizer's
        return _compare_outputs(out, ref, dtype)
    stats: dict = {"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}
    if tuple(out.shape) != tuple(ref.shape):
        return {**stats, "passed": False, "kind": "shape"}
    if out.dtype != dtype:
        return {**stats, "passed": False, "kind": "dtype"}
    if not dtype.is_floating_point:
        return {**stats, **_compare_integers(out, ref, picked_from)}
    finite_ref = torch.isfinite(ref)
    bad = ~torch.isfinite(out) & finite_ref
    if bad.any():
        flat = out.reshape(-1)
        int_dtype, pattern = POISON[out.dtype]
        unwritten = int((flat.view(int_dtype) == pattern).sum())
        first = int(bad.reshape(-1).nonzero()[0])
        return {**stats, "passed": False, "kind": "nan", "nonfinite": int(bad.sum()), "unwritten": unwritten,
                "index": _index(first, out.shape), "value": float(flat[first]),
                "expected": float(ref.reshape(-1)[first])}
    diff = (out.double() - ref).where(finite_ref, torch.zeros((), dtype=torch.float64))
    ref_norm = float(ref.where(finite_ref, torch.zeros((), dtype=torch.float64)).norm())
    rel = float(diff.norm()) / max(ref_norm, 1e-300)
    flat_diff = diff.abs().reshape(-1)
    if own is not None:
        own_diff = (own.double() - ref).where(finite_ref, torch.zeros((), dtype=torch.float64))
        own_rel = float(own_diff.norm()) / max(ref_norm, 1e-300)
        own_max = float(own_diff.abs().max()) if own_diff.numel() else 0.0
    else:
        own_rel, own_max = 4 * FLOOR[dtype], 0.0
    ref_max = float(ref.where(finite_ref, torch.zeros((), dtype=torch.float64)).abs().max()) if ref.numel() else 0.0
    tol = 2 * own_rel + FLOOR[dtype]
    abs_tol = 2 * own_max + FLOOR[dtype] * max(ref_max, 1e-30)
    off = flat_diff > abs_tol
    moved = None
    if sensitivity is not None and (bool(off.any()) or rel > tol):
        # the reference's own movement under input rounding bounds each element, and the norm: an ill-conditioned
        # output (a variance of near-constant rows) may differ from PyTorch's by more than PyTorch's own error
        moved = sensitivity().to(flat_diff.device).reshape(-1)
        off &= flat_diff > SENSITIVITY_FACTOR * moved
        tol = max(tol, SENSITIVITY_FACTOR * float(moved.norm()) / max(ref_norm, 1e-300))
    # the worst element: of those off, when any is; else of all
    worst = int((flat_diff * off).argmax() if off.any() else flat_diff.argmax()) if flat_diff.numel() else 0
    stats.update({"passed": rel <= tol and not bool(off.any()), "kind": "mismatch",
                  "rel_err": rel, "tolerance": tol, "max_abs_err": float(flat_diff[worst]) if flat_diff.numel()
                  else 0.0, "max_abs_tolerance": abs_tol, "torch_rel_err": own_rel,
                  "max_abs_index": _index(worst, out.shape),
                  "value": float(out.reshape(-1)[worst]) if out.numel() else 0.0,
                  "expected": float(ref.reshape(-1)[worst]) if ref.numel() else 0.0,
                  "bad_fraction": float(off.double().mean()) if flat_diff.numel() else 0.0})
    if moved is not None:  # the worst element's own bound: SENSITIVITY_FACTOR x its input sensitivity
        stats["rounding_bound"] = SENSITIVITY_FACTOR * float(moved[worst])
    return stats


def _compare_outputs(out, ref, dtype) -> dict:
    """A quantizer's values and scales (``ref`` its ``Quantized``), or something not a plain tensor where ``ref`` is
    one: ``out`` of another count or kind fails as ``outputs``."""
    refs = (ref.values, ref.scales) if isinstance(ref, Quantized) else (ref,)
    got = out if isinstance(out, tuple) else (out,)
    if not isinstance(ref, Quantized) or len(got) != len(refs) or any(
            type(t) is not torch.Tensor for t in got):  # noqa: E721 - plain tensors in a plain tuple
        return {"passed": False, "kind": "outputs", "count": len(got), "expected_count": len(refs),
                "type": type(out).__module__ + "." + type(out).__qualname__}
    return _compare_quantized(got, ref, dtype)


@dataclass(frozen=True)
class Quantized:
    """What a quantizer's (values, scales) are judged against: the chain's values before quantization in float64
    ([..., N]) and their float64 scales; PyTorch's at the task dtype (its values before quantization and its
    scales); the task dtype's unit roundoff."""

    values: torch.Tensor
    scales: torch.Tensor
    own_values: torch.Tensor
    own_scales: torch.Tensor
    roundoff: float

    def to(self, device) -> Quantized:
        return Quantized(*(t.to(device) for t in (self.values, self.scales, self.own_values, self.own_scales)),
                         self.roundoff)


def quantized_reference(task: FusionTask, inputs: list) -> Quantized:
    """The ``Quantized`` reference of a quantizer's task on ``inputs``."""
    with torch.no_grad():
        scales = task.reference(inputs)[1]
        with full_float32():
            own_values, own_scales = task.values(inputs), task.function(*inputs)[1]
    return Quantized(task.values(inputs, float64=True), scales.double(), own_values.double(), own_scales.double(),
                     torch.finfo(getattr(torch, task.dtype)).eps / 2)


# A kernel's own relative error, beyond twice PyTorch's at the same element: two roundings of the task's dtype (a
# value stored once at it between kernels), at least float32's floor (an fp32 chain's ulps).
FP8_OWN_ROUNDINGS = 2.0
# the fraction of float8 values that may land on a neighbour of the reference's rounding where no rounding of the
# chain explains it (far from the boundary between the two values)
FP8_UNEXPLAINED_FLOOR = 0.01


def _fp8_spacing(magnitude: torch.Tensor) -> torch.Tensor:
    """The gap from an e4m3 magnitude to the next larger one: 2^(e - 3) in the binade [2^e, 2^(e + 1)), 2^-9 below
    2^-6 (subnormals). 2^e is read exactly: frexp gives m = f 2^(e + 1) with f in [0.5, 1), and m / (2 f) is exact
    (a GPU's log2 of 64 came out under 6, and its floor took 64 to the binade below)."""
    normal = magnitude.clamp_min(2.0**-6)
    fraction, _ = torch.frexp(normal)
    return torch.where(magnitude < 2.0**-6, torch.full_like(magnitude, 2.0**-9), normal / (16 * fraction))


def _round_to_fp8(values: torch.Tensor) -> torch.Tensor:
    """float64 values in [-448, 448] rounded once to e4m3, to nearest even, in float64 on any device (a conversion
    through float32 would round twice)."""
    spacing = _fp8_spacing(values.abs())
    return torch.round(values / spacing) * spacing


def _compare_quantized(got: tuple, ref: Quantized, dtypes: tuple) -> dict:
    """A quantizer's outputs. The scales, row by row: within twice PyTorch's error there plus the kernel's own
    (``FP8_OWN_ROUNDINGS`` roundings of the task dtype, at least float32's FLOOR). The values, against the float64
    values scaled by the kernel's own scales and rounded once to e4m3 (its scales are judged apart): each within one
    e4m3 step, more where PyTorch is further off; and on the far side of a rounding boundary only where the kernel's
    error could have carried the value across (the boundary within that error of the float64 value), but for
    FP8_UNEXPLAINED_FLOOR of them: a kernel rounding toward zero, or biased, moves values far from any boundary."""
    values, scales = got
    for k, (tensor, expected, dtype) in enumerate(zip(got, (ref.values, ref.scales), dtypes)):
        stats = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).replace("torch.", ""), "output": k}
        if tuple(tensor.shape) != tuple(expected.shape):
            return {**stats, "passed": False, "kind": "shape"}
        if tensor.dtype != dtype:
            return {**stats, "passed": False, "kind": "dtype"}
    relative = max(FP8_OWN_ROUNDINGS * ref.roundoff, FLOOR[torch.float32])
    own_scale_error = (ref.own_scales - ref.scales).abs()
    scale_bound = 2 * own_scale_error + relative * ref.scales.abs()
    scale_stats = _elementwise(scales, ref.scales, scale_bound)
    if not scale_stats["passed"]:
        return {**scale_stats, "output": 1}
    scaled = (ref.values / scales.double()).clamp(-FP8_MAX, FP8_MAX)  # the kernel's own scales
    target = _round_to_fp8(scaled)
    got_values = values.double()
    own_error = ((ref.own_values - ref.values).abs() / ref.values.abs().clamp_min(1e-300)).nan_to_num(0.0)
    carried = scaled.abs() * (2 * own_error + relative)  # how far the kernel's error may move a value
    step = _fp8_spacing(torch.minimum(got_values.abs(), target.abs()).nan_to_num(0.0))
    stats = _elementwise(values, target, step + 2 * scaled.abs() * own_error)
    if stats["kind"] == "nan":
        return {**stats, "output": 0}
    # the boundary on the float64 value's side of its rounding, half way to the neighbour on that side: the next
    # larger magnitude, or the next smaller (half as far below a normal binade's first value, 2^e > 2^-6)
    magnitude = target.abs()
    spacing = _fp8_spacing(magnitude)
    binade_start = (magnitude == spacing * 8) & (magnitude > 2.0**-6)
    gap = torch.where((scaled.abs() < magnitude) & binade_start, spacing / 2, spacing)
    to_boundary = gap / 2 - (scaled - target).abs()
    unexplained = (got_values != target) & (to_boundary > carried)
    fraction = float(unexplained.double().mean()) if unexplained.numel() else 0.0
    stats.update({"rule": "fp8 step", "output": 0, "unexplained_fraction": fraction,
                  "unexplained_limit": FP8_UNEXPLAINED_FLOOR,
                  "passed": stats["passed"] and fraction <= FP8_UNEXPLAINED_FLOOR})
    return stats


def _elementwise(out: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> dict:
    """Each element of ``out`` within its ``bound`` of ``ref`` (float64): the worst one's figures; a non-finite
    one fails as ``nan`` (with the count of elements still holding the poison of fresh allocations)."""
    got = out.double()
    stats = {"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}
    bad = ~torch.isfinite(got.reshape(-1))
    if bad.any():
        int_dtype, pattern = POISON[out.dtype]
        first = int(bad.nonzero()[0])
        return {**stats, "passed": False, "kind": "nan", "nonfinite": int(bad.sum()),
                "unwritten": int((out.reshape(-1).view(int_dtype) == pattern).sum()), "index": _index(first, out.shape),
                "value": float(got.reshape(-1)[first]), "expected": float(ref.reshape(-1)[first])}
    diff = (got - ref).abs().reshape(-1)
    off = diff > bound.reshape(-1)
    worst = int((diff * off).argmax() if off.any() else diff.argmax()) if diff.numel() else 0
    ref_norm = max(float(ref.norm()), 1e-300)
    return {**stats, "passed": not bool(off.any()),
            "kind": "mismatch", "rel_err": float(diff.norm()) / ref_norm,
            "tolerance": float(bound.norm()) / ref_norm, "max_abs_err": float(diff[worst]) if diff.numel() else 0.0,
            "max_abs_tolerance": float(bound.reshape(-1)[worst]) if diff.numel() else 0.0,
            "max_abs_index": _index(worst, got.shape), "value": float(got.reshape(-1)[worst]) if diff.numel() else 0.0,
            "expected": float(ref.reshape(-1)[worst]) if diff.numel() else 0.0,
            "bad_fraction": float(off.double().mean()) if diff.numel() else 0.0}


def _compare_integers(out: torch.Tensor, ref: torch.Tensor, picked_from: tuple | None) -> dict:
    """Integer outputs: an arg reduction's indices by the value they pick, other integers exactly."""
    if out.numel() == 0:
        return {"passed": True, "kind": "mismatch", "rel_err": 0.0, "tolerance": 0.0, "max_abs_err": 0.0,
                "max_abs_tolerance": 0.0, "max_abs_index": [], "value": 0.0, "expected": 0.0, "bad_fraction": 0.0}
    if picked_from is not None:
        values, own_values, largest = picked_from
        stats = indices.judge(out, ref, values, own_values, largest)
        stats["unwritten"] = int((out == POISON[torch.int64][1]).sum())
    else:
        off = (out != ref.to(out.device, out.dtype)).reshape(-1)
        worst = int(off.to(torch.uint8).argmax())
        diff = (out.reshape(-1)[worst].double() - ref.reshape(-1)[worst].double()).abs()
        stats = {"passed": not bool(off.any()), "kind": "mismatch", "rule": "exact",
                 "rel_err": float(off.double().mean()), "tolerance": 0.0, "max_abs_err": float(diff),
                 "max_abs_tolerance": 0.0, "worst": worst, "value": float(out.reshape(-1)[worst]),
                 "expected": float(ref.reshape(-1)[worst]), "bad_fraction": float(off.double().mean())}
    stats["max_abs_index"] = _index(stats.pop("worst"), out.shape)
    return stats


def input_sensitivity(reference: Callable[..., torch.Tensor], inputs: list, ref: torch.Tensor,
                      seed: int = 0, accumulates: bool = False, working: torch.dtype | None = None) -> torch.Tensor:
    """Per element, how far the float64 reference moves when the inputs alone are rounded: the max over
    ``SENSITIVITY_SAMPLES`` draws of |reference(x (1 + u)) - ref|, every floating input tensor x scaled
    elementwise by u uniform in [-eps, eps], eps its dtype's unit roundoff (2^-24 for float32). Large
    where the chain is ill-conditioned (sqrt near zero, a sum that cancels), a few ulps elsewhere. A task
    that ``accumulates`` (a cumsum) also rounds its running sums in each draw (``FusionTask.reference``).
    8-bit float inputs take the ``working`` dtype's roundoff (the task's): their values are exact, and what
    is computed from them rounds at the task's dtype (2^-4, an e4m3 value's own roundoff, would let a kernel
    off by a third pass)."""
    moved = torch.zeros_like(ref)
    for sample in range(SENSITIVITY_SAMPLES):
        generator = None
        perturbed = []
        for value in inputs:
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if generator is None:
                    generator = torch.Generator(device=value.device).manual_seed(seed + sample)
                narrow = value.element_size() == 1 and working is not None
                eps = torch.finfo(working if narrow else value.dtype).eps / 2
                u = torch.rand(value.shape, generator=generator, device=value.device, dtype=torch.float64)
                value = value.double() * (1 + eps * (2 * u - 1))
            perturbed.append(value)
        with torch.no_grad():
            value = reference(perturbed, accumulation=generator) if accumulates else reference(perturbed)
            moved = torch.maximum(moved, (value.to(ref.device) - ref).abs().nan_to_num(0.0))
    return moved


def _index(flat: int, shape) -> list[int]:
    index = []
    for size in reversed(tuple(shape)):
        index.append(flat % size if size else 0)
        flat //= max(size, 1)
    return list(reversed(index))


def _tensors(value) -> tuple:
    """``value`` as a tuple: several outputs as they are (a quantizer's reference values and scales), one as a tuple
    of one."""
    if isinstance(value, Quantized):
        return value.values, value.scales
    return value if isinstance(value, tuple) else (value,)


def _load(saved: dict | None):
    """A saved return value: a tensor, a tuple (of tensors, or None for an item that is none), or None."""
    if saved and saved.get("type") == "builtins.tuple" and "items" in saved:
        return tuple(_load(item) for item in saved["items"])
    if not saved or saved.get("type") != "torch.Tensor":
        return None
    return torch.load(saved["file"], weights_only=True, map_location="cpu")


def compare_on(device: str, out, ref: torch.Tensor, own: torch.Tensor | None, dtype: torch.dtype,
               sensitivity: Callable[[], torch.Tensor] | None = None, picked_from: tuple | None = None) -> dict:
    """``compare`` on ``device`` (a bench shape's float64 compare takes seconds of CPU, milliseconds of GPU;
    on the calling thread's GPU, no timing beside it), on the CPU when the GPU has no memory left for it."""
    def to(value, where: str):
        if isinstance(value, Quantized):
            return value.to(where)
        if isinstance(value, tuple):
            return tuple(to(item, where) for item in value)
        return value.to(where) if isinstance(value, torch.Tensor) else value

    with parent_gpu_work(device):
        try:
            moved = picked_from and (picked_from[0].to(device), picked_from[1].to(device), picked_from[2])
            return compare(*(to(t, device) for t in (out, ref, own)), dtype, sensitivity, moved)
        except torch.OutOfMemoryError:
            moved = picked_from and (picked_from[0].cpu(), picked_from[1].cpu(), picked_from[2])
            return compare(*(to(t, "cpu") for t in (out, ref, own)), dtype, sensitivity, moved)


def _failure_from_stats(stats: dict, implementation: str, label: str, context: dict) -> Failure:
    if stats["kind"] == "outputs" and stats["expected_count"] == 1:
        return analysis.not_a_tensor(implementation, stats["type"], label)
    if stats["kind"] == "outputs":
        got = (f"a tuple of {stats['count']}" if stats["type"] == "builtins.tuple" else f"a {stats['type']}")
        return analysis.outputs_failure(got, context["expected_shape"], context["expected_dtype"], implementation,
                                        label)
    k = stats.get("output")
    if k is not None and isinstance(context["expected_dtype"], list):  # one of several outputs: its own context
        count = len(context["expected_dtype"])
        context = {**context, **{key: context[key][k] for key in ("expected_shape", "expected_dtype", "dtype")}}
        failure = _failure_from_stats({key: value for key, value in stats.items() if key != "output"},
                                      implementation, label, context)
        failure.message = f"output {k + 1} of {count}: {failure.message}"
        return failure
    if stats["kind"] == "shape":
        return analysis.shape_failure(stats["shape"], context["expected_shape"], implementation, label)
    if stats["kind"] == "dtype":
        return analysis.dtype_failure(stats["dtype"], context["expected_dtype"], implementation, label)
    if stats["kind"] == "nan":
        failure = analysis.nan_failure(stats["nonfinite"], stats["unwritten"], stats["index"], stats["value"],
                                       stats["expected"], implementation, label)
        if context.get("reversed"):
            failure.root_cause = ("On the second call only, whose programs ran from the last id to the first (a GPU "
                                  "runs them in any order, many at once; a launch that makes an atomic ran them in "
                                  "lockstep): programs may read what others of the same launch write, a race on a "
                                  f"GPU. {failure.root_cause}")
        return failure
    return analysis.mismatch_failure(stats, implementation, label, context)


class _Run:
    """Evaluates the child's records against references, in input-set order."""

    def __init__(self, kf: kernelfile.KernelFile, task: FusionTask | None, device: str, sets: list[dict]):
        self.kf, self.task, self.device, self.sets = kf, task, device, sets
        self.path = str(kf.path)
        self.checks: list[dict] = []
        self.kernels: list[str] = []
        self.passed_dims: list[str] = []

    def line_of(self, error: dict) -> int | None:
        lines = [f["line"] for f in error.get("frames", []) if f["file"] == self.path]
        if error.get("compile_line") and self.kernels:
            node = self.kf.functions.get(self.kernels[-1])
            if node is not None:
                return node.lineno + error["compile_line"] - 1
        return lines[-1] if lines else None

    def implementation_of(self, line: int | None) -> str:
        section = self.kf.section_of(line) if line else None
        return {"PYTHON": "PyTorch", "TRITON": "Triton"}.get(section, "Triton")

    def reference(self, k: int, record: dict):
        """(float64 reference, PyTorch at the dtype, expected dtype, its input sensitivity or None, what an arg
        reduction picks from or None) for input set k; the sensitivity (``input_sensitivity``) is computed only
        when asked for."""
        if self.task is not None:
            spec = self.sets[k]
            with torch.no_grad(), parent_gpu_work(self.device):
                inputs = self.task.make_inputs(spec["dims"], spec["seed"], self.device, spec.get("scalar_seed"),
                                               spec.get("edge", 0))
                if self.task.quantizer:  # values and scales, each by its rule (``Quantized``)
                    return quantized_reference(self.task, inputs), None, self.task.output_dtypes, None, None
                ref = self.task.reference(inputs)
                with full_float32():
                    own = self.task.function(*inputs)
                    picked_from = self.task.picked_from(inputs)
            return ref, own, self.task.output_dtypes[0], \
                functools.cache(functools.partial(input_sensitivity, self.task.reference, inputs, ref, spec["seed"],
                                                  self.task.accumulates, getattr(torch, self.task.dtype))), picked_from
        own = _load(record.get("pytorch"))
        ref = _load(record.get("reference"))
        if own is None or isinstance(own, tuple):  # several outputs need a task (their rules are the task's)
            return None, None, None, None, None
        if ref is None or ref.shape != own.shape:
            return own.double(), None, own.dtype, None, None
        return ref.double(), own, own.dtype, None, None

    def evaluate(self, result: dict) -> Failure | None:
        for record in result["sets"]:  # the file's kernels, each named once, in the order first launched
            for name, file in record.get("launches", []):
                if file == self.path and name not in self.kernels:
                    self.kernels.append(name)
        for event in result.get("import_events", []):
            return self.locate(analysis.provenance_failure(event, "import"))
        for event in result.get("unwatched_events", []):  # in its PyTorch function, a finalizer, a hook of its own
            return self.locate(analysis.provenance_failure(event, None))
        ran = [r for r in result["sets"] if "triton" in r]
        if ran and not self.kernels:
            return self.locate(analysis.cheat_failure("no_launch", "", ran[0]["label"]))
        for k, record in enumerate(result["sets"]):
            failure = self.evaluate_set(k, record, record["label"])
            if failure:
                return self.locate(failure)
        failure = value_dependence(result["sets"])
        if failure:
            return self.locate(failure)
        for k, record in enumerate(result["sets"]):
            if not all(record.get(f"{key}_launches") for key in calls(self.sets[k])):
                return self.locate(analysis.cheat_failure("memoized", "", record["label"]))
        ghost = result.get("ghost")
        if ghost and ghost.get("ghost"):
            out = _load(ghost["ghost"])
            ref, own, dtype, _, picked_from = self.reference(len(self.sets) - 1, ghost)
            if out is not None and ref is not None and compare_on(self.device, out, ref, own, dtype,
                                                                  picked_from=picked_from)["passed"]:
                return self.locate(analysis.cheat_failure("ghost", "", ghost["label"]))
        return None

    def locate(self, failure: Failure) -> Failure:
        """Point failures found by testing at the code that produced them; PyTorch's settings changed, at the first
        line that names one (``policy.torch_settings``)."""
        if failure.line is None and "changes PyTorch's settings" in failure.message:
            failure.line = next((k for k, text in enumerate(self.kf.text.splitlines(), 1)
                                 if any(word in text for word in SETTING_WORDS)), None)
        if failure.line is None and failure.implementation != "Harness":
            name = ("fused_kernel_pytorch" if failure.implementation == "PyTorch"
                    else "fused_kernel_triton_wrapper" if failure.category in ("cheat", "mutation")
                    else (self.kernels[0] if self.kernels else "fused_kernel_triton_wrapper"))
            node = self.kf.functions.get(name)
            failure.line = node.lineno if node else None
        return failure

    def not_returned(self, implementation: str, saved: dict, label: str) -> Failure:
        """The failure of a call that returned no tensor (nor a tuple) where the task's outputs were expected."""
        outputs = self.task.outputs if self.task is not None else []
        if len(outputs) > 1:
            return analysis.outputs_failure(f"a {saved.get('type')}", [list(shape) for shape, _ in outputs],
                                            [dtype for _, dtype in outputs], implementation, label)
        return analysis.not_a_tensor(implementation, saved.get("type"), label)

    def error_failure(self, record: dict, label: str) -> Failure:
        """The failure of a call that raised (``record["error"]``), or of a rule it broke before."""
        for key in ("triton", "triton_again"):  # a rule broken before the error (a refused walk) is the verdict
            for problem in record.get(f"{key}_problems", []):
                if not problem["kind"].startswith("output_"):
                    return analysis.provenance_failure(problem, label)
        error = record["error"]
        line = self.line_of(error)
        if (error.get("details") or {}).get("race"):
            return analysis.race_failure(error["details"], error["details"]["message"], line, label)
        if (error.get("details") or {}).get("access"):
            return analysis.memory_failure(error["details"], error["details"].get("message"), line, label)
        compile_error = (error["module"].startswith("triton") or error.get("compile_line") is not None
                         or _reading_kernel_source(error))
        failure = analysis.error_failure(error, self.implementation_of(line) if line else "Triton", line,
                                         label, compile_error)
        if error["phase"] == "inputs":
            failure = analysis.error_failure(error, "Harness" if self.task else "Both", line, label, False)
        if "pytorch_error" in record:
            failure.implementation = "Both"
        return failure

    def evaluate_config(self, forced: dict, label: str, compared: Callable[[torch.Tensor], dict],
                        context: dict) -> Failure | None:
        """One further run of the wrapper, its programs reversed (a forced config, the other lockstep schedule:
        ``runner.reruns``), held to the rules and tolerance of the first call."""
        label = ", ".join([label, *([f"{forced['config']} forced"] if forced.get("config") else []),
                           *(["lockstep with the earliest arrival first"] if forced.get("schedule") else [])])
        if "error" in forced:
            return self.error_failure(forced, label)
        if forced.get("foreign_ops"):
            return analysis.cheat_failure("torch_ops", ", ".join(forced["foreign_ops"]), label)
        for problem in forced.get("triton_problems", []):
            return analysis.provenance_failure(problem, label)
        out = _load(forced.get("triton"))
        if out is None:
            return self.not_returned("Triton", forced.get("triton", {}), label)
        stats = compared(out)
        if not stats["passed"]:
            return _failure_from_stats(stats, "Triton", label, {**context, "config": forced.get("config"),
                                                                "second_call": True, "reversed": self.device == "cpu"})
        return None

    def evaluate_set(self, k: int, record: dict, label: str) -> Failure | None:
        check: dict = {"label": label, "passed": False}
        self.checks.append(check)
        if "error" in record:
            failure = self.error_failure(record, label)
            check["note"] = failure.message
            return failure
        if "pytorch_error" in record:
            error = record["pytorch_error"]
            failure = analysis.error_failure(error, "PyTorch", self.line_of(error), label, False)
            check["note"] = failure.message
            return failure
        ref, own, dtype, sensitivity, picked_from = self.reference(k, record)
        if ref is None:
            return analysis.harness_failure("no reference could be computed" if self.task else
                                            "no reference could be computed: a file without a task is checked "
                                            "against its fused_kernel_pytorch, which must return one tensor")
        if self.task is not None:
            with parent_gpu_work(self.device):
                finite = all(bool(torch.isfinite(t).all()) for t in _tensors(ref)) and (
                    picked_from is None or bool(torch.isfinite(picked_from[0]).all()))
            if not finite:
                return analysis.harness_failure(f"the task's reference is not finite at {label}")
        context = {"expected_shape": [list(t.shape) for t in _tensors(ref)],
                   "expected_dtype": [str(t).replace("torch.", "") for t in _tensors(dtype)]}
        if not isinstance(ref, tuple | Quantized):
            context = {key: value[0] for key, value in context.items()}
        context["dtype"] = context["expected_dtype"]

        if self.task is None and own is not None and dtype in FLOOR:
            with parent_gpu_work(self.device):
                own_rel = float((own.double() - ref).norm()) / max(float(ref.norm()), 1e-300)
            if not own_rel <= OWN_ERROR_LIMIT * FLOOR[dtype]:
                check["note"] = f"PyTorch at {context['dtype']} is {own_rel:.3g} from itself at float64"
                return analysis.inconsistent_pytorch_failure(own_rel, OWN_ERROR_LIMIT * FLOOR[dtype],
                                                             context["dtype"], label)
        if record.get("foreign_ops"):
            return analysis.cheat_failure("torch_ops", ", ".join(record["foreign_ops"]), label)
        for key in calls(self.sets[k]):
            for problem in record.get(f"{key}_problems", []):
                if problem["kind"] != "output_not_kernel":
                    return analysis.provenance_failure(problem, label)
        if record.get("mutated"):
            names = [self.task.arg_names[i] if self.task else f"argument {i}" for i in record["mutated"]]
            return analysis.mutation_failure(names, label)

        pytorch_failure = None
        if self.task is not None:
            mine = _load(record.get("pytorch"))
            if mine is None:
                pytorch_failure = self.not_returned("PyTorch", record["pytorch"], label)
            else:
                stats = compare_on(self.device, mine, ref, own, dtype, sensitivity, picked_from)
                if not stats["passed"]:
                    pytorch_failure = _failure_from_stats(stats, "PyTorch", label, context)

        for key in calls(self.sets[k]):
            second = key == "triton_again"
            out = _load(record.get(key))
            if out is None:
                failure = self.not_returned("Triton", record.get(key, {}), label)
                return _both(failure, pytorch_failure)
            stats = compare_on(self.device, out, ref, own, dtype, sensitivity, picked_from)
            if not second:
                check.update({k: v for k, v in stats.items() if k not in ("kind",)})
            if not stats["passed"]:
                dims = label.split(" #")[0]
                context = {**context, "second_call": second, "reversed": second and self.device == "cpu",
                           "edge": self.sets[k].get("edge"),
                           "refill": self.sets[k].get("refill_of") is not None,
                           "stale": dims if dims in self.passed_dims else None,
                           "shape_dependent": dims if self.passed_dims and dims not in self.passed_dims else None}
                check["passed"] = False
                return _both(_failure_from_stats(stats, "Triton", label, context), pytorch_failure)
        for forced in record.get("configs", []):
            failure = self.evaluate_config(
                forced, label, lambda out: compare_on(self.device, out, ref, own, dtype, sensitivity, picked_from),
                context)
            if failure:
                check["passed"] = False
                return _both(failure, pytorch_failure)
        if pytorch_failure:
            check["note"] = pytorch_failure.message
            return pytorch_failure
        for key in calls(self.sets[k]):
            for problem in record.get(f"{key}_problems", []):
                return analysis.provenance_failure(problem, label)
        check["passed"] = True
        self.passed_dims.append(label.split(" #")[0])
        return None


SOURCE_READING = frozenset({"cache_key", "record_reference", "_update_hash", "visit_Name", "visit_Attribute"})


def _reading_kernel_source(error: dict) -> bool:
    """Whether the error came from Triton reading a kernel's source before compiling it (its dependency finder
    refuses, with a RuntimeError, a plain Python function that a kernel calls)."""
    return any(frame["function"] in SOURCE_READING
               and frame["file"].replace("\\", "/").endswith("triton/runtime/jit.py")
               for frame in error.get("frames", []))


def value_dependence(records: list[dict]) -> Failure | None:
    """The wrapper's host side must be value-blind: calls with the same tensor layouts and scalar inputs
    must leave the same trace (ops and their scalar arguments, launches with theirs and their grids)."""
    first: dict[str, tuple[str, list[str]]] = {}
    for record in records:
        for key in ("triton", "triton_again"):
            trace = record.get(f"{key}_trace")
            if trace is None or "call_key" not in record:
                continue
            call = f"{record['label']} ({'first' if key == 'triton' else 'second'} call)"
            if record["call_key"] not in first:
                first[record["call_key"]] = (call, trace)
                continue
            earlier, expected = first[record["call_key"]]
            if trace != expected:
                at = next((i for i, (a, b) in enumerate(zip(expected, trace)) if a != b),
                          min(len(expected), len(trace)))
                one, two = (t[at] if at < len(t) else "(nothing)" for t in (expected, trace))
                detail = (f"{earlier} and {call} differ only in tensor values, yet step {at + 1} of the wrapper "
                          f"differs: {_difference(one, two)}")
                return analysis.provenance_failure({"kind": "value_dependent", "detail": detail}, record["label"])
    return None


def _difference(one: str, two: str, width: int = 60) -> str:
    """Two trace lines shown around where they first differ."""
    at = next((i for i, (a, b) in enumerate(zip(one, two)) if a != b), min(len(one), len(two)))
    start = max(0, at - width)

    def part(line: str) -> str:
        return ("..." if start else "") + line[start:at + width] + ("..." if len(line) > at + width else "")

    return f"{part(one)!r} against {part(two)!r}"


def _both(triton_failure: Failure, pytorch_failure: Failure | None) -> Failure:
    if pytorch_failure is not None:
        triton_failure.implementation = "Both"
        triton_failure.message += f"; and the PyTorch implementation: {pytorch_failure.message}"
    return triton_failure


def _memcheck_failure(report: str, launches: list[dict], path: Path) -> Failure | None:
    """The first invalid access compute-sanitizer reported, named like the interpreter's bounds checks."""
    errors = memcheck_tool.parse(report)
    if not errors:
        return None
    first = errors[0]
    details = memcheck_tool.details(first, launches, memcheck_tool.total_errors(report) or len(errors))
    line = first.get("line") if first.get("file") and Path(first["file"]).name == path.name else None
    return analysis.memory_failure(details, None, line, None)


def _task_difference(file_task: dict, task: FusionTask) -> str | None:
    given = task.to_dict()
    for key in ("signature", "shapes", "dtype"):
        if file_task.get(key) != given.get(key):
            return f"{key} differs ({file_task.get(key)!r} in the file, {given.get(key)!r} handed out)"
    return None


def check_file(path: str | Path, task: FusionTask | None = None, device: str | None = None,
               timeout: float = DEFAULT_TIMEOUT, seeds: int = 3, memcheck: bool = False,
               build_target: str | None = None) -> Verdict:
    """Check one kernel file. ``task``: the task handed out (else the file's own TASK, else get_inputs).

    ``memcheck``: on a GPU, run the child under compute-sanitizer (``memcheck.py``); RuntimeError when it
    is not installed. ``build_target``: on the CPU, a file that passes is compiled for that GPU at the bench shape
    (``builds.py``), and fails as it would there when a kernel cannot fit its shared memory; None: the target of
    $FUSIONFORGE_BUILD_TARGET, else sm_90; "none": not compiled.
    """
    start = time.perf_counter()
    path = Path(path).resolve()
    device = device or default_device()
    verdict = Verdict(file=str(path), device=device)

    def done(failure: Failure | None) -> Verdict:
        verdict.failure = failure
        verdict.seconds = time.perf_counter() - start
        return verdict

    kf = kernelfile.parse(path)
    if not kf.ok:
        problem = kf.problems[0]
        implementation = kf.implementation_at(problem.line)
        if "fused_kernel_pytorch" in problem.message and "wrapper" not in problem.message:
            implementation = "PyTorch"
        elif any(w in problem.message for w in ("wrapper", "fused_kernel_triton")):
            implementation = "Triton"
        # the first problem's line is the failure's own; the others say theirs
        message = "; ".join([problem.message] + [p.message + (f" (line {p.line})" if p.line else "")
                                                 for p in kf.problems[1:5]])
        return done(analysis.format_problem(message if problem.category == "format" else problem.message,
                                            problem.line, problem.category, implementation))
    if task is not None and kf.task is not None:
        difference = _task_difference(kf.task, task)
        if difference:
            return done(analysis.task_mismatch(difference))
    if task is None and kf.task is not None:
        if kf.task.get("kind") == KERNELBENCH:  # its reference would run the file's code (the problem) here
            return done(analysis.format_problem(
                "a KernelBench task is not taken from the file's own TASK: give the task "
                "(--task TASK.json from `fusionforge task --from-kernelbench`)", None, "format", "Both"))
        try:
            task = FusionTask.from_dict(kf.task)
        except (TaskError, KeyError) as e:
            return done(analysis.format_problem(f"TASK is malformed: {e}", None, "format", "Both"))
    if task is not None:
        verdict.task_id = task.id
        params = [a.arg for a in kf.functions["fused_kernel_pytorch"].args.args]
        if params != task.arg_names:
            return done(analysis.format_problem(
                f"fused_kernel_pytorch({', '.join(params)}) must take the task's inputs in order: "
                f"({', '.join(task.arg_names)})", kf.functions["fused_kernel_pytorch"].lineno, "format", "Both"))
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA GPU is available")
    sanitizer = None
    if memcheck:
        sanitizer = memcheck_tool.sanitizer()
        if device != "cuda":
            raise RuntimeError("--memcheck runs the file under compute-sanitizer and needs a CUDA GPU; on the CPU "
                               "every load and store is bounds-checked anyway")
        if sanitizer is None:
            raise RuntimeError("--memcheck needs NVIDIA's compute-sanitizer (part of the CUDA toolkit) on the PATH "
                               "or in $CUDA_HOME/bin")

    sets = input_sets(task, device, seeds)
    with tempfile.TemporaryDirectory(prefix="fusionforge-check-") as scratch:
        ghost_set = {**sets[0], "label": "ghost replay (launches skipped)", "seed": sets[-1]["seed"] + 7919}
        request = {"file": str(path), "device": device, "task": task.to_dict() if task else None,
                   "input_sets": sets, "ghost_set": ghost_set, "out_dir": scratch, "log_launches": memcheck}
        log = Path(scratch) / "memcheck.log"
        prefix = memcheck_tool.command(sanitizer, log) if sanitizer else None
        result, returncode, tail = run_child("fusionforge.verify.runner", request, Path(scratch), device, timeout,
                                             prefix, memcheck_tool.ENV if sanitizer else None)
        verdict.output_tail = tail
        if sanitizer and log.exists():
            report = log.read_text(errors="replace")[:OUTPUT_CAP * 4]
            verdict.output_tail = report + "\n" + tail
            launches = memcheck_tool.read_launch_log(Path(scratch) / memcheck_tool.LAUNCH_LOG)
            failure = _memcheck_failure(report, launches, path)
            if failure is not None:
                return done(failure)
        if result is not None and "forged" in result:
            return done(analysis.provenance_failure({"kind": "forged", "detail": result["forged"]}, None))
        if returncode is None:
            return done(analysis.timeout_failure(timeout))
        if result is None:
            return done(analysis.crash_failure(returncode, tail))
        verdict.phases = result.get("phases") or {}
        if result.get("import_error") and result.get("import_events"):  # a refused walk or scan at import
            return done(analysis.provenance_failure(result["import_events"][0], "import"))
        if result.get("import_error"):
            error = result["import_error"]
            lines = [f["line"] for f in error["frames"] if f["file"] == str(path)]
            return done(analysis.import_failure(error, lines[-1] if lines else None))
        run = _Run(kf, task, device, sets + [ghost_set])
        failure = run.evaluate(result)
        verdict.checks, verdict.kernels = run.checks, run.kernels
    reaching = reflection.reflective_access(kf.tree, [kf.sections[name] for name in ("PYTHON", "TRITON")
                                                      if name in kf.sections])
    if failure is None and reaching:
        failure = analysis.reflection_failure(reaching, kf.implementation_at(reaching[0][0]))
    target = builds.target_for(build_target)
    if failure is None and device == "cpu" and target is not None:
        failure = builds.build_failure(path, task, target, timeout)
    return done(failure)
