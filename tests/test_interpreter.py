"""The CPU interpreter must compute what a GPU computes (bf16 rounding, dots, scalar arguments) and refuse
every load, store and atomic outside the tensor argument its pointer came from."""

import json
import os
import traceback

import pytest
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from fusionforge.verify import interpreter
from fusionforge.verify.interpreter import DataRace, OutOfBoundsAccess, faithful_conversions, install_gpu_semantics

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")


@pytest.fixture(scope="module", autouse=True)
def gpu_semantics():
    install_gpu_semantics()


def _random(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _raised(launch, kind: type) -> Exception:
    """Run a launch that must fail; the exception of type ``kind`` in its exception chain."""
    with pytest.raises(Exception) as info:
        launch()
    error = info.value
    while error is not None and not isinstance(error, kind):
        error = error.__cause__
    assert error is not None, f"no {kind.__name__} in {info.value!r}"
    return error


def _out_of_bounds(launch) -> OutOfBoundsAccess:
    return _raised(launch, OutOfBoundsAccess)


# -- bfloat16 rounding --------------------------------------------------------------------------------

@triton.jit
def _casts_kernel(x_ptr, half_ptr, stored_ptr, cast_ptr, from_half_ptr, toward_zero_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offsets)
    tl.store(stored_ptr + offsets, x)  # implicit cast on store
    tl.store(cast_ptr + offsets, x.to(tl.bfloat16))
    tl.store(from_half_ptr + offsets, tl.load(half_ptr + offsets).to(tl.bfloat16))
    tl.store(toward_zero_ptr + offsets, x.to(tl.bfloat16, fp_downcast_rounding="rtz"))


def test_float_to_bfloat16_rounds_to_nearest_even():
    assert faithful_conversions()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=generator) * 3
    x[:6] = torch.tensor([float("inf"), -float("inf"), 3.4e38, 1e-40, 0.0, -0.0])
    x[6] = 1 + 2**-8  # a tie: rounds to the even neighbour, 1.0
    x[7] = 1 + 3 * 2**-8  # a tie: rounds up to the even neighbour
    half = (x[8:].clamp(-60000, 60000)).half()
    half = torch.cat([x[:8].half().nan_to_num(0.0), half])
    stored, cast, from_half, toward_zero = (torch.empty(4096, dtype=torch.bfloat16) for _ in range(4))
    _casts_kernel[(1,)](x, half, stored, cast, from_half, toward_zero, BLOCK=4096)
    expected = x.to(torch.bfloat16).view(torch.int16)
    assert torch.equal(stored.view(torch.int16), expected)
    assert torch.equal(cast.view(torch.int16), expected)
    assert torch.equal(from_half.view(torch.int16), half.to(torch.bfloat16).view(torch.int16))
    assert float(cast[6]) == 1.0 and float(cast[7]) == 1 + 2**-6
    # an explicit round-toward-zero request keeps its meaning: never larger in magnitude
    normal = slice(8, None)
    assert bool((toward_zero[normal].double().abs() <= x[normal].double().abs()).all())
    assert int((toward_zero[normal].view(torch.int16) != expected[normal]).sum()) > 1000


