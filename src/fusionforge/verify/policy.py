"""What the child process enforces: the ops a wrapper may dispatch, the poison of fresh memory, and PyTorch's
settings left as they were."""

from contextlib import contextmanager

import torch

# Allocation, view, copy and metadata ops: what a wrapper may dispatch outside Triton launches.
ALLOWED_OPS = frozenset({
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "zeros", "zeros_like",
    "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill_", "zero_",
    "view", "_unsafe_view", "reshape", "alias", "as_strided", "expand", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "select", "slice", "split", "split_with_sizes", "unbind", "narrow", "detach",
    "flatten", "unflatten", "view_as", "expand_as", "movedim", "contiguous", "clone", "copy_", "_to_copy",
    "to", "set_", "resize_", "_reshape_alias", "sym_size", "sym_stride",
    "sym_numel", "sym_storage_offset", "is_contiguous", "stride", "size", "numel", "dim", "empty_permuted",
    "arange",
})
# ops that copy values from the tensors they read (to, contiguous and reshape dispatch these)
COPY_OPS = frozenset({"_to_copy", "copy_", "clone", "fill_"})


def conversion(name: str, args: tuple, out) -> str | None:
    """``(src -> dst)`` where a copy op (a fill from a tensor too) changes a value's dtype and either side is
    floating point or complex: a conversion rounds (float32 -> bfloat16: the kernel's cast on store, done by
    PyTorch; complex64 -> complex32 the same on pairs) or decodes (float8 -> float32: half of a dequantization),
    which is compute. None for other ops and for copies between integer widths (indices)."""
    if name not in COPY_OPS:
        return None
    src, dst = (args[1] if len(args) > 1 else None, args[0]) if name in ("copy_", "fill_") else \
        (args[0] if args else None, out)
    if not (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)) or src.dtype == dst.dtype:
        return None
    if not any(t.is_floating_point() or t.is_complex() for t in (src, dst)):
        return None
    return f"{str(src.dtype).replace('torch.', '')} -> {str(dst.dtype).replace('torch.', '')}"


def op_name(func) -> str:
    """A dispatched op's name as the policy reads it: an aten op's packet name; an op of another namespace
    (torch.library) by its full name, so no allowed name covers it (its body runs untraced)."""
    return func.overloadpacket.__name__ if func.namespace == "aten" else str(func)


def computed_op(func, args: tuple, out, allowed: frozenset = ALLOWED_OPS) -> str | None:
    """What a wrapper's own op (already run) computes outside its Triton kernels, as the verdict names it: the op
    when it is not ``allowed``, the op and its dtypes when it converts (``conversion``); None for an allowed op."""
    name = op_name(func)
    if name not in allowed:
        return str(func)
    converts = conversion(name, args, out)
    return f"{func} ({converts})" if converts else None


def subclasses(types) -> list[type]:
    """The tensor subclasses among a dispatched op's ``types``: their own __torch_dispatch__ runs next, with the
    dispatch mode that traces the wrapper off the stack."""
    return [t for t in types if t is not torch.Tensor]


ALLOCATING_OPS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
                            "empty_permuted"})

# Every fresh allocation is filled, so a kernel's launch always changes the memory it writes (a recycled block could
# already hold the output's bytes). Floats get NaN bit patterns with a payload, so the parent can tell "never written"
# from a computed NaN; float8 has one NaN, 0x7F; int64 (indices) a value no index can take; other integers 0xA5 bytes.
# Booleans stay unfilled: any byte but 0 and 1 is not a bool.
POISON = {torch.float32: (torch.int32, 0x7FF0DEAD), torch.float16: (torch.int16, 0x7EAD),
          torch.bfloat16: (torch.int16, 0x7FED), torch.float64: (torch.int64, 0x7FF8DEADDEADDEAD),
          torch.float8_e4m3fn: (torch.uint8, 0x7F), torch.float8_e5m2: (torch.uint8, 0x7F),
          torch.int64: (torch.int64, -0x21524111DEADBEEF), torch.int32: (torch.int32, -0x5A5A5A5B),
          torch.int16: (torch.int16, -0x5A5B), torch.int8: (torch.int8, -0x5B), torch.uint8: (torch.uint8, 0xA5)}


# PyTorch's global settings that change what its ops compute or how fast they run: TF32 and reduced-precision
# reductions in cuBLAS and cuDNN, cuDNN itself, the attention backends, deterministic algorithms. A file that
# changes one changes the PyTorch it is judged against (a float32 answer rounded to TF32, an eager convolution
# without cuDNN): the checker's child and the timer read them before the file's import and after its calls.
_SETTINGS = (
    ("torch.backends.cuda.matmul.fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision),
    ("torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction",
     lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
    ("torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction",
     lambda: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction),
    ("torch.backends.cuda.matmul.allow_fp16_accumulation", lambda: torch.backends.cuda.matmul.allow_fp16_accumulation),
    ("torch.backends.cudnn.enabled", lambda: torch.backends.cudnn.enabled),
    ("torch.backends.cudnn.benchmark", lambda: torch.backends.cudnn.benchmark),
    ("torch.backends.cudnn.deterministic", lambda: torch.backends.cudnn.deterministic),
    ("torch.backends.cudnn.conv.fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
    ("torch.backends.cudnn.rnn.fp32_precision", lambda: torch.backends.cudnn.rnn.fp32_precision),
    ("flash attention (torch.backends.cuda.enable_flash_sdp)", lambda: torch.backends.cuda.flash_sdp_enabled()),
    ("memory-efficient attention (torch.backends.cuda.enable_mem_efficient_sdp)",
     lambda: torch.backends.cuda.mem_efficient_sdp_enabled()),
    ("math attention (torch.backends.cuda.enable_math_sdp)", lambda: torch.backends.cuda.math_sdp_enabled()),
    ("cuDNN attention (torch.backends.cuda.enable_cudnn_sdp)", lambda: torch.backends.cuda.cudnn_sdp_enabled()),
    ("torch.use_deterministic_algorithms", lambda: torch.are_deterministic_algorithms_enabled()),
)


def torch_settings() -> dict[str, str]:
    """PyTorch's settings now (``_SETTINGS``, a tuple: nothing can be taken out of it): name -> value as text, or
    the error reading it raised."""
    settings = {}
    for name, read in _SETTINGS:
        try:
            settings[name] = str(read())
        except Exception as exc:  # noqa: BLE001 - a setting this PyTorch lacks reads the same before and after
            settings[name] = f"unreadable ({type(exc).__name__})"
    return settings


def changed_settings(before: dict[str, str]) -> list[str]:
    """The settings that differ from ``before`` (``torch_settings``), each as 'name: before -> now'."""
    now = torch_settings()
    return [f"{name}: {value} -> {now[name]}" for name, value in before.items() if now[name] != value]


@contextmanager
def full_float32():
    """Inside, PyTorch's float32 matmuls and convolutions round as float32, not TF32 (cuDNN's convolutions take
    TF32 by default): PyTorch's own answer to a float32 task, and its eager and compiled timings, do the work the
    checker holds a kernel to."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    # through the flags of old: set through both APIs, PyTorch refuses to read them (Inductor reads the old)
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
