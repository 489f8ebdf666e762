"""The op catalog: coverage, shape rules, guarded domains, and Triton forms that match PyTorch."""

import random

import pytest
import torch
import triton
from conftest import DEVICE

from fusionforge import ops as catalog
from fusionforge.kernelfile import load_module
from fusionforge.ops import Family, ShapeError
from fusionforge.tasks import TaskGenerator

REQUIRED = {
    Family.MATMUL: {"linear", "linear_bias", "matmul", "bmm"},
    Family.UNARY: {"relu", "leaky_relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "hardtanh", "hardswish",
                   "hardsigmoid", "mish", "softplus", "elu", "selu", "exp", "log", "sqrt", "abs", "square",
                   "clamp", "reciprocal"},
    Family.BINARY: {"add", "sub", "mul", "div", "maximum", "minimum"},
    Family.REDUCTION: {"sum", "mean", "max", "min", "logsumexp", "l2norm", "var"},
    Family.NORM: {"softmax", "log_softmax", "layer_norm", "rms_norm", "group_norm", "batch_norm",
                  "instance_norm", "l2_normalize"},
}


def test_catalog_covers_the_required_ops():
    assert len(catalog.CATALOG) >= 45
    for family, names in REQUIRED.items():
        have = {op.name for op in catalog.CATALOG.values() if op.family is family}
        assert names <= have, f"{family.value} lacks {names - have}"
    assert sum(op.family is Family.UNARY for op in catalog.CATALOG.values()) >= 20


def test_every_entry_is_complete():
    for op in catalog.CATALOG.values():
        assert op.torch and op.doc, op.name
        assert op.flops > 0 or op.family is Family.GATHER, op.name  # a lookup only moves rows
        assert (op.triton is not None) == (op.family in (Family.UNARY, Family.BINARY, Family.SCAN)), op.name
        for p in op.params:
            assert p.choices, (op.name, p.name)


def test_unknown_op_lists_valid_ones():
    with pytest.raises(KeyError, match="valid ops: .*relu"):
        catalog.get("gleu")


@pytest.mark.parametrize("shape, keepdim, expected", [(("M", "N"), False, ("M",)), (("M", "N"), True, ("M", 1)),
                                                      (("B", "M", "N"), False, ("B", "M"))])
def test_reduction_shape_rule(shape, keepdim, expected):
    assert catalog.out_shape(catalog.get("sum"), shape, {"keepdim": keepdim}) == expected


@pytest.mark.parametrize("op, shape, params", [
    ("softmax", ("M",), {}),
    ("sum", ("M", 1), {"keepdim": False}),
    ("instance_norm", ("M", "N"), {"eps": 1e-5}),
    ("add", ("M",), {"operand": "col"}),
    ("relu", ("M", "N"), None),
])
def test_shape_rule_rejections(op, shape, params):
    if params is None:  # a matmul root never follows other ops
        with pytest.raises(ShapeError, match="starts a chain"):
            catalog.out_shape(catalog.get("linear"), shape, {})
        return
    with pytest.raises(ShapeError):
        catalog.out_shape(catalog.get(op), shape, params)


def test_binary_scalar_operand_is_broadcast_correctly():
    assert catalog.operand_shape("row", ("B", "M", "N")) == ("B", "M")
    assert catalog.operand_shape("col", ("B", "M", "N")) == ("N",)
    assert catalog.operand_shape("chan", ("B", "M", "N")) == ("M",)
    assert "unsqueeze(-1)" in catalog.torch_template(catalog.get("mul"), {"operand": "row"})
    assert "clamp" in catalog.torch_template(catalog.get("maximum"), {"operand": "scalar"})


@pytest.mark.parametrize("name", [op.name for op in catalog.CATALOG.values() if op.family is not Family.MATMUL])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_op_is_finite_on_its_domain(name, dtype):
    """A one-op task (forced chain) passes the generator's screen at every dtype."""
    task = TaskGenerator().generate(0, dtype=dtype, ops=name)
    for dims in task.shapes["test"]:
        out = task.function(*task.make_inputs(dims, seed=3))
        assert all(torch.isfinite(t.float()).all() for t in (out if task.quantizer else (out,)))


def _pointwise_kernel(tmp_path, expr: str, binary: bool):
    """A one-line Triton kernel computing `expr` on fp32 values (y read only for binary ops)."""
    load_y = "    y = tl.load(y_ptr + offs, mask=mask, other=1.0).to(tl.float32)\n" if binary else ""
    helpers = "".join(code + "\n\n" for code in catalog.TRITON_HELPERS.values())
    source = (
        f"import triton\nimport triton.language as tl\n\n\n{helpers}@triton.jit\n"
        "def kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):\n"
        "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n"
        "    mask = offs < n\n"
        "    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)\n"
        f"{load_y}    out = {expr}\n"
        "    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)\n")
    path = tmp_path / "pointwise_kernel.py"
    path.write_text(source)
    return load_module(path, f"pointwise_{abs(hash(expr))}").kernel


