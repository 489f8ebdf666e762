"""The built-in implementer: renders a complete kernel file for a task from the op catalog.

A plan is chosen from the chain's shape; each plan writes one named Triton kernel with fp32 math
and one cast on store, and a wrapper that only allocates, makes inputs contiguous and launches.
Plans so far:

* pointwise: every op is unary or binary (easy tasks). One blocked kernel over the flattened
  output; a per-column vector is read at ``offset % N``, a per-row vector at ``offset // N``, a full
  tensor at ``offset``, a scalar is a kernel argument. 1024 elements per program over 4 warps gives
  each thread 8 contiguous elements (16-byte fp16 / 32-byte fp32 accesses).

* row: pointwise ops, one reduction or normalization, pointwise ops (medium tasks). One program
  per row of the reduced or normalized dimension, the row held in registers (BLOCK_N lanes, the
  next power of two, masked; 4/8/16 warps as the row grows); pointwise ops before and after are
  fused, operands indexed per lane or once per program. Group norm's rows are one group of one
  sample. Rows longer than MAX_ROW_BLOCK need a looped variant, not written yet.

Matmul roots and chains with several reductions raise UnsupportedTask naming the missing plan.
Generation is deterministic: the same task gives the same file.
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass

from fusionforge import ops as catalog
from fusionforge.kernelfile import render
from fusionforge.ops import Family
from fusionforge.tasks import SCALAR_DTYPE, FusionTask, InputSpec, Step, step_label

POINTWISE_BLOCK = 1024
POINTWISE_WARPS = 4
MAX_ROW_BLOCK = 16384  # a row held in registers; longer rows need the looped variant (not written yet)


class UnsupportedTask(ValueError):
    """The built-in code generator has no plan for this chain yet."""


def plan_of(task: FusionTask) -> str:
    families = [catalog.get(s.op).family for s in task.steps]
    if set(families) <= {Family.UNARY, Family.BINARY}:
        return "pointwise"
    rows = [f for f in families if f in (Family.REDUCTION, Family.NORM)]
    if Family.MATMUL not in families and len(rows) == 1:
        return "row"
    what = "a matmul root" if Family.MATMUL in families else "several reductions"
    raise UnsupportedTask(f"the built-in code generator has no plan yet for chains with {what} "
                          f"(task {task.id}: {task.description})")


def generate(task: FusionTask, attempt: int = 1) -> str:
    """The complete kernel file (seed format) implementing ``task``."""
    plan = plan_of(task)
    python = "TASK = " + pprint.pformat(task.to_dict(), width=110, sort_dicts=False) + "\n\n\n" + task.pytorch_source()
    triton_section = {"pointwise": _pointwise, "row": _row}[plan](task)
    return render(task.description, python, triton_section, _get_inputs(task), attempt)


@dataclass
class Layout:
    """Where operands live relative to the values a kernel holds.

    ``index`` maps an operand layout (col, row, full, chan) to its index expression; layouts in
    ``per_program`` are one value per program (loaded without a mask), the others one per lane.
    """

    index: dict[str, str]
    per_program: frozenset = frozenset()

    def load(self, name: str, layout: str, other: str = "0.0") -> str:
        index = self.index[layout]
        if layout in self.per_program:
            return f"{name} = tl.load({name}_ptr + {index}).to(tl.float32)"
        return f"{name} = tl.load({name}_ptr + {index}, mask=mask, other={other}).to(tl.float32)"


def _emit_pointwise(k: int, step: Step, by_name: dict[str, InputSpec], layout: Layout) -> list[str]:
    """Load a binary op's operand (if a tensor) and apply one unary/binary op to h, in fp32."""
    op = catalog.get(step.op)
    params = {name: value for name, value in step.params.items() if name != "operand"}
    lines, names = [], {}
    if op.family is Family.BINARY:
        spec = by_name[step.inputs[0]]
        if spec.dtype != SCALAR_DTYPE:
            # masked lanes are never stored; 1.0 keeps a divisor's dead lanes finite all the same
            lines.append(layout.load(spec.name, step.params["operand"], "1.0" if op.name == "div" else "0.0"))
        names = {"y": spec.name}
    lines.append(f"# {k}. {step_label(step)}: {op.doc}")
    lines.append("h = " + op.triton.format(x="h", **params, **names))
    return lines


