"""The op catalog: every operation a fusion task can contain, in one table.

Everything else reads this table: the task generator (which ops exist, their parameters and
shape rules), the reference computation and the generated PyTorch code (the ``torch`` template),
the Triton code generator (the ``triton`` template of pointwise ops), and the roofline (the cost).
Adding an op is adding one entry here plus its tests.

Conventions
-----------
* A chain works on one running value ``h``. Shapes are symbolic tuples of dimension names:
  ``("M", "N")`` or ``("B", "M", "N")``; a reduction with keepdim leaves the literal ``1``.
  Row reductions and last-dim normalizations act on the last dimension. Channel normalizations
  (group/batch/instance norm) follow PyTorch: the channel is dimension 1.
* Templates are Python format strings: ``{x}`` is the running value, ``{<param>}`` a parameter,
  ``{<stem>}`` an extra input. Triton templates work on fp32 values.
* Guarded forms keep random inputs finite: ``log(|x| + shift)``, ``sqrt(|x|)``,
  ``1 / (|x| + shift)``; divisors are drawn away from zero.
* Scans (cumsum, ...) run along the last dimension and keep the shape. Losses end a chain: they read
  h as [rows, classes] (or values) and a target, and give a loss per row or one mean. Arg reductions
  (argmax, argmin) end a chain too: an int64 index per row of the last dimension.
* An image-like value is ``("B", "C", "H", "W")``: it takes pointwise ops (broadcast against a scalar or a
  full tensor), spatial reductions over H and W, which leave [B, C] (or [B, C, 1, 1]), and 2D pooling over
  windows of its H x W planes, which leaves ``("B", "C", "P", "Q")``: P and Q are the pooled H and W
  (``pooled_size``), dims of their own in every shape of the task.
* Gathers start a chain, as a matmul does: an embedding lookup's ``ids`` [M] (int64) pick rows of a ``weight``
  table [V, N], giving [M, N]; a gather along the last dimension picks N values of each row of ``x`` [M, K] (by
  an int64 ``index`` [M, N], or [N] for all rows alike: index_select), giving [M, N].
* Attention starts a chain too: ``q``, ``k`` and ``v`` [B, NH, S, D] (batch, heads, sequence, head dim) give
  softmax(q k^T scale) v [B, NH, S, D], causal or not.
* So does a causal depthwise convolution: ``x`` [B, M, N] (M channels of N positions), each channel's T taps
  ``weight`` [M, T] and its ``bias`` [M] give [B, M, N]; T is a dim of every shape. A 2D convolution reads ``x``
  [B, K, H, W] (K input channels), ``weight`` [C, J, R, R] (C output channels, J = K / groups inputs each, R x R
  windows) and ``bias`` [C], giving [B, C, P, Q]: J, P and Q follow from K, H, W, R and its parameters
  (``conv_size``), dims of their own in every shape, as a pooling's are. A depthwise conv2d (groups = channels)
  reads ``x`` [B, C, H, W] and ``weight`` [C, 1, R, R]; a conv_transpose2d (one group) ``x`` [B, K, H, W] and
  ``weight`` [K, C, R, R], its P and Q larger than H and W.
* fp8 dequantization starts a chain too: ``x`` [M, N] in float8 e4m3 times its ``scale`` ([M, 1] a row's,
  or [1] the tensor's, in the task's dtype) gives [M, N] in the task's dtype. fp8 quantization ends one, with two
  outputs: h / scale in float8 e4m3 and the float32 scales (amax |h| / 448, a row's or the tensor's).
* ``flops`` counts floating-point operations per output element (per input element for
  reductions, normalizations, scans and losses); matmuls count ``2 * K`` per output element, pooling ops
  ``flops`` per value of a window (K^2 per output element), convolutions ``flops`` per tap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

Shape = tuple  # symbolic shape: dimension names (str) and literal 1s


class Family(str, Enum):
    MATMUL = "matmul"
    UNARY = "unary"
    BINARY = "binary"
    REDUCTION = "reduction"
    NORM = "norm"
    SCAN = "scan"
    LOSS = "loss"
    ARG_REDUCTION = "arg_reduction"
    SPATIAL = "spatial_reduction"
    POOL = "pooling"
    GATHER = "gather"
    ATTENTION = "attention"
    CONV = "convolution"
    FP8 = "fp8"
    QUANTIZE = "quantize"


class ShapeError(ValueError):
    """An op cannot be applied to the running value's shape."""


@dataclass(frozen=True)
class Param:
    """A parameter and the values it is drawn from (discrete, so task JSON is exact)."""

    name: str
    choices: tuple


@dataclass(frozen=True)
class Operand:
    """An extra input an op consumes.

    ``layout`` says how its shape follows from the running value ``h``:
    ``scalar`` (a Python float), ``col`` (h's last dim), ``row`` (h without its last dim),
    ``full`` (h's shape), ``chan`` (h's dim 1). ``init`` is its distribution (see tasks.draw); ``dtype``
    fixes its dtype (``int64`` class indices), else it has the task's.
    """

    stem: str
    role: str
    layout: str
    init: dict
    dtype: str | None = None


@dataclass(frozen=True)
class Op:
    name: str
    family: Family
    torch: str
    doc: str
    flops: float = 1.0
    params: tuple[Param, ...] = ()
    operands: tuple[Operand, ...] = ()
    triton: str | None = None
    label: str = ""
    operand_init: tuple[dict, dict] | None = None  # binary ops: (tensor init, scalar init)
    torch_scalar: str | None = None  # binary ops: the form used with a Python-float operand
    # A cheaper Triton form for float16 and bfloat16 tasks, its error far inside their rounding
    # (the result is stored in 8 or 11 bits of mantissa); ``triton`` serves float32.
    triton_16bit: str | None = None
    # A scan whose fp32 accumulation rounds at the magnitude of a running sum, not of its result: the torch
    # expression of that magnitude per element (the checker's rounding bound for it; tasks.FusionTask.reference).
    accumulates: str | None = None
    # The output's dtype when it is not the task's: a loss is computed and returned in float32, as training code
    # does; an arg reduction returns int64 indices. (A template computes in float32 on ``{x32}`` and ``{target32}``:
    # 16-bit values upcast, float64 kept.)
    out_dtype: str | None = None
    # Statements the PyTorch form runs before ``h = <torch>`` (a quantizer's scales), templates as ``torch``.
    setup: tuple[str, ...] = ()
    # A quantizer's second output, float32 scales: ``rows`` (one a row, [..., 1]) or ``tensor`` (one, [1]).
    scales: str | None = None

    def triton_form(self, dtype: str) -> str | None:
        """The Triton form a task of ``dtype`` uses."""
        return self.triton_16bit if self.triton_16bit and dtype in ("float16", "bfloat16") else self.triton

    def describe(self, params: dict[str, Any]) -> str:
        return (self.label or self.name).format(**params)


