"""What the child process enforces: the ops a wrapper may dispatch, and the poison of fresh memory."""

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
ALLOCATING_OPS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
                            "empty_permuted"})

# NaN bit patterns with a payload, so the parent can tell "never written" from a computed NaN; for int64 (indices),
# a value no index can take.
POISON = {torch.float32: (torch.int32, 0x7FF0DEAD), torch.float16: (torch.int16, 0x7EAD),
          torch.bfloat16: (torch.int16, 0x7FED), torch.float64: (torch.int64, 0x7FF8DEADDEADDEAD),
          torch.int64: (torch.int64, -0x21524111DEADBEEF)}