@pytest.mark.parametrize("name, params, low, high", [("softplus", {"beta": 2.0}, -8.0, -2.0),
                                                     ("softplus", {"beta": 0.5}, -30.0, -5.0),
                                                     ("logsigmoid", {}, 3.0, 15.0), ("mish", {}, -12.0, -3.0),
                                                     ("tanh", {}, -1e-3, 1e-3), ("tanh", {}, -0.7, 0.7),
                                                     ("tanh", {}, -9.0, 9.0), ("gelu_tanh", {}, -5.0, -1.0),
                                                     ("tanh", {}, -60.0, 60.0), ("mish", {}, -15.0, 60.0),
                                                     ("gelu_tanh", {}, -5.0, 40.0)])
# tanh's form lets exp(2|z|) overflow to inf for |z| > 44 (2 / inf = 0, tanh = 1): numpy, in the interpreter, warns
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_triton_form_keeps_relative_precision_on_tiny_values(tmp_path, name, params, low, high):
    """Where the result is tiny (softplus of very negative x, ...) or far out (exp overflowing), fp32 relative
    accuracy still holds."""
    op = catalog.get(name)
    x = torch.linspace(low, high, 1000).to(DEVICE)
    expected = eval(catalog.torch_template(op, params).format(x="x", **params),
                    {"torch": torch, "F": torch.nn.functional, "x": x.double()})
    kernel = _pointwise_kernel(tmp_path, op.triton.format(x="x", **params), False)
    out = torch.empty_like(x)
    kernel[(4,)](x, x, out, 1000, BLOCK=256)
    torch.testing.assert_close(out.double(), expected, rtol=2e-6, atol=0.0)


@pytest.mark.parametrize("name", [op.name for op in catalog.CATALOG.values()
                                  if op.family in (Family.UNARY, Family.BINARY)])
def test_triton_form_matches_pytorch(tmp_path, name):
    """The catalog's Triton template computes what its PyTorch template computes (fp32, 1e-5)."""
    op = catalog.get(name)
    rng = random.Random(name)
    params = {p.name: rng.choice(p.choices) for p in op.params}
    binary = op.family is Family.BINARY
    if binary:
        params["operand"] = "full"
    n = 1000
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(n, generator=gen) * 3).to(DEVICE)
    y = (torch.rand(n, generator=gen) * 1.5 + 0.5).mul(torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(DEVICE)
    names = {"y": "y"} if binary else {}
    expected = eval(catalog.torch_template(op, params).format(x="x", **params, **names),
                    {"torch": torch, "F": torch.nn.functional, "x": x.double(), "y": y.double()})
    triton_expr = op.triton.format(x="x", y="y", **{k: v for k, v in params.items() if k != "operand"})
    kernel = _pointwise_kernel(tmp_path, triton_expr, binary)
    out = torch.empty_like(x)
    kernel[(4,)](x, y, out, n, BLOCK=256)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_gelu_16bit_form_is_far_inside_16bit_rounding(tmp_path):
    """gelu's cheaper form for 16-bit tasks errs far less than float16 rounds (2^-11 relative), down to the
    tiny values of x << 0. Reference: x * erfc(-x / sqrt(2)) / 2 in float64 (F.gelu cancels to 0 there)."""
    op = catalog.get("gelu")
    x = torch.linspace(-9.0, 9.0, 4001).to(DEVICE)
    expected = x.double() * torch.special.erfc(-x.double() / 2**0.5) / 2
    kernel = _pointwise_kernel(tmp_path, op.triton_16bit.format(x="x"), False)
    out = torch.empty_like(x)
    kernel[(16,)](x, x, out, x.numel(), BLOCK=256)
    relative = (out.double() - expected).abs() / expected.abs().clamp_min(1e-30)
    assert relative.max().item() < 2.0**-11 / 8, (x[relative.argmax()].item(), relative.max().item())
    assert op.triton_form("float16") == op.triton_form("bfloat16") == op.triton_16bit
    assert op.triton_form("float32") == op.triton


@pytest.mark.parametrize("name, low, high", [("sin", -4.0, 4.0), ("cos", -100.0, 100.0), ("sin", -1e4, 1e4),
                                             ("cos", -1e4, 1e4)])
def test_sin_and_cos_16bit_forms_are_far_inside_16bit_rounding(tmp_path, name, low, high):
    """sin and cos in their 16-bit form err under 2^-20 absolute (1.5e-7 at most on the CPU), float16's
    rounding at 1 / 512, out to |x| = 1e4. Reference: torch.sin and torch.cos in float64."""
    op = catalog.get(name)
    x = torch.linspace(low, high, 20001).to(DEVICE)
    expected = getattr(torch, name)(x.double())
    kernel = _pointwise_kernel(tmp_path, op.triton_16bit.format(x="x"), False)
    out = torch.empty_like(x)
    kernel[(triton.cdiv(x.numel(), 256),)](x, x, out, x.numel(), BLOCK=256)
    error = (out.double() - expected).abs()
    assert error.max().item() < 2.0**-20, (x[error.argmax()].item(), error.max().item())
    assert op.triton_form("bfloat16") == op.triton_16bit and op.triton_form("float32") == op.triton