# Distributions of inputs. Activations are standard normal clipped to [-4, 4], so the largest
# value any shape can see is known and the generator can probe it.
ACTIVATION = {"dist": "normal", "mean": 0.0, "std": 1.0, "clip": 4.0}
VECTOR = {"dist": "normal", "mean": 0.0, "std": 0.5, "clip": 2.0}
GAMMA = {"dist": "normal", "mean": 1.0, "std": 0.2, "clip": 0.6}
BETA = {"dist": "normal", "mean": 0.0, "std": 0.2, "clip": 0.6}
AWAY_FROM_ZERO = {"dist": "signed_uniform", "low": 0.5, "high": 2.0}
SMALL_UNIFORM = {"dist": "uniform", "low": -1.0, "high": 1.0}
VARIANCE = {"dist": "uniform", "low": 0.5, "high": 2.0}
# An arg reduction's activation: clipped where no two values of a row of any length meet the clip (a tie).
LOGITS = {"dist": "normal", "mean": 0.0, "std": 1.0, "clip": 6.0}
CLASS_INDEX = {"dist": "randint", "high": "N"}  # a class of h's last dimension, uniform
PROBABILITIES = {"dist": "softmax", "std": 1.0}  # softmax of normal values over the last dimension

EPS = Param("eps", (1e-5, 1e-6))
SHIFT = Param("shift", (0.5, 1.0))
LOW = Param("min_val", (-2.0, -1.0, -0.5, 0.0))
HIGH = Param("max_val", (0.5, 1.0, 2.0, 6.0))
KEEPDIM = Param("keepdim", (False, True))

# @triton.jit helpers that Triton forms may call; a kernel file using one defines it (codegen does).
# Naive forms lose fp32 precision where the result is tiny: tl.log(1.0 + e) rounds away e's low bits
# (relative error up to 2^-24 / e), and 2 * sigmoid(2z) - 1 or 1 - exp(-2|z|) cancel for small z. The
# helpers keep full relative precision with Goldberg's log1p (a rounded u = 1 + e, corrected by
# e / (u - 1)), an odd polynomial for tanh near 0, and identities with nothing to cancel. They avoid
# tl.log where they can: it is libdevice's logf, about 40 PTX instructions, where tl.exp is one ex2.approx.
# The *_16bit helpers serve float16 and bfloat16 tasks (Op.triton_16bit): errors far inside 8 or 11 bits
# of mantissa for a fraction of libdevice's cost (its sinf and cosf are 100 PTX instructions each, sin_16bit
# about 25); their coefficients are least-squares fits. Which forms were kept, and why: docs/tuning.md#16-bit-forms.
TRITON_HELPERS = {
    "log1p": '''@triton.jit
def log1p(e):
    """log(1 + e) to fp32 precision for tiny e too: log(u) * e / (u - 1), u = 1 + e rounded."""
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
''',
    "normal_cdf_16bit": '''@triton.jit
def normal_cdf_16bit(x):
    """Phi(x) = erfc(-x / sqrt(2)) / 2 for 16-bit results, from the Chebyshev fit of erfc (Numerical Recipes'
    erfcc): erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2), relative error under 1.2e-7 for all z >= 0.
    Taken on |x| and mirrored, so tiny Phi(x) of negative x keeps its relative precision."""
    z = tl.abs(x) * 0.7071067811865476
    t = 1.0 / (1.0 + 0.5 * z)
    p = -0.82215223 + t * 0.17087277
    p = 0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * p))
    p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * p))))
    half_erfc = 0.5 * t * tl.exp(p - z * z)
    return tl.where(x < 0.0, half_erfc, 1.0 - half_erfc)
''',
    "sin_16bit": '''@triton.jit
def sin_16bit(x, quarter_turns):
    """sin(x + quarter_turns pi / 2), 1e-7 absolute up to |x| = 100 and 2e-7 up to 1e4: x = j pi / 2 + r,
    |r| <= pi / 4 (Cody and Waite's reduction, pi / 2 in three parts), sin(r) or cos(r) by polynomials in r^2
    chosen and signed by the quadrant."""
    j = tl.floor(x * 0.6366197723675814 + 0.5)
    r = ((x - j * 1.5703125) - j * 4.838705062866211e-4) + j * 4.371138828673793e-8
    quadrant = (j.to(tl.int32) + quarter_turns) & 3
    s = r * r
    sin_r = r + r * s * (-0.16666654 + s * (0.0083321482 + s * -1.9513912e-4))
    cos_r = 1.0 - 0.5 * s + s * s * (0.041666646 + s * (-0.0013887341 + s * 2.4435833e-5))
    v = tl.where((quadrant & 1) == 0, sin_r, cos_r)
    return tl.where(quadrant >= 2, -v, v)
''',
    "logcumsumexp": '''@triton.jit
def logaddexp_pair(max_a, sum_a, max_b, sum_b):
    """Merges (m, s) pairs that stand for m + log(s): both sums rescaled to the larger max, nothing overflows."""
    m = tl.maximum(max_a, max_b)
    return m, sum_a * tl.exp(max_a - m) + sum_b * tl.exp(max_b - m)


@triton.jit
def logcumsumexp(x):
    """log sum_{k <= j} exp(x_k) along axis 0: an inclusive scan of (x_k, 1) pairs merged by logaddexp_pair."""
    running_max, running_sum = tl.associative_scan((x, tl.full(x.shape, 1.0, tl.float32)), 0, logaddexp_pair)
    return running_max + tl.log(running_sum)
''',
    "tanh": '''@triton.jit
def tanh(z):
    """tanh(z) to fp32 precision: z + z^3 P(z^2) below |z| = 0.6 (P a least-squares fit of relative error 3e-9
    there), 1 - 2 / (exp(2|z|) + 1) above, where tanh > 0.53 and nothing cancels; the sign restored."""
    s = z * z
    p = -0.005895172 * s + 0.02079599
    p = ((p * s - 0.053783838) * s + 0.13331924) * s - 0.333333
    a = tl.abs(z)
    large = 1.0 - 2.0 / (tl.exp(2.0 * a) + 1.0)
    return tl.where(a < 0.6, z + z * s * p, tl.where(z < 0.0, -large, large))
''',
    "tanh_softplus": '''@triton.jit
def tanh_softplus(x):
    """tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2): no log and nothing to cancel; 1 in fp32 above x = 20."""
    u = tl.exp(tl.minimum(x, 20.0))
    n = u * (u + 2.0)
    return n / (n + 2.0)
''',
}


