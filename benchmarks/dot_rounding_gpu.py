"""How a GPU's tl.dot rounds its operands: the evidence for the interpreter's dot (verify/interpreter.py).

    python benchmarks/dot_rounding_gpu.py > benchmarks/results/dot_rounding_h200.txt    # on a CUDA GPU

1. Crafted fp32 operands: A[i, 0] = 1 + k_i * 2**-23 (k_i: the low 13 mantissa bits), B[0, :] = 1, every
   other element 0, so C[i, j] is exactly what the tensor cores made of A[i, 0]. Printed per precision
   (default, "tf32", "tf32x3", "ieee"): which of truncation (toward zero, x & 0xFFFFE000),
   round-half-away (cvt.rna.tf32.f32) or the exact value it equals.
2. Random 64x64x64 fp32 operands: the relative L2 error of each precision against float64, and its
   distance from the two emulations (truncated or rounded operands, float64 products).
3. fp16 and bf16 operands: the error against exact float64 products of the same 16-bit values.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _dot_kernel(a_ptr, b_ptr, c_ptr, N: tl.constexpr, PRECISION: tl.constexpr):
    """c = a @ b for one [N, N] tile; PRECISION "default" leaves input_precision to tl.dot."""
    i = tl.arange(0, N)
    a = tl.load(a_ptr + i[:, None] * N + i[None, :])
    b = tl.load(b_ptr + i[:, None] * N + i[None, :])
    if PRECISION == "default":
        c = tl.dot(a, b)
    else:
        c = tl.dot(a, b, input_precision=PRECISION)
    tl.store(c_ptr + i[:, None] * N + i[None, :], c)


def dot(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    c = torch.empty(a.shape[0], b.shape[1], device="cuda", dtype=torch.float32)
    _dot_kernel[(1,)](a.cuda(), b.cuda(), c, N=a.shape[0], PRECISION=precision)
    return c.cpu()


def truncated(x: torch.Tensor) -> torch.Tensor:
    """x with its low 13 mantissa bits dropped (toward zero)."""
    return (x.view(torch.int32) & -(2**13)).view(torch.float32)


def rounded(x: torch.Tensor) -> torch.Tensor:
    """x rounded to 10 mantissa bits, half away from zero (cvt.rna.tf32.f32)."""
    return ((x.view(torch.int32) + 2**12) & -(2**13)).view(torch.float32)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


def main() -> None:
    print(torch.cuda.get_device_name(), "triton", triton.__version__, "torch", torch.__version__)
    n = 64
    low_bits = torch.tensor([0x0000, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x0001, 0x17FF, 0x1800], dtype=torch.int32)
    values = (torch.tensor(1.0).view(torch.int32) | low_bits).view(torch.float32)
    values = torch.cat([values, -values])
    a, b = torch.zeros(n, n), torch.zeros(n, n)
    a[: len(values), 0] = values
    b[0, :] = 1.0
    print("\n1. crafted operands, low 13 bits", [hex(int(k)) for k in low_bits])
    for precision in ("default", "tf32", "tf32x3", "ieee"):
        c = dot(a, b, precision)[: len(values), 0]
        equal = [name for name, want in (("truncated", truncated(values)), ("rounded", rounded(values)),
                                         ("exact", values)) if torch.equal(c, want)]
        print(f"  {precision:8s} equals {equal or 'none of them'}: {[hex(int(v)) for v in c.view(torch.int32)[:8]]}")
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    exact = a.double() @ b.double()
    print("\n2. random operands: relative L2 error against float64, and against each emulation")
    for precision in ("default", "tf32x3", "ieee"):
        c = dot(a, b, precision)
        emulated = {name: rel_err(c, f(a).double() @ f(b).double()) for name, f in (("truncated", truncated),
                                                                                      ("rounded", rounded))}
        print(f"  {precision:8s} {rel_err(c, exact):.3g}; truncated operands {emulated['truncated']:.3g}; "
              f"rounded operands {emulated['rounded']:.3g}")
    print("\n3. 16-bit operands: relative L2 error against exact products")
    for dtype in (torch.float16, torch.bfloat16):
        a16, b16 = a.to(dtype), b.to(dtype)
        print(f"  {str(dtype):15s} {rel_err(dot(a16, b16, 'default'), a16.double() @ b16.double()):.3g}")


if __name__ == "__main__":
    main()
