"""Make Triton's CPU interpreter round to bfloat16 the way the GPU does.

Triton 3.6's interpreter converts float32 -> bfloat16 by dropping the low 16 bits (round toward
zero, up to 1 ulp of error, always toward zero), for ``.to(tl.bfloat16)`` and for the implicit cast
in ``tl.store``. A GPU rounds to nearest even (``cvt.rn.bf16.f32``, at most 1/2 ulp). A correct
bfloat16 kernel checked on the CPU would then carry twice the rounding error of PyTorch and could
fail the checker by chance, or pass only thanks to a looser tolerance. ``faithful_bfloat16()``
replaces the interpreter's float -> bfloat16 conversion with torch's round-to-nearest-even, so the
CPU check sees the numbers the GPU would produce. Other conversions are left to the interpreter.
"""

from __future__ import annotations

import numpy as np
import torch

_FLOAT_SOURCES = ("fp16", "fp32", "fp64")


def faithful_bfloat16() -> bool:
    """Patch the interpreter's float -> bfloat16 conversion; True when it was patched."""
    try:
        from triton._C.libtriton import ir
        from triton.runtime import interpreter
    except ImportError:
        return False
    original = getattr(interpreter, "_convert_float", None)
    if original is None or getattr(original, "faithful", False):
        return original is not None

    def convert(values, input_dtype, output_dtype, rounding_mode):
        if (output_dtype.name == "bf16" and input_dtype.name in _FLOAT_SOURCES
                and rounding_mode != ir.ROUNDING_MODE.RTZ):
            rounded = torch.from_numpy(np.ascontiguousarray(values)).to(torch.bfloat16)
            return rounded.view(torch.int16).numpy().view(np.uint16).reshape(values.shape)
        return original(values, input_dtype, output_dtype, rounding_mode)

    convert.faithful = True
    interpreter._convert_float = convert
    return True