def helpers_of(op: Op, dtype: str = "float32") -> list[str]:
    """The TRITON_HELPERS an op's Triton form at ``dtype`` needs (those it calls and theirs), in definition order."""
    needed, pending = set(), [op.triton_form(dtype) or ""]
    while pending:
        code = re.sub(r'"""(.|\n)*?"""', "", pending.pop())  # calls, not the words of a docstring
        for name, helper in TRITON_HELPERS.items():
            if name not in needed and re.search(rf"(?<![\w.]){name}\(", code):
                needed.add(name)
                pending.append(helper)
    return [name for name in TRITON_HELPERS if name in needed]


def _unary(name, torch, triton, doc, flops=1.0, params=(), label=""):
    return Op(name, Family.UNARY, torch, doc, flops, tuple(params), (), triton, label)


UNARY_OPS = [
    _unary("relu", "torch.relu({x})", "tl.maximum({x}, 0.0)", "max(x, 0)"),
    _unary("relu6", "F.relu6({x})", "tl.minimum(tl.maximum({x}, 0.0), 6.0)", "min(max(x, 0), 6)", 2),
    _unary("leaky_relu", "F.leaky_relu({x}, negative_slope={negative_slope})",
           "tl.where({x} >= 0.0, {x}, {x} * {negative_slope})", "x if x >= 0 else slope * x", 2,
           [Param("negative_slope", (0.01, 0.05, 0.1, 0.2))], "leaky_relu(slope={negative_slope})"),
    replace(_unary("gelu", "F.gelu({x})", "0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))",
                   "x * Phi(x), erf form", 8, label="gelu (erf)"),
            triton_16bit="{x} * normal_cdf_16bit({x})"),
    _unary("gelu_tanh", "F.gelu({x}, approximate='tanh')",
           "{x} * tl.sigmoid(1.5957691216057308 * ({x} + 0.044715 * {x} * {x} * {x}))",
           "0.5 x (1 + tanh(y)) = x sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3)", 12, label="gelu (tanh)"),
    _unary("silu", "F.silu({x})", "{x} * tl.sigmoid({x})", "x * sigmoid(x)", 5),
    _unary("sigmoid", "torch.sigmoid({x})", "tl.sigmoid({x})", "1 / (1 + exp(-x))", 4),
    _unary("tanh", "torch.tanh({x})", "tanh({x})", "tanh(x)", 5),
    _unary("hardtanh", "F.hardtanh({x}, min_val={min_val}, max_val={max_val})",
           "tl.minimum(tl.maximum({x}, {min_val}), {max_val})", "clamp(x, min_val, max_val)", 2,
           [LOW, HIGH], "hardtanh({min_val}, {max_val})"),
    _unary("hardswish", "F.hardswish({x})", "{x} * tl.minimum(tl.maximum({x} + 3.0, 0.0), 6.0) / 6.0",
           "x * relu6(x + 3) / 6", 5),
    _unary("hardsigmoid", "F.hardsigmoid({x})", "tl.minimum(tl.maximum({x} + 3.0, 0.0), 6.0) / 6.0",
           "relu6(x + 3) / 6", 4),
    _unary("mish", "F.mish({x})",
           "{x} * tanh_softplus({x})",
           "x * tanh(softplus(x))", 12),
    _unary("softplus", "F.softplus({x}, beta={beta})",
           "tl.where({x} * {beta} > 20.0, {x}, log1p(tl.exp({x} * {beta})) / {beta})",
           "log(1 + exp(beta x)) / beta, linear above beta x > 20", 6,
           [Param("beta", (0.5, 1.0, 2.0))], "softplus(beta={beta})"),
    _unary("elu", "F.elu({x}, alpha={alpha})", "tl.where({x} > 0.0, {x}, {alpha} * (tl.exp({x}) - 1.0))",
           "x if x > 0 else alpha (exp(x) - 1)", 4, [Param("alpha", (0.5, 1.0, 1.5))], "elu(alpha={alpha})"),
    _unary("selu", "F.selu({x})",
           "1.0507009873554805 * tl.where({x} > 0.0, {x}, 1.6732632423543772 * (tl.exp({x}) - 1.0))",
           "scale * (x if x > 0 else alpha (exp(x) - 1))", 5),
    _unary("celu", "F.celu({x}, alpha={alpha})",
           "tl.where({x} > 0.0, {x}, {alpha} * (tl.exp({x} / {alpha}) - 1.0))",
           "x if x > 0 else alpha (exp(x / alpha) - 1)", 5, [Param("alpha", (0.5, 1.0, 2.0))], "celu(alpha={alpha})"),
    _unary("softsign", "F.softsign({x})", "{x} / (1.0 + tl.abs({x}))", "x / (1 + |x|)", 3),
    _unary("tanhshrink", "F.tanhshrink({x})", "{x} - tanh({x})", "x - tanh(x)", 6),
    _unary("logsigmoid", "F.logsigmoid({x})", "tl.minimum({x}, 0.0) - log1p(tl.exp(-tl.abs({x})))",
           "log(sigmoid(x))", 6),
    _unary("exp", "torch.exp({x})", "tl.exp({x})", "exp(x)", 1),
    _unary("log", "torch.log(torch.abs({x}) + {shift})", "tl.log(tl.abs({x}) + {shift})",
           "log(|x| + shift)", 3, [SHIFT], "log(|h| + {shift})"),
    _unary("sqrt", "torch.sqrt(torch.abs({x}))", "tl.sqrt(tl.abs({x}))", "sqrt(|x|)", 2, label="sqrt(|h|)"),
    _unary("rsqrt", "torch.rsqrt(torch.abs({x}) + {shift})", "tl.rsqrt(tl.abs({x}) + {shift})",
           "1 / sqrt(|x| + shift)", 3, [SHIFT], "rsqrt(|h| + {shift})"),
    _unary("abs", "torch.abs({x})", "tl.abs({x})", "|x|"),
    _unary("square", "torch.square({x})", "{x} * {x}", "x^2"),
    _unary("neg", "torch.neg({x})", "-{x}", "-x"),
    _unary("clamp", "torch.clamp({x}, min={min_val}, max={max_val})",
           "tl.minimum(tl.maximum({x}, {min_val}), {max_val})", "min(max(x, min_val), max_val)", 2,
           [LOW, HIGH], "clamp({min_val}, {max_val})"),
    _unary("reciprocal", "torch.reciprocal(torch.abs({x}) + {shift})", "1.0 / (tl.abs({x}) + {shift})",
           "1 / (|x| + shift)", 3, [SHIFT], "1 / (|h| + {shift})"),
    replace(_unary("sin", "torch.sin({x})", "tl.sin({x})", "sin(x)", 4), triton_16bit="sin_16bit({x}, 0)"),
    replace(_unary("cos", "torch.cos({x})", "tl.cos({x})", "cos(x)", 4), triton_16bit="sin_16bit({x}, 1)"),
    _unary("erf", "torch.erf({x})", "tl.erf({x})", "erf(x)", 6),
]