def _kernel_args(task: FusionTask) -> list[str]:
    return ["x_ptr"] + [f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in task.inputs[1:]]


def _contiguous(task: FusionTask) -> list[str]:
    return [f"    {i.name} = {i.name}.contiguous()" for i in task.inputs if i.dtype != SCALAR_DTYPE]


def _pointwise(task: FusionTask) -> str:
    by_name = {i.name: i for i in task.inputs}
    layout = Layout({"col": "offsets % n_cols", "row": "offsets // n_cols", "full": "offsets"})
    body = ["h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)"]
    for k, step in enumerate(task.steps, start=1):
        body += _emit_pointwise(k, step, by_name, layout)
    body.append("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}, elementwise over x [{shape}] flattened.\n\n'
           f'    Per-column vectors are read at offset % n_cols, per-row vectors at offset // n_cols; fp32 math, '
           f'one cast on store.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        f"def fused_kernel_triton({', '.join(_kernel_args(task))}, out_ptr, n_elements, n_cols, "
        "BLOCK_SIZE: tl.constexpr):",
        f"    {doc}",
        "    pid = tl.program_id(0)",
        "    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)",
        "    mask = offsets < n_elements",
        *("    " + line for line in body),
    ])
    launch_args = ", ".join(["x", *[i.name for i in task.inputs[1:]], "out", "n_elements", "x.shape[-1]"])
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *_contiguous(task),
        "    out = torch.empty_like(x)",
        "    n_elements = out.numel()",
        f"    grid = (triton.cdiv(n_elements, {POINTWISE_BLOCK}),)",
        f"    fused_kernel_triton[grid]({launch_args}, BLOCK_SIZE={POINTWISE_BLOCK}, num_warps={POINTWISE_WARPS})",
        "    return out",
    ])
    return kernel + "\n\n\n" + wrapper + "\n"


# -- row plan ----------------------------------------------------------------------------------------
# One program per row of the reduced or normalized dimension, the row held in registers
# (BLOCK_N = next power of two of the row length, masked). Group norm's rows are one group of one
# sample: [M, N] -> M * G rows of N / G; [B, M, N] -> B * G rows of (M / G) * N (contiguous in memory).

_STATS = {  # statements computing the row statistic into h (reductions) or normalizing h (norms)
    "sum": ["h = tl.sum(tl.where(mask, h, 0.0), axis=0)"],
    "mean": ["h = tl.sum(tl.where(mask, h, 0.0), axis=0) / row_len"],
    "max": ["h = tl.max(tl.where(mask, h, float('-inf')), axis=0)"],
    "min": ["h = tl.min(tl.where(mask, h, float('inf')), axis=0)"],
    "logsumexp": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                  "h = row_max + tl.log(tl.sum(tl.where(mask, tl.exp(h - row_max), 0.0), axis=0))"],
    "l2norm": ["h = tl.sqrt(tl.sum(tl.where(mask, h * h, 0.0), axis=0))"],
    "var": ["mean = tl.sum(tl.where(mask, h, 0.0), axis=0) / row_len",
            "centered = tl.where(mask, h - mean, 0.0)",
            "h = tl.sum(centered * centered, axis=0) / (row_len - {correction})"],
    "softmax": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                "numerator = tl.where(mask, tl.exp(h - row_max), 0.0)",
                "h = numerator / tl.sum(numerator, axis=0)"],
    "log_softmax": ["row_max = tl.max(tl.where(mask, h, float('-inf')), axis=0)",
                    "h = h - row_max - tl.log(tl.sum(tl.where(mask, tl.exp(h - row_max), 0.0), axis=0))"],
    "standardize": ["mean = tl.sum(tl.where(mask, h, 0.0), axis=0) / row_len",
                    "centered = tl.where(mask, h - mean, 0.0)",
                    "h = centered * tl.rsqrt(tl.sum(centered * centered, axis=0) / row_len + {eps})"],
    "rms_norm": ["h = h * tl.rsqrt(tl.sum(tl.where(mask, h * h, 0.0), axis=0) / row_len + {eps}) * gamma"],
    "l2_normalize": ["h = h / tl.maximum(tl.sqrt(tl.sum(tl.where(mask, h * h, 0.0), axis=0)), {eps})"],
    "batch_norm": ["h = (h - running_mean) * tl.rsqrt(running_var + {eps}) * gamma + beta"],
}
_STANDARDIZED = ("layer_norm", "group_norm", "instance_norm")