@triton.jit
def _fp8_kernel(x_ptr, fp8_ptr, codes_ptr, decoded_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(fp8_ptr + offsets, tl.load(x_ptr + offsets).to(tl.float8e4nv))
    tl.store(decoded_ptr + offsets, tl.load(codes_ptr + offsets).to(tl.float32))


def test_float8_e4m3_conversions_round_to_nearest_even_and_saturate():
    """To fp8: round to nearest even with the carry into the exponent (127.9 -> 128), +-448 past the range, NaN
    kept; from fp8: every one of the 256 codes, the two NaN codes as NaN."""
    assert faithful_conversions()
    x = torch.linspace(-470.0, 470.0, 256)
    x[:8] = torch.tensor([127.9, -31.97, 460.0, -1e4, float("inf"), float("nan"), 2.0**-10, 0.0])
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    fp8, decoded = torch.empty(256, dtype=torch.float8_e4m3fn), torch.empty(256)
    _fp8_kernel[(1,)](x, fp8, codes, decoded, BLOCK=256)
    expected = torch.where(x.isnan(), x, x.clamp(-448.0, 448.0)).to(torch.float8_e4m3fn)
    assert torch.equal(fp8.view(torch.uint8), expected.view(torch.uint8))
    assert fp8[:4].float().tolist() == [128.0, -32.0, 448.0, -448.0]
    assert torch.equal(decoded.nan_to_num(7.0), codes.float().nan_to_num(7.0))
    assert int(decoded.isnan().sum()) == 2


# -- dots ---------------------------------------------------------------------------------------------

@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, PRECISION: tl.constexpr, ACC_FP16: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """c = a @ b for row-major a [M, K], b [K, N] in one program, K in BLOCK_K steps."""
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float16 if ACC_FP16 else tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * N + cols[None, :], mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        if ACC_FP16:
            acc = tl.dot(a, b, acc, out_dtype=tl.float16)
        elif PRECISION == "default":
            acc = tl.dot(a, b, acc)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(c_ptr + rows[:, None] * N + cols[None, :], acc, mask=(rows[:, None] < M) & (cols[None, :] < N))


def _matmul(a, b, precision="default", acc_fp16=False):
    (M, K), N = a.shape, b.shape[1]
    c = torch.empty(M, N, dtype=torch.float16 if acc_fp16 else torch.float32)
    _matmul_kernel[(1,)](a, b, c, M, N, K, PRECISION=precision, ACC_FP16=acc_fp16,
                         BLOCK_M=triton.next_power_of_2(M), BLOCK_N=triton.next_power_of_2(N), BLOCK_K=16)
    return c


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """An fp32 tensor as a tensor core reads it for a tf32 dot: the low 13 mantissa bits dropped."""
    return (x.view(torch.int32) & -(2**13)).view(torch.float32)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("shape", [(13, 29, 37), (32, 16, 64), (5, 3, 100)])
@pytest.mark.parametrize("dtype, precision, low, high", [
    (torch.bfloat16, "default", 0.0, 1e-6),
    (torch.float16, "default", 0.0, 1e-6),
    (torch.float32, "ieee", 0.0, 1e-6),
    (torch.float32, "tf32x3", 0.0, 1e-6),
    (torch.float32, "default", 1e-4, 3e-3),  # TF32: 10 mantissa bits per operand
    (torch.float32, "tf32", 1e-4, 3e-3),
])
def test_dot_error_is_the_gpus(shape, dtype, precision, low, high):
    M, N, K = shape
    a, b = _random(M, K, dtype=dtype, seed=1), _random(K, N, dtype=dtype, seed=2)
    exact = a.double() @ b.double()
    c = _matmul(a, b, precision)
    assert c.dtype == torch.float32
    assert low <= _rel_err(c, exact) <= high
    if dtype == torch.float32 and precision in ("default", "tf32"):  # the tensor cores' truncation, up to summation
        assert _rel_err(c, _tf32(a).double() @ _tf32(b).double()) < 1e-6


def test_tf32_dot_truncates_like_the_tensor_cores():
    """Measured on an H200 (Triton 3.6): 1 + k * 2**-23 for any k < 2**13 enters a tf32 dot as 1.0."""
    low_bits = torch.tensor([0x0FFF, 0x1000, 0x1001, 0x1FFF], dtype=torch.int32)
    values = (torch.tensor(1.0).view(torch.int32) | low_bits).view(torch.float32)
    a = torch.zeros(16, 16)
    a[:4, 0] = values
    b = torch.zeros(16, 16)
    b[0, :] = 1.0
    assert torch.equal(_matmul(a, b, "tf32")[:4], torch.ones(4, 16))
    assert torch.equal(_matmul(a, b, "ieee")[:4], values[:, None].expand(4, 16))


@pytest.mark.parametrize("default, high", [("ieee", 1e-6), ("tf32x3", 1e-6), ("tf32", 3e-3)])
def test_f32_default_knob_picks_the_default_dot(monkeypatch, default, high):
    """tl.dot without input_precision takes TRITON_F32_DEFAULT when it is set, as on a GPU."""
    monkeypatch.setenv("TRITON_F32_DEFAULT", default)
    a, b = _random(13, 37, seed=1), _random(37, 29, seed=2)
    error = _rel_err(_matmul(a, b), a.double() @ b.double())
    assert error <= high and (default != "tf32" or error > 1e-4)


def test_fp16_dot_keeps_an_fp16_accumulator():
    a, b = _random(24, 40, dtype=torch.float16, seed=3), _random(40, 20, dtype=torch.float16, seed=4)
    c = _matmul(a, b, acc_fp16=True)
    assert c.dtype == torch.float16
    assert _rel_err(c, a.double() @ b.double()) < 2e-3  # fp16 rounding of the sums, not garbage


# -- scans --------------------------------------------------------------------------------------------

@triton.jit
def _pair_max(value_a, index_a, value_b, index_b):
    """The larger value and its index (the later one on a tie)."""
    later = value_b >= value_a
    return tl.where(later, value_b, value_a), tl.where(later, index_b, index_a)


@triton.jit
def _scans_kernel(x_ptr, sum_ptr, prod_ptr, max_ptr, where_ptr, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0)
    tl.store(sum_ptr + row * n + cols, tl.cumsum(x, axis=0), mask=mask)
    tl.store(prod_ptr + row * n + cols, tl.cumprod(1.0 + 0.01 * x, axis=0), mask=mask)
    running, where = tl.associative_scan((x, cols), 0, _pair_max)
    tl.store(max_ptr + row * n + cols, running, mask=mask)
    tl.store(where_ptr + row * n + cols, where, mask=mask)


@pytest.mark.parametrize("n", [1, 3, 97, 128, 300, 8209])
def test_scans_combine_in_a_gpus_order(n):
    """cumsum, cumprod and a tuple scan are the scans; a long fp32 prefix sum of one value rounds as a GPU's warp
    scan does (a few roundings a value), not as a sequential sum does (n / 4 of them)."""
    x = _random(2, n, seed=n)
    x[1] = -0.83  # a constant row: a sequential fp32 sum drifts by 5e-5 (relative) over 8209 values
    outputs = [torch.empty(2, n) for _ in range(3)] + [torch.empty(2, n, dtype=torch.int32)]
    _scans_kernel[(2,)](x, *outputs, n, BLOCK=triton.next_power_of_2(n))
    summed, product, running, where = outputs
    exact = x.double().cumsum(-1)
    assert _rel_err(summed[0], exact[0]) < 1e-6 and _rel_err(summed[1], exact[1]) < 2e-6
    assert _rel_err(product, (1.0 + 0.01 * x).double().cumprod(-1)) < 4e-6  # from the kernel's fp32 factors
    assert torch.equal(running, x.cummax(-1).values)
    assert torch.equal(x.gather(1, where.long()), running)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _reductions_kernel(x_ptr, total_ptr, top_ptr, where_ptr, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * n + cols, mask=cols < n, other=float("-inf"))
    tl.store(total_ptr + row, tl.reduce(tl.where(cols < n, x, 0.0), 0, _add))
    top, where = tl.reduce((x, cols), 0, _pair_max)
    tl.store(top_ptr + row, top)
    tl.store(where_ptr + row, where)


@pytest.mark.parametrize("n", [1, 5, 300, 8209])
def test_reductions_with_a_combine_function_take_a_gpus_order(n):
    """tl.reduce with the kernel's own combine function: a sum, and a max with its (last) index; a long fp32 sum of
    one value rounds as a GPU's tree does, not as a sequential sum does."""
    x = _random(2, n, seed=n)
    x[1] = -0.83
    total, top, where = torch.empty(2), torch.empty(2), torch.empty(2, dtype=torch.int32)
    _reductions_kernel[(2,)](x, total, top, where, n, BLOCK=triton.next_power_of_2(n))
    assert _rel_err(total, x.double().sum(-1)) < 1e-6
    assert torch.equal(top, x.max(-1).values) and torch.equal(x.gather(1, where.long()[:, None])[:, 0], top)


@triton.jit
def _branching_max(a, b):
    if a > b:
        larger = a
    else:
        larger = b
    return larger


@triton.jit
def _branching_kernel(x_ptr, top_ptr, running_ptr, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + cols)
    tl.store(top_ptr, tl.reduce(x, 0, _branching_max))
    tl.store(running_ptr + cols, tl.associative_scan(x, 0, _branching_max))


def test_a_combine_function_that_branches_runs_value_by_value():
    """A combine function with a Python if (a GPU compiles it per value) cannot run on whole arrays: the interpreter
    takes an array as true. It keeps the interpreter's value-by-value order, and the right answer."""
    x = _random(64, seed=5)
    top, running = torch.empty(1), torch.empty(64)
    _branching_kernel[(1,)](x, top, running, BLOCK=64)
    assert torch.equal(top[0], x.max()) and torch.equal(running, x.cummax(0).values)


# -- scalar arguments ---------------------------------------------------------------------------------

@triton.jit
def _scalars_kernel(x_ptr, scaled_ptr, half_ptr, flag_ptr, big_ptr, scale, flag, big, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offsets)
    tl.store(scaled_ptr + offsets, x * scale)  # fp16 * fp32 scalar: computed in fp32
    tl.store(half_ptr, scale.to(tl.float16))
    tl.store(flag_ptr, tl.where(flag, 7, 3))
    tl.store(big_ptr, big * 2 // 4)  # i64 on a GPU; 32-bit arithmetic would wrap


@pytest.mark.parametrize("scale", [1 / 3, -2.7182818, 1e-5])
def test_python_scalars_get_the_gpus_types(scale):
    x = _random(64, dtype=torch.float16)
    scaled, half = torch.empty(64), torch.empty(1, dtype=torch.float16)
    flag, big = torch.empty(1, dtype=torch.int32), torch.empty(1, dtype=torch.int64)
    _scalars_kernel[(1,)](x, scaled, half, flag, big, scale, True, 3_000_000_001, BLOCK=64)
    assert torch.equal(scaled, x.float() * torch.tensor(scale, dtype=torch.float32))
    assert torch.equal(half, torch.tensor([scale]).half())
    assert int(flag) == 7 and int(big) == 1_500_000_000


# -- memory bounds ------------------------------------------------------------------------------------

@triton.jit
def _shifted_copy_kernel(x_ptr, out_ptr, n, shift, LOAD_MASKED: tl.constexpr, STORE_MASKED: tl.constexpr,
                         BLOCK: tl.constexpr):
    """out[i] = x[i + shift] for i < n; the loads and stores masked to i < n when asked."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    source = x_ptr + offsets.to(tl.int64) + shift
    x = tl.load(source, mask=inside, other=-1.0) if LOAD_MASKED else tl.load(source)
    if STORE_MASKED:
        tl.store(out_ptr + offsets, x, mask=inside)
    else:
        tl.store(out_ptr + offsets, x)


def _copy(x, out, n, shift=0, load_masked=True, store_masked=True, block=64):
    _shifted_copy_kernel[(triton.cdiv(n, block),)](x, out, n, shift, LOAD_MASKED=load_masked,
                                                   STORE_MASKED=store_masked, BLOCK=block)


DTYPES = [(torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")]


@pytest.mark.parametrize("n", [37, 100, 129])
@pytest.mark.parametrize("dtype, name", DTYPES)
def test_unmasked_load_past_the_end(n, dtype, name):
    x, out = _random(n, dtype=dtype), torch.empty(n, dtype=dtype)
    error = _out_of_bounds(lambda: _copy(x, out, n, load_masked=False))
    details = json.loads(json.dumps(error.details))  # JSON-serialisable as it is
    assert details.pop("inside") in (None, "out_ptr")  # out may lie right after x on the heap
    assert details == {"kernel": "_shifted_copy_kernel", "access": "load", "argument": "x_ptr", "offset": n,
                       "valid_offsets": [0, n - 1], "dtype": name, "lanes_out_of_bounds": n // 64 * 64 + 64 - n,
                       "lanes_active": 64, "program": [n // 64, 0, 0]}
    assert str(error).startswith(f"load out of bounds in _shifted_copy_kernel: x_ptr + {n} is outside")
    assert "\n" not in str(error)


@pytest.mark.parametrize("n", [37, 100])
@pytest.mark.parametrize("dtype, name", DTYPES)
def test_store_past_the_end_writes_nothing(n, dtype, name):
    x, out = _random(n, dtype=dtype), torch.zeros(n, dtype=dtype)
    error = _out_of_bounds(lambda: _copy(x, out, n, store_masked=False, block=128))
    assert error.details["access"] == "store" and error.details["argument"] == "out_ptr"
    assert error.details["offset"] == n and error.details["valid_offsets"] == [0, n - 1]
    assert error.details["lanes_out_of_bounds"] == 128 - n and error.details["dtype"] == name
    assert not out.any()  # refused before any lane was written


@pytest.mark.parametrize("shift", [-1, -7])
def test_negative_offset_before_the_start(shift):
    x, out = _random(50), torch.empty(50)
    error = _out_of_bounds(lambda: _copy(x, out, 50, shift=shift))
    assert error.details["access"] == "load" and error.details["offset"] == shift
    assert error.details["lanes_out_of_bounds"] == -shift and error.details["valid_offsets"] == [0, 49]


def test_pointer_into_another_arguments_storage():
    x, out = _random(48), torch.empty(48)
    distance = (out.data_ptr() - x.data_ptr()) // 4  # x_ptr + distance is out's first element
    error = _out_of_bounds(lambda: _copy(x, out, 48, shift=distance))
    assert error.details["argument"] == "x_ptr" and error.details["inside"] == "out_ptr"
    assert error.details["offset"] == distance and error.details["lanes_out_of_bounds"] == 48
    assert "lies in out_ptr's storage" in str(error)


def test_traceback_shows_the_kernel_line():
    x, out = _random(37), torch.empty(37)
    error = _out_of_bounds(lambda: _copy(x, out, 37, load_masked=False))
    frames = traceback.extract_tb(error.__traceback__)
    lines = {f.line for f in frames if f.filename == __file__}
    assert "x = tl.load(source, mask=inside, other=-1.0) if LOAD_MASKED else tl.load(source)" in lines


@triton.jit
def _atomic_kernel(x_ptr, total_ptr, lock_ptr, n, BINS: tl.constexpr, LOCK_OFFSET: tl.constexpr,
                   BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.atomic_add(total_ptr + offsets % BINS, x, mask=offsets < n)
    tl.atomic_cas(lock_ptr + LOCK_OFFSET, 0, 1)


def test_atomics_in_and_out_of_bounds():
    x, total, lock = torch.ones(10), torch.zeros(4), torch.zeros(2, dtype=torch.int32)
    _atomic_kernel[(1,)](x, total, lock, 10, BINS=4, LOCK_OFFSET=1, BLOCK=16)
    assert total.tolist() == [3.0, 3.0, 2.0, 2.0] and lock.tolist() == [0, 1]
    error = _out_of_bounds(lambda: _atomic_kernel[(1,)](x, total, lock, 10, BINS=5, LOCK_OFFSET=0, BLOCK=16))
    assert error.details["access"] == "atomic" and error.details["argument"] == "total_ptr"
    assert error.details["offset"] == 4 and error.details["lanes_out_of_bounds"] == 2
    assert error.details["lanes_active"] == 10
    error = _out_of_bounds(lambda: _atomic_kernel[(1,)](x, total, lock, 10, BINS=4, LOCK_OFFSET=2, BLOCK=16))
    assert error.details["argument"] == "lock_ptr" and error.details["offset"] == 2
    assert error.details["dtype"] == "int32"


@triton.jit
def _block_pointer_kernel(x_ptr, out_ptr, M, N, CHECK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out = 2 * x, [M, N] row-major, one BLOCK_M x BLOCK_N tile per program; edges checked when asked."""
    start = (tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N)
    source = tl.make_block_ptr(x_ptr, (M, N), (N, 1), start, (BLOCK_M, BLOCK_N), (1, 0))
    target = tl.make_block_ptr(out_ptr, (M, N), (N, 1), start, (BLOCK_M, BLOCK_N), (1, 0))
    if CHECK:
        tile = tl.load(source, boundary_check=(0, 1), padding_option="zero")
        tl.store(target, tile * 2, boundary_check=(0, 1))
    else:
        tl.store(target, tl.load(source) * 2)


@pytest.mark.parametrize("shape", [(13, 7), (33, 20)])
def test_block_pointers_with_and_without_boundary_checks(shape):
    x, out = _random(*shape), torch.zeros(shape)
    grid = (triton.cdiv(shape[0], 16), triton.cdiv(shape[1], 8))
    _block_pointer_kernel[grid](x, out, *shape, CHECK=True, BLOCK_M=16, BLOCK_N=8)
    assert torch.equal(out, 2 * x)
    error = _out_of_bounds(lambda: _block_pointer_kernel[grid](x, out, *shape, CHECK=False, BLOCK_M=16, BLOCK_N=8))
    assert error.details["argument"] == "x_ptr" and error.details["access"] == "load"
    assert error.details["offset"] >= shape[0] * shape[1] and error.details["valid_offsets"] == [0, x.numel() - 1]


@triton.jit
def _descriptor_kernel(x_desc, out_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out = x + 1 through TMA-style descriptors: a host-built one for x, an in-kernel one for out."""
    out_desc = tl.make_tensor_descriptor(out_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    row, col = tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N
    out_desc.store([row, col], x_desc.load([row, col]) + 1)


@pytest.mark.parametrize("shape", [(13, 8), (40, 24)])
def test_tensor_descriptors_pad_edges_and_refuse_a_shape_past_the_storage(shape):
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8))
    M, N = shape
    x, out = _random(M, N), torch.zeros(M, N)
    grid = (triton.cdiv(M, 16), triton.cdiv(N, 16))
    _descriptor_kernel[grid](TensorDescriptor.from_tensor(x, [16, 16]), out, M, N, BLOCK_M=16, BLOCK_N=16)
    assert torch.equal(out, x + 1)
    too_tall = TensorDescriptor(x, [M + 3, N], [N, 1], [16, 16])  # claims rows the storage lacks
    error = _out_of_bounds(lambda: _descriptor_kernel[grid](too_tall, out, M, N, BLOCK_M=16, BLOCK_N=16))
    assert error.details["argument"] == "x_desc" and error.details["offset"] == M * N
    assert error.details["valid_offsets"] == [0, M * N - 1]


@triton.jit
def _from_integer_kernel(address, out_ptr):
    tl.store(out_ptr, tl.load(address.to(tl.pointer_type(tl.float32))))


def test_pointer_made_from_an_integer_is_refused():
    x, out = _random(4), torch.empty(1)
    error = _out_of_bounds(lambda: _from_integer_kernel[(1,)](x.data_ptr(), out))
    assert error.details["argument"] is None and error.details["offset"] is None
    assert str(error).startswith("load through a pointer not derived from any tensor argument")


@triton.jit
def _packed_store_kernel(x_ptr, out_ptr, wide_out_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets))  # bfloat16 into bfloat16
    tl.store(wide_out_ptr.to(tl.pointer_type(tl.float32)) + offsets, tl.load(x_ptr + offsets).to(tl.float32))


def test_stores_note_the_width_they_write_at():
    """Each storage a launch stores into is noted with the widths of its stores: a pointer cast's, not the width the
    memory was given at; loads note nothing."""
    from fusionforge.verify.interpreter import take_stored_widths

    x, out, wide = _random(16, dtype=torch.bfloat16), torch.empty(16, dtype=torch.bfloat16), torch.empty(
        32, dtype=torch.bfloat16)
    take_stored_widths()
    _packed_store_kernel[(1,)](x, out, wide, BLOCK=16)
    stored = take_stored_widths()
    assert stored == {out.untyped_storage().data_ptr(): {2}, wide.untyped_storage().data_ptr(): {4}}
    assert take_stored_widths() == {}
    assert torch.equal(wide.view(torch.float32), x.float())


def test_honest_kernels_pass():
    buffer = _random(100)
    view = buffer[20:70]  # a slice: storage offset 20, the whole buffer reachable from it
    out = torch.empty(50)
    _copy(view, out, 50, shift=-20)
    assert torch.equal(out, buffer[:50])
    _copy(view, out, 50, shift=30)  # reads the last element of the storage
    assert torch.equal(out, buffer[50:])
    _copy(view, out, 0, shift=10**12)  # every lane masked off: none checked, none touched
    short, padded = _random(10), torch.zeros(64)
    _copy(short, padded, 10, store_masked=False)  # lanes 10..63 of the load lie past short's end, masked off
    assert torch.equal(padded[:10], short) and torch.equal(padded[10:], torch.full((54,), -1.0))
    # a view at the very end of its storage: the error names its own offsets
    error = _out_of_bounds(lambda: _copy(view, out, 50, shift=31))
    assert error.details["valid_offsets"] == [-20, 79] and error.details["offset"] == 80


@triton.autotune(configs=[triton.Config({"BLOCK": 32}, num_warps=4)], key=["n"])
@triton.jit
def _autotuned_add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=inside) + tl.load(y_ptr + offsets, mask=inside),
             mask=inside)


def test_autotuned_and_several_kernels_pass():
    x, y, out = _random(77), _random(77, seed=1), torch.empty(77)
    _autotuned_add_kernel[lambda meta: (triton.cdiv(77, meta["BLOCK"]),)](x, y, out, 77)
    assert torch.equal(out, x + y)
    twice = torch.empty(77)
    _copy(out, twice, 77)
    assert torch.equal(twice, x + y)
    error = _out_of_bounds(lambda: _autotuned_add_kernel[(3,)](x, _random(50), out, 77))
    assert error.details["kernel"] == "_autotuned_add_kernel" and error.details["argument"] == "y_ptr"


@triton.autotune(configs=[triton.Config({"WHICH": k}) for k in range(3)], key=["n"])
@triton.jit
def _which_config_kernel(out_ptr, n, WHICH: tl.constexpr):
    offsets = tl.arange(0, 16)
    tl.store(out_ptr + offsets, tl.full([16], WHICH, tl.int32), mask=offsets < n)


def test_tuning_runs_each_config_once_and_the_first_wins():
    """The interpreter has no benchmarker: a tuning runs each config once, as a GPU's trials do (so an output they
    add into shows it), and picks the first (the checker forces the others, one run each)."""
    install_gpu_semantics()
    for n in (5, 9):
        out = torch.full((16,), -1, dtype=torch.int32)
        _which_config_kernel[(1,)](out, n)
        assert bool((out[:n] == 0).all()) and bool((out[n:] == -1).all())
        assert _which_config_kernel.best_config.kwargs["WHICH"] == 0


@triton.autotune(configs=[triton.Config({"WHICH": k}, num_warps=w, num_stages=s) for k in range(2) for w in (1, 4)
                          for s in (1, 3)], key=["n"])
@triton.jit
def _warps_only_kernel(out_ptr, n, WHICH: tl.constexpr):
    offsets = tl.arange(0, 16)
    tl.store(out_ptr + offsets, tl.full([16], WHICH, tl.int32), mask=offsets < n)


def test_the_monitor_notes_distinct_configs_and_forces_each(monkeypatch):
    """Of eight configs, the two with distinct meta-parameters count and each runs once while tuning; ``forced``
    runs the config it names untuned, as a cached choice, and every call is noted in ``tuners``."""
    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit

    from fusionforge.verify.launches import LaunchMonitor

    install_gpu_semantics()
    for cls in (jit.JITFunction, interpreter.InterpretedFunction, autotuner.Autotuner, autotuner.Heuristics):
        monkeypatch.setattr(cls, "run", cls.run)  # the monitor's wrappers are undone after the test
    monitor = LaunchMonitor()
    monitor.install()
    monitor.tuners = {}
    out = torch.full((16,), -1, dtype=torch.int32)
    _warps_only_kernel[(1,)](out, 7)
    (name, configs, chosen), = monitor.tuners.values()
    assert name == "_warps_only_kernel" and [c.kwargs["WHICH"] for c in configs] == [0, 1] and chosen is configs[0]
    assert len(monitor.launches) == 3  # a trial of each distinct config, then the winner
    for config, n in ((configs[1], 7), (configs[0], 9), (configs[1], 9)):
        monitor.forced = {_warps_only_kernel: config}
        out = torch.full((16,), -1, dtype=torch.int32)
        _warps_only_kernel[(1,)](out, n)
        expected = config.kwargs["WHICH"]
        assert bool((out[:n] == expected).all()) and bool((out[n:] == -1).all()), (config, out)
    assert len(monitor.launches) == 6  # forced runs tune nothing


def test_a_forced_config_the_gpu_cannot_run_gives_way_to_the_tuned_one(monkeypatch):
    """A forced config that fails as tuning would skip it (out of resources) is not run: the tuned choice runs."""
    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interpreter
    import triton.runtime.jit as jit
    from triton.runtime.errors import OutOfResources

    from fusionforge.verify.launches import LaunchMonitor

    install_gpu_semantics()
    for cls in (jit.JITFunction, interpreter.InterpretedFunction, autotuner.Autotuner, autotuner.Heuristics):
        monkeypatch.setattr(cls, "run", cls.run)
    monitor = LaunchMonitor()
    monitor.install()
    kernel = _warps_only_kernel.fn
    real_run = type(kernel).run

    def no_room_for_one(self, *args, **kwargs):
        if kwargs.get("WHICH") == 1:
            raise OutOfResources(300000, 232448, "shared memory")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(type(kernel), "run", no_room_for_one)
    one = next(c for c in _warps_only_kernel.configs if c.kwargs["WHICH"] == 1)
    monitor.forced = {_warps_only_kernel: one}
    out = torch.full((16,), -1, dtype=torch.int32)
    _warps_only_kernel[(1,)](out, 11)
    assert bool((out[:11] == 0).all())


# -- programs side by side ----------------------------------------------------------------------------


@triton.jit
def _first_arriver_scale(x_ptr, claimed_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """The first program to swap the flag computes max |x| for all; the rest read it without waiting (a race)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_xchg(claimed_ptr, 1) == 0:
        amax = 0.0
        for start in range(0, n, BLOCK):
            others = start + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
        tl.store(scale_ptr, amax)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.load(scale_ptr), mask=offsets < n)


@triton.jit
def _first_arriver_scale_read_late(x_ptr, claimed_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """As _first_arriver_scale, but the rest first make one load more than the claimer makes before its store, and
    every program reads the scale with an atomic."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_xchg(claimed_ptr, 1) == 0:
        amax = 0.0
        for start in range(0, n, BLOCK):
            others = start + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
        tl.store(scale_ptr, amax)
    else:
        for _ in range(0, n + BLOCK, BLOCK):
            tl.load(x_ptr + tl.arange(0, BLOCK), mask=tl.arange(0, BLOCK) < n, other=0.0)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.atomic_add(scale_ptr, 0.0), mask=offsets < n)


@triton.jit
def _first_arriver_publishes_scale(x_ptr, claimed_ptr, ready_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """The first program to swap the flag computes max |x|, stores it and then raises ``ready`` with an atomic; the
    rest spin on ``ready`` with an atomic before they read it (ordered: right in any interleaving)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_xchg(claimed_ptr, 1) == 0:
        amax = 0.0
        for start in range(0, n, BLOCK):
            others = start + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
        tl.store(scale_ptr, amax)
        tl.atomic_xchg(ready_ptr, 1)
    else:
        while tl.atomic_add(ready_ptr, 0) == 0:
            pass
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.load(scale_ptr), mask=offsets < n)


@triton.jit
def _row_taken_then_counted(x_ptr, taken_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Each program copies the row the counter names, read with one atomic and advanced with another: two programs
    side by side take the same row (a race of atomics alone)."""
    row = tl.atomic_add(taken_ptr, 0)
    tl.atomic_add(taken_ptr, 1)
    offsets = row * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)


@triton.jit
def _last_arriver_scale(x_ptr, count_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr, PROGRAMS: tl.constexpr):
    """The last program to count itself in computes max |x| and folds it in with an atomic max; every program reads
    it with an atomic, without waiting for it (a race of atomics alone)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_add(count_ptr, 1) == PROGRAMS - 1:
        amax = 0.0
        for start in range(0, n, BLOCK):
            others = start + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
        tl.atomic_max(scale_ptr, amax)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.atomic_add(scale_ptr, 0.0), mask=offsets < n)


@triton.jit
def _claim_tested_then_swapped(x_ptr, claimed_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Test and test-and-set: a program reads the flag with an atomic and, only where it is clear, swaps it with a
    compare-and-swap; the winner stores max |x|, then raises the flag to 2 with an atomic. Every program reads the
    flag with an atomic again, then the scale, without waiting for the 2."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_add(claimed_ptr, 0) == 0:
        if tl.atomic_cas(claimed_ptr, 0, 1) == 0:
            amax = 0.0
            for start in range(0, n, BLOCK):
                others = start + tl.arange(0, BLOCK)
                amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
            tl.store(scale_ptr, amax)
            tl.atomic_xchg(claimed_ptr, 2)
    tl.atomic_add(claimed_ptr, 0)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.load(scale_ptr), mask=offsets < n)


@triton.jit
def _first_arriver_scale_after_a_counted_spin(x_ptr, claimed_ptr, scale_ptr, out_ptr, n, BLOCK: tl.constexpr,
                                              SPINS: tl.constexpr):
    """As _first_arriver_scale_read_late, but the rest first make SPINS atomics on the flag: a wait of a fixed
    count, not for a value."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if tl.atomic_xchg(claimed_ptr, 1) == 0:
        amax = 0.0
        for start in range(0, n, BLOCK):
            others = start + tl.arange(0, BLOCK)
            amax = tl.maximum(amax, tl.max(tl.abs(tl.load(x_ptr + others, mask=others < n, other=0.0)), axis=0))
        tl.atomic_max(scale_ptr, amax)
    else:
        for _ in range(SPINS):
            tl.atomic_add(claimed_ptr, 0)
    x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + offsets, x / tl.atomic_add(scale_ptr, 0.0), mask=offsets < n)


@triton.jit
def _chained_sum(x_ptr, ticket_ptr, flags_ptr, sums_ptr, n, BLOCK: tl.constexpr, TICKET: tl.constexpr):
    """Running block sums: tile t adds its block's sum to tile t - 1's total, spinning on t - 1's flag until it is
    published. The tile is the program id, or with TICKET the order of arrival at an atomic on a counter."""
    tile = tl.atomic_add(ticket_ptr, 1) if TICKET else tl.program_id(0)
    offsets = tile * BLOCK + tl.arange(0, BLOCK)
    total = tl.sum(tl.load(x_ptr + offsets, mask=offsets < n, other=0.0), axis=0)
    if tile > 0:
        while tl.atomic_add(flags_ptr + tile - 1, 0) == 0:
            pass
        total += tl.load(sums_ptr + tile - 1)
    tl.store(sums_ptr + tile, total)
    tl.atomic_xchg(flags_ptr + tile, 1)


@triton.jit
def _copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)


@triton.jit
def _locked_sum(x_ptr, lock_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Each program adds its block's sum into out under a spin lock (right in any interleaving)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    partial = tl.sum(tl.load(x_ptr + offsets, mask=offsets < n, other=0.0), axis=0)
    while tl.atomic_cas(lock_ptr, 0, 1) == 1:
        pass
    tl.store(out_ptr, tl.load(out_ptr) + partial)
    tl.atomic_xchg(lock_ptr, 0)


@triton.jit
def _last_arriver_sum(x_ptr, partial_ptr, count_ptr, out_ptr, n, BLOCK: tl.constexpr, PROGRAMS: tl.constexpr):
    """Each program stores its block's sum, then counts itself in; the last to arrive adds the partial sums."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.load(x_ptr + offsets, mask=offsets < n, other=0.0), axis=0))
    if tl.atomic_add(count_ptr, 1) == PROGRAMS - 1:
        tl.store(out_ptr, tl.sum(tl.load(partial_ptr + tl.arange(0, PROGRAMS)), axis=0))


@pytest.fixture
def reversed_order():
    interpreter.PROGRAM_ORDER["reversed"] = True
    yield
    interpreter.PROGRAM_ORDER["reversed"] = False


@pytest.mark.parametrize("n", [1000, 77])
def test_a_first_arriver_race_is_right_in_id_order_and_a_race_reversed(n):
    """One program at a time the claimer's store comes first and the outputs are right; reversed (tracked), the rest
    read the scale with no atomic after the store: a race."""
    x, programs = _random(n), triton.cdiv(n, 64)
    interpreter.PROGRAM_ORDER["reversed"] = False
    out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _first_arriver_scale[(programs,)](x, claimed, scale, out, n, BLOCK=64)
    torch.testing.assert_close(out, x / x.abs().max())
    try:
        interpreter.PROGRAM_ORDER["reversed"] = True
        out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
        race = _raised(lambda: _first_arriver_scale[(programs,)](x, claimed, scale, out, n, BLOCK=64), DataRace)
    finally:
        interpreter.PROGRAM_ORDER["reversed"] = False
    assert race.details["argument"] == "scale_ptr" and race.details["writer"] == [programs - 1, 0, 0]
    assert race.details["access"] == "load" and "no atomic ordering" in str(race)


@pytest.mark.parametrize("programs", [2, 9])
def test_rows_taken_by_a_read_then_counted_are_right_one_at_a_time_and_wrong_in_lockstep(programs, monkeypatch):
    """Only atomics, so no data race: each program takes a row by reading the counter, then counts it in with a
    second atomic. One program at a time every row is taken once; side by side (lockstep) they take the same row."""
    n = programs * 64 - 3
    x = _random(n)
    out, taken = torch.zeros(n), torch.zeros(1, dtype=torch.int32)
    _row_taken_then_counted[(programs,)](x, taken, out, n, BLOCK=64)
    torch.testing.assert_close(out, x)
    monkeypatch.setitem(interpreter.PROGRAM_ORDER, "reversed", True)
    out, taken = torch.zeros(n), torch.zeros(1, dtype=torch.int32)
    _row_taken_then_counted[(programs,)](x, taken, out, n, BLOCK=64)
    assert taken.item() == programs and torch.equal(out[:64], x[:64]) and not out[64:].any()


@pytest.mark.parametrize("n", [1000, 77])
def test_a_read_timed_to_follow_the_claimers_atomic_comes_too_early_in_lockstep(n, reversed_order, monkeypatch):
    """The rest wait out the claimer's loads, then read the scale with an atomic, which the claimer's own atomic read
    published (no data race one program at a time). In lockstep the first to arrive runs last: they read it first."""
    x, programs = _random(n), triton.cdiv(n, 64)
    out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _first_arriver_scale_read_late[(programs,)](x, claimed, scale, out, n, BLOCK=64)
    assert scale.item() == x.abs().max().item() and claimed.item() == 1  # one run's effects, from the inputs
    assert torch.isfinite(out[-(n - (programs - 1) * 64):]).all()  # the claimer's own row, scaled after its store
    assert not torch.isfinite(out).all()  # the others divided by the scale before it was written


@pytest.mark.parametrize("programs", [2, 5])
def test_each_lockstep_schedule_catches_one_kind_of_claim(programs, reversed_order, monkeypatch):
    """A last arriver's claim is right when the latest arrival runs first, wrong when the earliest does. A first
    arriver's is wrong in both: the rest's swap of the flag changes nothing, so they go on in turn before it."""
    n = programs * 64 - 9
    x = _random(n)
    finite = []
    for latest_first in (True, False):
        monkeypatch.setitem(interpreter.PROGRAM_ORDER, "latest_first", latest_first)
        out, count, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
        _last_arriver_scale[(programs,)](x, count, scale, out, n, BLOCK=64, PROGRAMS=programs)
        finite.append(bool(torch.isfinite(out).all()))
    assert finite == [True, False]
    for latest_first in (True, False):
        monkeypatch.setitem(interpreter.PROGRAM_ORDER, "latest_first", latest_first)
        out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
        _first_arriver_scale_read_late[(programs,)](x, claimed, scale, out, n, BLOCK=64)
        finite.append(bool(torch.isfinite(out).all()))
    assert finite[2:] == [False, False]


@pytest.mark.parametrize("latest_first", [True, False])
def test_a_claim_tested_before_it_is_swapped_runs_after_the_rest(latest_first, reversed_order, monkeypatch):
    """Every program's first atomic, a read of the flag, changes nothing: the programs take turns until the
    compare-and-swap that wins, and the rest, whose swaps fail, read the scale before the winner stores it."""
    monkeypatch.setitem(interpreter.PROGRAM_ORDER, "latest_first", latest_first)
    n = 6 * 64 - 11
    x = _random(n)
    out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _claim_tested_then_swapped[(6,)](x, claimed, scale, out, n, BLOCK=64)
    assert claimed.item() == 2 and scale.item() == x.abs().max().item()
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("spins", [16, 200])
def test_a_wait_of_a_fixed_count_of_atomics_ends_before_the_claimer_is_done(spins, reversed_order):
    """A program that spins runs ahead, then steps again after each step of the one running: a wait of 16 or 200
    atomics, long enough to be taken for a spin, ends while the claimer still loads its 32 blocks."""
    n = 32 * 64
    x = _random(n)
    out, claimed, scale = torch.empty(n), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _first_arriver_scale_after_a_counted_spin[(32,)](x, claimed, scale, out, n, BLOCK=64, SPINS=spins)
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("programs", [1, 3, 16])
def test_a_value_published_with_an_atomic_is_no_race(programs, reversed_order):
    n = programs * 64 - 7
    x = _random(n)
    out, scale = torch.empty(n), torch.zeros(1)
    claimed, ready = torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    _first_arriver_publishes_scale[(programs,)](x, claimed, ready, scale, out, n, BLOCK=64)
    torch.testing.assert_close(out, x / x.abs().max())


@pytest.mark.parametrize("programs", [1, 4, 16])
def test_a_lock_and_a_last_arriver_stay_right_in_lockstep(programs, reversed_order):
    n = programs * 64 - 5
    x = _random(n)
    lock, out = torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _locked_sum[(programs,)](x, lock, out, n, BLOCK=64)
    torch.testing.assert_close(out, x.sum().reshape(1), rtol=1e-5, atol=1e-5)
    assert lock.item() == 0
    partial, count, out = torch.zeros(programs), torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _last_arriver_sum[(programs,)](x, partial, count, out, n, BLOCK=64, PROGRAMS=programs)
    torch.testing.assert_close(out, x.sum().reshape(1), rtol=1e-5, atol=1e-5)
    assert count.item() == programs  # counted once: the lockstep run started from the launch's inputs


def test_lockstep_runs_more_programs_than_a_wave_and_keeps_its_bounds_checks(reversed_order, monkeypatch):
    monkeypatch.setattr(interpreter, "LOCKSTEP_WAVE", 4)
    n = 13 * 64
    x = _random(n)
    lock, out = torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    _locked_sum[(13,)](x, lock, out, n, BLOCK=64)
    torch.testing.assert_close(out, x.sum().reshape(1), rtol=1e-5, atol=1e-5)
    error = _out_of_bounds(lambda: _locked_sum[(14,)](x, torch.zeros(1, dtype=torch.int32), torch.zeros(1), n + 64,
                                                      BLOCK=64))
    assert error.details["argument"] == "x_ptr" and error.details["program"] == [13, 0, 0]


def test_a_program_waiting_for_a_lower_id_stalls_when_the_order_is_reversed():
    """Waiting on program i - 1 is right in id order; reversed, program i spins while i - 1 cannot run: stalled."""
    programs, n = 5, 5 * 64 - 3
    x = _random(n)
    ticket, flags = torch.zeros(1, dtype=torch.int32), torch.zeros(programs, dtype=torch.int32)
    sums = torch.zeros(programs)
    _chained_sum[(programs,)](x, ticket, flags, sums, n, BLOCK=64, TICKET=False)
    torch.testing.assert_close(sums[-1], x.sum(), rtol=1e-5, atol=1e-5)
    try:
        interpreter.PROGRAM_ORDER["reversed"] = True
        flags, sums = torch.zeros(programs, dtype=torch.int32), torch.zeros(programs)
        stall = _raised(lambda: _chained_sum[(programs,)](x, ticket, flags, sums, n, BLOCK=64, TICKET=False),
                        interpreter.StalledProgram)
    finally:
        interpreter.PROGRAM_ORDER["reversed"] = False
    assert stall.details["program"] == [programs - 1, 0, 0] and stall.details["argument"] == "flags_ptr"
    assert stall.details["offset"] == programs - 2 and "last id first" in str(stall)


@pytest.mark.parametrize("latest_first", [True, False])
def test_a_wait_for_an_earlier_ticket_is_right_in_every_order(latest_first, reversed_order, monkeypatch):
    monkeypatch.setitem(interpreter.PROGRAM_ORDER, "latest_first", latest_first)
    programs, n = 5, 5 * 64 - 3
    x = _random(n)
    ticket, flags = torch.zeros(1, dtype=torch.int32), torch.zeros(programs, dtype=torch.int32)
    sums = torch.zeros(programs)
    _chained_sum[(programs,)](x, ticket, flags, sums, n, BLOCK=64, TICKET=True)
    torch.testing.assert_close(sums[-1], x.sum(), rtol=1e-5, atol=1e-5)
    assert ticket.item() == programs


def test_a_launch_without_atomics_runs_once(reversed_order, monkeypatch):
    ran = []
    monkeypatch.setattr(interpreter, "_lockstep_call", lambda *args, **kwargs: ran.append(args))
    x = _random(100)
    out = torch.empty(100)
    _copy_kernel[(2,)](x, out, 100, BLOCK=64)
    torch.testing.assert_close(out, x)
    assert not ran