# Binary ops combine h with one extra input, broadcast by the `operand` parameter:
# scalar (a Python float), col (a per-column vector, a bias), row (a per-row vector),
# full (a tensor of h's shape, a residual).
OPERAND_KINDS = ("scalar", "col", "row", "full")
_OPERAND_STEM = {"scalar": "alpha", "col": "bias", "row": "rowvec", "full": "residual"}
_OPERAND_ROLE = {"scalar": "scalar", "col": "bias", "row": "rowvec", "full": "residual"}
_OPERAND_TEXT = {"scalar": "a scalar", "col": "a per-column vector", "row": "a per-row vector",
                 "full": "a full tensor"}


def _binary(name, torch, triton, doc, tensor_init, scalar_init, torch_scalar=None):
    """A binary op; `operands()` derives its one extra input from the `operand` parameter."""
    return Op(name, Family.BINARY, torch, doc, 1, (Param("operand", OPERAND_KINDS),), (), triton,
              name + " {operand}", (tensor_init, scalar_init), torch_scalar)

BINARY_OPS = [
    _binary("add", "{x} + {y}", "{x} + {y}", "x + y", VECTOR, SMALL_UNIFORM),
    _binary("sub", "{x} - {y}", "{x} - {y}", "x - y", VECTOR, SMALL_UNIFORM),
    _binary("mul", "{x} * {y}", "{x} * {y}", "x * y", ACTIVATION, AWAY_FROM_ZERO),
    _binary("div", "{x} / {y}", "{x} / {y}", "x / y, y kept away from zero", AWAY_FROM_ZERO, AWAY_FROM_ZERO),
    _binary("maximum", "torch.maximum({x}, {y})", "tl.maximum({x}, {y})", "max(x, y)", VECTOR, SMALL_UNIFORM,
            "torch.clamp({x}, min={y})"),
    _binary("minimum", "torch.minimum({x}, {y})", "tl.minimum({x}, {y})", "min(x, y)", VECTOR, SMALL_UNIFORM,
            "torch.clamp({x}, max={y})"),
]


def _reduction(name, torch, doc, flops=1.0, params=()):
    return Op(name, Family.REDUCTION, torch, doc, flops, (*params, KEEPDIM), (), None,
              name + " over the last dim")


REDUCTION_OPS = [
    _reduction("sum", "{x}.sum(dim=-1, keepdim={keepdim})", "sum_j x_ij"),
    _reduction("mean", "{x}.mean(dim=-1, keepdim={keepdim})", "sum_j x_ij / N"),
    _reduction("max", "{x}.amax(dim=-1, keepdim={keepdim})", "max_j x_ij"),
    _reduction("min", "{x}.amin(dim=-1, keepdim={keepdim})", "min_j x_ij"),
    _reduction("logsumexp", "torch.logsumexp({x}, dim=-1, keepdim={keepdim})",
               "m + log sum_j exp(x_ij - m), m = max_j x_ij", 4),
    _reduction("l2norm", "torch.linalg.vector_norm({x}, dim=-1, keepdim={keepdim})", "sqrt(sum_j x_ij^2)", 2),
    _reduction("var", "torch.var({x}, dim=-1, keepdim={keepdim}, correction={correction})",
               "sum_j (x_ij - mean_i)^2 / (N - correction)", 4, (Param("correction", (0, 1)),)),
]

_gamma = Operand("gamma", "weight", "col", GAMMA)
_beta = Operand("beta", "bias", "col", BETA)
_chan_gamma = Operand("gamma", "weight", "chan", GAMMA)
_chan_beta = Operand("beta", "bias", "chan", BETA)

NORM_OPS = [
    Op("softmax", Family.NORM, "torch.softmax({x}, dim=-1)", "exp(x_ij - m_i) / sum_j exp(x_ij - m_i)", 5,
       label="softmax over the last dim"),
    Op("log_softmax", Family.NORM, "torch.log_softmax({x}, dim=-1)", "x_ij - logsumexp_j x_ij", 5,
       label="log_softmax over the last dim"),
    Op("layer_norm", Family.NORM, "F.layer_norm({x}, {x}.shape[-1:], {gamma}, {beta}, eps={eps})",
       "(x - mean) / sqrt(var + eps) * gamma + beta over the last dim", 8, (EPS,), (_gamma, _beta),
       label="layer_norm over the last dim (affine)"),
    Op("rms_norm", Family.NORM, "F.rms_norm({x}, {x}.shape[-1:], {gamma}, eps={eps})",
       "x / sqrt(mean(x^2) + eps) * gamma over the last dim", 6, (EPS,), (_gamma,),
       label="rms_norm over the last dim"),
    Op("l2_normalize", Family.NORM, "F.normalize({x}, dim=-1, eps={eps})",
       "x / max(||x||_2, eps) over the last dim", 4, (Param("eps", (1e-12,)),), (),
       label="L2 normalize over the last dim"),
    Op("group_norm", Family.NORM, "F.group_norm({x}, {groups}, {gamma}, {beta}, eps={eps})",
       "per sample and group of channels (dim 1): (x - mean) / sqrt(var + eps) * gamma + beta", 8,
       (Param("groups", (2, 4, 8)), EPS), (_chan_gamma, _chan_beta), label="group_norm({groups} groups)"),
    Op("batch_norm", Family.NORM,
       "F.batch_norm({x}, {running_mean}, {running_var}, {gamma}, {beta}, training=False, eps={eps})",
       "(x - running_mean) / sqrt(running_var + eps) * gamma + beta per channel (dim 1)", 4,
       (EPS,), (Operand("running_mean", "stat", "chan", VECTOR), Operand("running_var", "stat", "chan", VARIANCE),
                _chan_gamma, _chan_beta), label="batch_norm (inference, running stats)"),
    Op("instance_norm", Family.NORM, "F.instance_norm({x}, weight={gamma}, bias={beta}, eps={eps})",
       "per sample and channel (dim 1): (x - mean) / sqrt(var + eps) * gamma + beta over the last dim", 8,
       (EPS,), (_chan_gamma, _chan_beta), label="instance_norm"),
]