def _row_geometry(task: FusionTask, step: Step) -> tuple[str, Layout, str]:
    """(row length expression in the wrapper, operand layout before/after a norm, its docstring line)."""
    rank = len(task.inputs[0].shape)
    per_program = {"row"} if rank == 2 or step.op != "group_norm" else set()
    if step.op == "group_norm":
        groups = step.params["groups"]
        if rank == 2:
            return (f"x.shape[-1] // {groups}",
                    Layout({"col": f"(row % {groups}) * row_len + cols", "row": f"row // {groups}",
                            "full": "row * row_len + cols", "chan": f"(row % {groups}) * row_len + cols"},
                           frozenset(per_program)),
                    f"rows are one group of {groups} per sample: [M, N] -> [M * {groups}, N / {groups}]")
        return (f"(x.shape[1] // {groups}) * x.shape[-1]",
                Layout({"col": "cols % n_cols",
                        "row": f"(row // {groups}) * n_chan + (row % {groups}) * (n_chan // {groups}) + cols // n_cols",
                        "full": "row * row_len + cols",
                        "chan": f"(row % {groups}) * (n_chan // {groups}) + cols // n_cols"}),
                f"rows are one group of {groups} per sample: [B, M, N] -> [B * {groups}, (M / {groups}) * N]")
    chan = "cols" if rank == 2 else "row % n_chan"
    return ("x.shape[-1]",
            Layout({"col": "cols", "row": "row", "full": "row * row_len + cols", "chan": chan},
                   frozenset(per_program | ({"chan"} if rank == 3 else set()))),
            "one row of the last dimension per program")


def _row(task: FusionTask) -> str:
    by_name = {i.name: i for i in task.inputs}
    k_row = next(k for k, s in enumerate(task.steps) if catalog.get(s.op).family in (Family.REDUCTION, Family.NORM))
    row_step, row_op = task.steps[k_row], catalog.get(task.steps[k_row].op)
    rank = len(task.inputs[0].shape)
    row_len, layout, geometry = _row_geometry(task, row_step)
    reduces = row_op.family is Family.REDUCTION
    after = Layout({"col": "row % n_chan", "row": "row // n_chan", "full": "row"},
                   frozenset({"col", "row", "full"})) if reduces else layout
    _check_row_length(task, row_step)

    body = ["h = tl.load(x_ptr + row * row_len + cols, mask=mask, other=0.0).to(tl.float32)"]
    for k, step in enumerate(task.steps[:k_row], start=1):
        body += _emit_pointwise(k, step, by_name, layout)
    body.append(f"# {k_row + 1}. {step_label(row_step)}: {row_op.doc}")
    operands = dict(zip((o.stem for o in catalog.operands(row_op, row_step.params)), row_step.inputs))
    for operand in catalog.operands(row_op, row_step.params):
        body.append(layout.load(operands[operand.stem], operand.layout).replace(
            f"{operands[operand.stem]} = ", f"{operand.stem} = ", 1))
    stats = _STATS["standardize" if row_step.op in _STANDARDIZED else row_step.op]
    body += [line.format(**row_step.params) for line in stats]
    if row_step.op in _STANDARDIZED:
        body.append("h = h * gamma + beta")
    for k, step in enumerate(task.steps[k_row + 1:], start=k_row + 2):
        body += _emit_pointwise(k, step, by_name, after)
    if reduces:
        body.append("tl.store(out_ptr + row, h.to(out_ptr.dtype.element_ty))")
    else:
        body.append("tl.store(out_ptr + row * row_len + cols, h.to(out_ptr.dtype.element_ty), mask=mask)")

    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    extra = ["n_chan"] if rank == 3 else []
    doc = (f'"""{" -> ".join(step_label(s) for s in task.steps)}; x [{shape}].\n\n'
           f'    {geometry[0].upper() + geometry[1:]}, held in registers (BLOCK_N lanes, masked); fp32 math, '
           f'one cast on store.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        f"def fused_kernel_triton({', '.join(_kernel_args(task))}, out_ptr, row_len, n_cols, "
        f"{''.join(e + ', ' for e in extra)}BLOCK_N: tl.constexpr):",
        f"    {doc}",
        "    row = tl.program_id(0).to(tl.int64)",
        "    cols = tl.arange(0, BLOCK_N)",
        "    mask = cols < row_len",
        *("    " + line for line in body),
    ])
    if reduces:
        shape = "(*x.shape[:-1], 1)" if row_step.params["keepdim"] else "x.shape[:-1]"
        alloc = f"    out = torch.empty({shape}, dtype=x.dtype, device=x.device)"
    else:
        alloc = "    out = torch.empty_like(x)"
    launch_args = ", ".join(["x", *[i.name for i in task.inputs[1:]], "out", "row_len", "x.shape[-1]",
                             *(["x.shape[1]"] if rank == 3 else [])])
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *_contiguous(task),
        alloc,
        f"    row_len = {row_len}",
        "    BLOCK_N = triton.next_power_of_2(row_len)",
        "    num_warps = 4 if BLOCK_N <= 2048 else 8 if BLOCK_N <= 8192 else 16",
        f"    fused_kernel_triton[(x.numel() // row_len,)]({launch_args}, BLOCK_N=BLOCK_N, num_warps=num_warps)",
        "    return out",
    ])
    return kernel + "\n\n\n" + wrapper + "\n"


