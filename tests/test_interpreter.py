"""The CPU interpreter must round to bfloat16 as the GPU does, or correct bf16 kernels fail by chance."""

import os

import pytest
import torch
import triton
import triton.language as tl

from fusionforge.verify.interpreter import faithful_bfloat16

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter only")


@triton.jit
def _casts_kernel(x_ptr, half_ptr, stored_ptr, cast_ptr, from_half_ptr, toward_zero_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offsets)
    tl.store(stored_ptr + offsets, x)  # implicit cast on store
    tl.store(cast_ptr + offsets, x.to(tl.bfloat16))
    tl.store(from_half_ptr + offsets, tl.load(half_ptr + offsets).to(tl.bfloat16))
    tl.store(toward_zero_ptr + offsets, x.to(tl.bfloat16, fp_downcast_rounding="rtz"))


def test_float_to_bfloat16_rounds_to_nearest_even():
    assert faithful_bfloat16()
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