# Scans along the last dimension; the Triton form scans a row held in registers (axis 0). cumprod multiplies
# factors near 1 (1 + rate tanh(h)), so a row of thousands stays finite at every dtype; they are formed in float32
# (in 16 bits they would round to 1 - 2^-8, 1 or 1 + 2^-7, and thousands of those products drift by tens of percent).
SCAN_OPS = [
    Op("cumsum", Family.SCAN, "torch.cumsum({x}, dim=-1)", "y_ij = sum_{k <= j} x_ik", 1,
       triton="tl.cumsum({x}, axis=0)", label="cumsum over the last dim",
       accumulates="torch.cumsum(torch.abs({x}), dim=-1)"),
    Op("cumprod", Family.SCAN, "torch.cumprod(1.0 + {rate} * torch.tanh({x32}), dim=-1).to({x}.dtype)",
       "y_ij = prod_{k <= j} (1 + rate tanh(x_ik))", 7, (Param("rate", (0.01, 0.02, 0.05)),),
       triton="tl.cumprod(1.0 + {rate} * tanh({x}), axis=0)", label="cumprod(1 + {rate} tanh(h)) over the last dim"),
    Op("logcumsumexp", Family.SCAN, "torch.logcumsumexp({x}, dim=-1)", "y_ij = log sum_{k <= j} exp(x_ik)", 4,
       triton="logcumsumexp({x})", label="logcumsumexp over the last dim"),
]

# Losses end a chain, in float32. Cross-entropy reads h as [tokens, vocabulary] logits and int64 class indices; KL
# divergence compares softmax(h) with target probabilities (the distillation loss); mse_loss compares h with a target.
LOSS_OPS = [
    Op("cross_entropy", Family.LOSS, "F.cross_entropy({x32}, {target}, reduction={reduction!r})",
       "logsumexp_j x_ij - x_i,t_i per row i; the mean over rows", 5,
       (Param("reduction", ("none", "mean")),), (Operand("target", "target", "row", CLASS_INDEX, "int64"),),
       label="cross_entropy (reduction={reduction})", out_dtype="float32"),
    Op("kl_div", Family.LOSS, "F.kl_div(F.log_softmax({x32}, dim=-1), {target32}, reduction='batchmean')",
       "sum_ij t_ij (log t_ij - log_softmax(x)_ij) / rows of dim 0", 8,
       operands=(Operand("target", "target", "full", PROBABILITIES),),
       label="kl_div(softmax(h) against target probabilities, batchmean)", out_dtype="float32"),
    Op("mse_loss", Family.LOSS, "F.mse_loss({x32}, {target32})", "mean_ij (x_ij - t_ij)^2", 3,
       operands=(Operand("target", "target", "full", ACTIVATION),), label="mse_loss (mean)", out_dtype="float32"),
]

# Arg reductions end a chain: per row of the last dimension, the int64 index of its max (min), the first on ties. An
# index is judged by the value it picks (verify/indices.py): any whose value is within rounding of the extremum.
ARG_REDUCTION_OPS = [
    Op("argmax", Family.ARG_REDUCTION, "torch.argmax({x}, dim=-1, keepdim={keepdim})",
       "the first j of max_j x_ij", 1, (KEEPDIM,), label="argmax over the last dim", out_dtype="int64"),
    Op("argmin", Family.ARG_REDUCTION, "torch.argmin({x}, dim=-1, keepdim={keepdim})",
       "the first j of min_j x_ij", 1, (KEEPDIM,), label="argmin over the last dim", out_dtype="int64"),
]

# Spatial reductions of a [B, C, H, W] value over H and W: global average and max pooling (adaptive pooling to 1 x 1
# with keepdim).
SPATIAL_OPS = [
    Op("spatial_mean", Family.SPATIAL, "{x}.mean(dim=(-2, -1), keepdim={keepdim})", "sum_hw x_bchw / (H W)", 1,
       (KEEPDIM,), label="mean over H, W"),
    Op("spatial_max", Family.SPATIAL, "{x}.amax(dim=(-2, -1), keepdim={keepdim})", "max_hw x_bchw", 1,
       (KEEPDIM,), label="max over H, W"),
]

# 2D pooling of a [B, C, H, W] value's planes over KERNEL x KERNEL windows every STRIDE values, the planes padded
# by PADDING (max pooling pads with -inf, average pooling with zeros, which count towards the window's size unless
# count_include_pad is False). Every pair of the parameters is valid: padding is at most half the window.
POOL_WINDOW = (Param("kernel_size", (2, 3)), Param("stride", (1, 2)), Param("padding", (0, 1)))
POOL_OPS = [
    Op("max_pool2d", Family.POOL, "F.max_pool2d({x}, {kernel_size}, {stride}, {padding})",
       "h_bcpq = max over the window's values x_bc,(p S - pad + i),(q S - pad + j), 0 <= i, j < K", 1, POOL_WINDOW,
       label="max_pool2d({kernel_size}x{kernel_size}, stride {stride}, padding {padding})"),
    Op("avg_pool2d", Family.POOL,
       "F.avg_pool2d({x}, {kernel_size}, {stride}, {padding}, count_include_pad={count_include_pad})",
       "h_bcpq = the window's sum / (K^2, or the count of its values inside the plane)", 1,
       (*POOL_WINDOW, Param("count_include_pad", (True, False))),
       label="avg_pool2d({kernel_size}x{kernel_size}, stride {stride}, padding {padding}, "
             "count_include_pad={count_include_pad})"),
]


def pooled_size(size: int, params: dict[str, Any]) -> int:
    """The length a pooling op leaves of a plane's side of ``size`` values: (size + 2 pad - K) // S + 1."""
    return (size + 2 * params["padding"] - params["kernel_size"]) // params["stride"] + 1