def _check_row_length(task: FusionTask, step: Step) -> None:
    """Rows must fit in registers at every shape of the task (the looped variant is not written yet)."""
    for family in ("test", "bench"):
        for dims in task.shapes[family]:
            length = dims["N"]
            if step.op == "group_norm":
                groups = step.params["groups"]
                length = dims["N"] // groups if len(task.inputs[0].shape) == 2 else dims["M"] // groups * dims["N"]
            if length > MAX_ROW_BLOCK:
                raise UnsupportedTask(f"rows of {length} values at the {family} shape need the looped row plan, "
                                      f"which is not written yet (task {task.id})")


def _draw(spec: InputSpec, dims_name: str) -> str:
    """Plain-torch code drawing one input like tasks.draw (standalone files need no fusionforge)."""
    init = spec.init
    sizes = [f"{dims_name}[{d!r}]" if isinstance(d, str) else str(d) for d in spec.shape]
    shape = "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
    if init["dist"] == "normal":
        value = f"torch.randn({shape}, device=DEVICE)"
        if "clip" in init:
            value += f".clamp(-{init['clip']}, {init['clip']})"
        if "fan_in" in init:
            value += f" * ({init['std']} / {dims_name}[{init['fan_in']!r}] ** 0.5)"
        elif init["std"] != 1.0:
            value += f" * {init['std']}"
        if init["mean"]:
            value += f" + {init['mean']}"
    elif init["dist"] == "uniform":
        value = f"torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']}"
    else:
        magnitude = f"(torch.rand({shape}, device=DEVICE) * {init['high'] - init['low']} + {init['low']})"
        value = f"{magnitude} * (torch.randint(0, 2, {shape}, device=DEVICE) * 2 - 1)"
    if spec.dtype == SCALAR_DTYPE:
        return f"    {spec.name} = float({value})"
    return f"    {spec.name} = ({value}).to(torch.{spec.dtype})"


def _get_inputs(task: FusionTask) -> str:
    bench, test = task.shapes["bench"][0], task.shapes["test"][0]
    return "\n".join([
        "def get_inputs():",
        '    """One call\'s arguments, drawn like the task\'s: the bench shape on a GPU, a test shape on the CPU."""',
        f"    dims = {bench!r} if DEVICE == \"cuda\" else {test!r}",
        *(_draw(spec, "dims") for spec in task.inputs),
        f"    return [{', '.join(task.arg_names)}]",
    ])