# Matmul roots start a chain: they read the activation `x` and a second matrix.
_WEIGHT_NK = Operand("w", "weight", "NK", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": "K", "clip": 4.0})
_WEIGHT_KN = Operand("w", "weight", "KN", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": "K", "clip": 4.0})
_WEIGHT_BKN = Operand("w", "weight", "BKN", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": "K", "clip": 4.0})

MATMUL_OPS = [
    Op("linear", Family.MATMUL, "F.linear({x}, {w})", "x @ w^T: [M, K] x [N, K] -> [M, N]", 2,
       operands=(_WEIGHT_NK,), label="linear x @ w^T"),
    Op("linear_bias", Family.MATMUL, "F.linear({x}, {w}, {bias})", "x @ w^T + bias: [M, K] x [N, K] + [N]", 2,
       operands=(_WEIGHT_NK, Operand("bias", "bias", "col", VECTOR)), label="linear x @ w^T + bias"),
    Op("matmul", Family.MATMUL, "torch.matmul({x}, {w})", "x @ w: [M, K] x [K, N] -> [M, N]", 2,
       operands=(_WEIGHT_KN,), label="matmul x @ w"),
    Op("bmm", Family.MATMUL, "torch.bmm({x}, {w})", "x @ w per batch: [B, M, K] x [B, K, N] -> [B, M, N]", 2,
       operands=(_WEIGHT_BKN,), label="batched matmul x @ w"),
]

# Gather roots start a chain: the rows of a table that int64 ids name (a token embedding), or N values of each row
# of x [M, K] picked by int64 column indices. A table is drawn as activations are, so the ops after it see the values
# they would after a matmul.
TOKEN_IDS = {"dist": "randint", "high": "V"}  # a row of the table, uniform
COLUMN_INDEX = {"dist": "randint", "high": "K"}  # a column of the [M, K] values a gather picks from, uniform
GATHER_OPS = [
    Op("embedding", Family.GATHER, "F.embedding({x}, {weight})", "h_ij = weight[ids_i, j]: [M] ids of [V, N] -> [M, N]",
       0, operands=(Operand("weight", "table", "VN", ACTIVATION),), label="embedding lookup of ids in a [V, N] table"),
    Op("gather", Family.GATHER, "torch.gather({x}, -1, {index})",
       "h_ij = x[i, index_ij]: [M, K] by [M, N] int64 -> [M, N]", 0,
       operands=(Operand("index", "index", "full", COLUMN_INDEX, "int64"),), label="gather of N values a row"),
    Op("index_select", Family.GATHER, "torch.index_select({x}, -1, {index})",
       "h_ij = x[i, index_j]: [M, K] by [N] int64 -> [M, N]", 0,
       operands=(Operand("index", "index", "col", COLUMN_INDEX, "int64"),), label="index_select of N columns"),
]

_ROPE = ("({{{t}}} * {{cos}} + torch.cat((-{{{t}}}[..., {{{t}}}.shape[-1] // 2:], "
         "{{{t}}}[..., :{{{t}}}.shape[-1] // 2]), dim=-1) * {{sin}})")

# Attention starts a chain: scaled dot-product attention of a query, key and value of one shape, the softmax scale
# 1 / sqrt(D) (scale None) or a given one, causal (query i sees keys j <= i) or not. Its cost counts both products'
# 4 S^2 D FLOPs a head, halved where causal. The query, key and value are drawn as activations.
ATTENTION_OPS = [
    Op("attention", Family.ATTENTION,
       "F.scaled_dot_product_attention({x}, {k}, {v}, is_causal={causal}, scale={scale})",
       "h_bnid = sum_j softmax_j(q_bni . k_bnj scale) v_bnjd: [B, NH, S, D] x3 -> [B, NH, S, D]", 4,
       (Param("causal", (False, True)), Param("scale", (None, 0.0625))),
       (Operand("k", "key", "BNSD", ACTIVATION), Operand("v", "value", "BNSD", ACTIVATION)),
       label="scaled dot-product attention (causal={causal}, scale={scale})"),
    # Rotary position embeddings (RoPE, the rotate-half form of Llama and GPT-NeoX) applied to q and k first: x cos +
    # rotate_half(x) sin, rotate_half(x) = [-x2, x1] for x = [x1, x2] halves of D, cos and sin [S, D] the tables of the
    # positions' angles s / base^(2i / D), each half repeated.
    Op("rotary_attention", Family.ATTENTION,
       "F.scaled_dot_product_attention(" + ", ".join(_ROPE.format(t=t) for t in ("x", "k")) +
       ", {v}, is_causal={causal}, scale={scale})",
       "h = attention(rope(q), rope(k), v), rope(x)_sd = x_sd cos_sd + rotate_half(x)_sd sin_sd: [B, NH, S, D] x3, "
       "[S, D] x2 -> [B, NH, S, D]", 4,
       (Param("causal", (False, True)), Param("scale", (None, 0.0625))),
       (Operand("k", "key", "BNSD", ACTIVATION), Operand("v", "value", "BNSD", ACTIVATION),
        Operand("cos", "rotary", "SD", {"dist": "rotary", "part": "cos", "base": 10000.0}),
        Operand("sin", "rotary", "SD", {"dist": "rotary", "part": "sin", "base": 10000.0})),
       label="rotary embeddings on q, k, then scaled dot-product attention (causal={causal}, scale={scale})"),
]

# Convolution roots start a chain. The causal depthwise conv1d of state-space and linear-attention models (Mamba's
# short convolution): each of x's M channels convolved with its own T taps over the positions up to its own, zeros
# before the sequence, plus the channel's bias. Taps are drawn as a weight with T inputs.
CONV_OPS = [
    Op("causal_conv1d", Family.CONV,
       "F.conv1d({x}, {weight}.unsqueeze(1), {bias}, padding={weight}.shape[-1] - 1, groups={x}.shape[1])"
       "[..., :{x}.shape[-1]]",
       "h_bmn = bias_m + sum_t weight_mt x_bm(n-T+1+t), x zero before n = 0: [B, M, N], [M, T], [M] -> [B, M, N]",
       2, operands=(Operand("weight", "weight", "MT", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": "T",
                                                        "clip": 4.0}),
                    Operand("bias", "bias", "chan", VECTOR)),
       label="causal depthwise conv1d (T taps) + bias"),
    Op("conv2d", Family.CONV, "F.conv2d({x}, {weight}, {bias}, {stride}, {padding}, {dilation}, {groups})",
       "h_bcpq = bias_c + sum_jrs weight_cjrs x_b,(g J + j),(p S - pad + r dil),(q S - pad + s dil), g = c // (C / G):"
       " [B, K, H, W], [C, J, R, R], [C] -> [B, C, P, Q]",
       2, (Param("stride", (1, 2)), Param("padding", (0, 1)), Param("dilation", (1, 2)), Param("groups", (1, 2, 4))),
       (Operand("weight", "weight", "CJRR", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": ["J", "R", "R"],
                                             "clip": 4.0}),
        Operand("bias", "bias", "chan", VECTOR)),
       label="conv2d (R x R, stride {stride}, padding {padding}, dilation {dilation}, groups {groups}) + bias"),
    # groups = channels: each of x's C planes convolved with its own R x R window (MobileNet's depthwise layers)
    Op("depthwise_conv2d", Family.CONV,
       "F.conv2d({x}, {weight}, {bias}, {stride}, {padding}, {dilation}, groups={x}.shape[1])",
       "h_bcpq = bias_c + sum_rs weight_c0rs x_bc,(p S - pad + r dil),(q S - pad + s dil): [B, C, H, W], [C, 1, R, R], "
       "[C] -> [B, C, P, Q]",
       2, (Param("stride", (1, 2)), Param("padding", (0, 1)), Param("dilation", (1, 2))),
       (Operand("weight", "weight", "C1RR", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": ["R", "R"],
                                             "clip": 4.0}),
        Operand("bias", "bias", "chan", VECTOR)),
       label="depthwise conv2d (R x R, stride {stride}, padding {padding}, dilation {dilation}) + bias"),
    # the transpose of conv2d (a decoder's upsampling): x_bkhw adds weight_kcrs x_bkhw to output (h S - pad + r dil,
    # w S - pad + s dil) of channel c; one group
    Op("conv_transpose2d", Family.CONV,
       "F.conv_transpose2d({x}, {weight}, {bias}, {stride}, {padding}, 0, 1, {dilation})",
       "h_bcpq = bias_c + sum_krs weight_kcrs x_bk,(p + pad - r dil) / S,(q + pad - s dil) / S, where both divide: "
       "[B, K, H, W], [K, C, R, R], [C] -> [B, C, P, Q]",
       2, (Param("stride", (1, 2)), Param("padding", (0, 1)), Param("dilation", (1, 2))),
       (Operand("weight", "weight", "KCRR", {"dist": "normal", "mean": 0.0, "std": 1.0, "fan_in": ["K", "R", "R"],
                                             "clip": 4.0}),
        Operand("bias", "bias", "chan", VECTOR)),
       label="conv_transpose2d (R x R, stride {stride}, padding {padding}, dilation {dilation}) + bias"),
]


# fp8 dequantization starts a chain: e4m3 values (3 mantissa bits, finite up to +-448) times their scale, one a row
# (an [M, 1] column, the layout of per-row scaled matmuls) or one for the tensor ([1]). In PyTorch x.to(scale.dtype):
# every e4m3 value is exact in float16, bfloat16 and float32. The values are drawn as a quantizer leaves them, most of
# the e4m3 range in use (a normal of std 64 clipped at 416); the scales near 1 / 64, so the chain sees activations.
FP8_VALUES = {"dist": "normal", "mean": 0.0, "std": 64.0, "clip": 6.5}
FP8_SCALES = {"dist": "uniform", "low": 1 / 128, "high": 1 / 32}
FP8_DTYPE = "float8_e4m3fn"
FP8_OPS = [
    Op("dequantize_fp8_rows", Family.FP8, "{x}.to({scale}.dtype) * {scale}",
       "h_ij = x_ij scale_i: [M, N] float8 e4m3, [M, 1] -> [M, N]", 1,
       operands=(Operand("scale", "scale", "M1", FP8_SCALES),), label="fp8 (e4m3) dequantization, a scale a row"),
    Op("dequantize_fp8_tensor", Family.FP8, "{x}.to({scale}.dtype) * {scale}",
       "h_ij = x_ij scale: [M, N] float8 e4m3, [1] -> [M, N]", 1,
       operands=(Operand("scale", "scale", "ONE", FP8_SCALES),), label="fp8 (e4m3) dequantization, one scale"),
]


# fp8 quantization ends a chain, as a dynamically scaled fp8 matmul's input is made: each row (or the whole tensor) is
# scaled so that its largest magnitude lands on e4m3's largest finite value, 448, and rounded to e4m3 (to nearest,
# saturating). Two outputs: the e4m3 values and their float32 scales (amax / 448; a row of zeros takes 1e-12 / 448).
# The scales are computed in float32 from the chain's values (float64 in the reference).
FP8_MAX = 448.0
FP8_QUANTIZE = (f"(h / scales).clamp(-{FP8_MAX}, {FP8_MAX}).to(torch.{FP8_DTYPE}), scales")
QUANTIZE_OPS = [
    Op("quantize_fp8_rows", Family.QUANTIZE, FP8_QUANTIZE,
       f"s_i = max_j |h_ij| / {FP8_MAX:g}, q_ij = e4m3(h_ij / s_i): [M, N] -> [M, N] e4m3, [M, 1] float32",
       3, label="fp8 (e4m3) quantization, a scale a row", out_dtype=FP8_DTYPE, scales="rows",
       setup=("h = {x32}", f"scales = h.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / {FP8_MAX}")),
    Op("quantize_fp8_tensor", Family.QUANTIZE, FP8_QUANTIZE,
       f"s = max_ij |h_ij| / {FP8_MAX:g}, q_ij = e4m3(h_ij / s): [M, N] -> [M, N] e4m3, [1] float32",
       3, label="fp8 (e4m3) quantization, one scale", out_dtype=FP8_DTYPE, scales="tensor",
       setup=("h = {x32}", f"scales = h.abs().amax().clamp(min=1e-12).reshape(1) / {FP8_MAX}")),
]


def conv_size(size: int, window: int, params: dict[str, Any], transposed: bool = False) -> int:
    """The length a conv2d leaves of a plane's side of ``size`` values with ``window`` taps:
    (size + 2 pad - dil (window - 1) - 1) // S + 1; a conv_transpose2d, (size - 1) S - 2 pad + dil (window - 1) + 1."""
    pad, dil, stride = params["padding"], params["dilation"], params["stride"]
    if transposed:
        return (size - 1) * stride - 2 * pad + dil * (window - 1) + 1
    return (size + 2 * pad - dil * (window - 1) - 1) // stride + 1


CATALOG: dict[str, Op] = {op.name: op for op in MATMUL_OPS + GATHER_OPS + ATTENTION_OPS + CONV_OPS + UNARY_OPS
                           + BINARY_OPS + REDUCTION_OPS + NORM_OPS + SCAN_OPS + LOSS_OPS + ARG_REDUCTION_OPS
                           + SPATIAL_OPS + POOL_OPS + FP8_OPS + QUANTIZE_OPS}

# Inference batch norm applies running statistics: a per-channel affine map that reduces nothing.
AFFINE_NORMS = ("batch_norm",)
# Norms over a sample's channels (dim 1) and whatever follows them: a group of channels, or one channel.
CHANNEL_NORMS = ("group_norm", "instance_norm")


def reads_planes(op: Op) -> bool:
    """Whether ``op``, after a 2D convolution, reads its whole planes (a second kernel's work): a group or instance
    norm, or a reduction over them."""
    return op.name in CHANNEL_NORMS or op.family is Family.SPATIAL


# Ops that act on whole rows (of the last dimension; a spatial reduction's of H x W): what the row plans walk.
ROW_FAMILIES = (Family.REDUCTION, Family.NORM, Family.SCAN, Family.LOSS, Family.ARG_REDUCTION, Family.SPATIAL,
                Family.QUANTIZE)
# Ops that start a chain from inputs of their own shapes: a matmul, a gather, attention, a convolution, fp8
# dequantization.
ROOTS = (Family.MATMUL, Family.GATHER, Family.ATTENTION, Family.CONV, Family.FP8)
# Ops whose result no op reads: a loss, an index, fp8 values and their scales.
ENDS_CHAIN = (Family.LOSS, Family.ARG_REDUCTION, Family.QUANTIZE)


def reduces(op: Op) -> bool:
    """Whether ``op`` reduces over values: a reduction (spatial too), a loss, an arg reduction, a normalization
    that computes its statistics, or a quantizer (its amax)."""
    return (op.family in (Family.REDUCTION, Family.NORM, Family.LOSS, Family.ARG_REDUCTION, Family.SPATIAL,
                          Family.QUANTIZE)
            and op.name not in AFFINE_NORMS)


def get(name: str) -> Op:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; valid ops: {', '.join(sorted(CATALOG))}") from None


def operands(op: Op, params: dict[str, Any]) -> tuple[Operand, ...]:
    """The extra inputs `op` consumes with these parameters (binary ops: one, by broadcast kind)."""
    if op.family is not Family.BINARY:
        return op.operands
    kind = params["operand"]
    tensor_init, scalar_init = op.operand_init
    return (Operand(_OPERAND_STEM[kind], _OPERAND_ROLE[kind], kind, scalar_init if kind == "scalar" else tensor_init),)


UPCAST = "{0}.to(torch.promote_types({0}.dtype, torch.float32))"  # 16-bit to float32, float64 kept


def upcasts(template: str) -> str:
    """``template`` with ``{x32}`` and ``{target32}`` spelled out (``UPCAST``)."""
    return template.replace("{x32}", UPCAST.format("{x}")).replace("{target32}", UPCAST.format("{target}"))


def torch_template(op: Op, params: dict[str, Any]) -> str:
    """The PyTorch expression template; binary ops broadcast a per-row vector over the last dim; ``{x32}`` and
    ``{target32}`` are their values upcast to float32."""
    if op.family is not Family.BINARY:
        return upcasts(op.torch)
    kind = params["operand"]
    if kind == "scalar":
        return op.torch_scalar or op.torch
    if kind == "row":
        return op.torch.replace("{y}", "{y}.unsqueeze(-1)")
    return op.torch


def operand_text(kind: str) -> str:
    return _OPERAND_TEXT[kind]


def out_shape(op: Op, shape: Shape, params: dict[str, Any]) -> Shape:
    """Shape rule: the running value's shape after `op`, or ShapeError naming why it cannot apply."""
    rank = len(shape)
    if op.family in ROOTS:
        raise ShapeError(f"{op.name} starts a chain (a {op.family.value} root) and cannot follow other ops")
    if op.family in (Family.SPATIAL, Family.POOL):
        planes = tuple(shape[2:]) if rank == 4 else ()
        if planes != ("H", "W") and not (op.family is Family.SPATIAL and planes == ("P", "Q")):
            raise ShapeError(f"{op.name} acts on the H x W planes of a [B, C, H, W] value (once a chain; a spatial "
                             f"reduction also on a conv2d's P x Q ones), got {list(shape)}")
        if op.family is Family.POOL:
            return shape[:2] + ("P", "Q")
        return shape[:2] + ((1, 1) if params["keepdim"] else ())
    if rank == 4 and not (op.family is Family.UNARY or op.name in AFFINE_NORMS + CHANNEL_NORMS
                          or op.family is Family.BINARY and params["operand"] in ("scalar", "full")):
        raise ShapeError(f"{op.name}: a rank-4 value takes pointwise ops (with a scalar or a full tensor), "
                         f"inference batch norm, group norm and instance norm; a [B, C, H, W] one also reductions "
                         f"over H, W and 2D pooling")
    if op.family is Family.UNARY:
        return shape
    if op.family is Family.BINARY:
        if params["operand"] in ("col", "row", "full") and (rank < 2 or shape[-1] == 1):
            raise ShapeError(f"{op.name} with {operand_text(params['operand'])} needs a value of rank >= 2 "
                             f"with a real last dimension, got {list(shape)}")
        return shape
    if rank < 2 or shape[-1] == 1:
        raise ShapeError(f"{op.name} acts on the last dimension and needs a value of rank >= 2 with a real "
                         f"last dimension, got {list(shape)}")
    if op.family in (Family.REDUCTION, Family.ARG_REDUCTION):
        return shape[:-1] + ((1,) if params["keepdim"] else ())
    if op.family is Family.LOSS:
        if op.name == "cross_entropy":
            if rank != 2:
                raise ShapeError(f"cross_entropy needs [rows, classes] logits (rank 2), got {list(shape)}")
            return shape[:-1] if params["reduction"] == "none" else ()
        return ()
    if op.name == "instance_norm" and rank not in (3, 4):
        raise ShapeError(f"instance_norm needs a [B, C, L] or [B, C, P, Q] value, got {list(shape)}")
    return shape


def next_shape(op: Op, shape: Shape, params: dict[str, Any]) -> Shape:
    """The running value's shape after `op`: a root sets it, any other op follows its rule."""
    return root_shapes(op)[1] if op.family in ROOTS else out_shape(op, shape, params)


def operand_shape(layout: str, shape: Shape) -> Shape:
    """Symbolic shape of an extra input laid out against the running value's shape."""
    return {"scalar": (), "col": shape[-1:], "row": shape[:-1], "full": shape, "chan": shape[1:2]}[layout]


def root_shapes(op: Op) -> tuple[Shape, Shape]:
    """(first input's shape, output shape) of a root: a matmul's activation, an embedding's ids, the values a
    gather picks from."""
    if op.name == "embedding":
        return ("M",), ("M", "N")
    if op.family is Family.FP8:
        return ("M", "N"), ("M", "N")
    if op.family is Family.GATHER:
        return ("M", "K"), ("M", "N")
    if op.family is Family.ATTENTION:
        return ("B", "NH", "S", "D"), ("B", "NH", "S", "D")
    if op.name in ("conv2d", "conv_transpose2d"):
        return ("B", "K", "H", "W"), ("B", "C", "P", "Q")
    if op.name == "depthwise_conv2d":
        return ("B", "C", "H", "W"), ("B", "C", "P", "Q")
    if op.family is Family.CONV:
        return ("B", "M", "N"), ("B", "M", "N")
    if op.name == "bmm":
        return ("B", "M", "K"), ("B", "M", "N")
    return ("M", "K"), ("M", "N")


ROOT_OPERAND_SHAPES = {"NK": ("N", "K"), "KN": ("K", "N"), "BKN": ("B", "K", "N"), "VN": ("V", "N"),
                       "BNSD": ("B", "NH", "S", "D"), "MT": ("M", "T"),
                       "CJRR": ("C", "J", "R", "R"), "C1RR": ("C", 1, "R", "R"),
                       "KCRR": ("K", "C", "R", "R"), "SD": ("S", "D"), "M1": ("M", 1), "ONE": (1,)}
