"""The built-in implementer: renders a complete kernel file for a task from the op catalog.

A plan is chosen from the chain's shape; each plan writes one named Triton kernel with fp32 math
and one cast on store, and a wrapper that only allocates, makes inputs contiguous and launches.
Plans so far:

* pointwise: every op is unary or binary (easy tasks). One blocked kernel over the flattened
  output; a per-column vector is read at ``offset % N``, a per-row vector at ``offset // N``, a full
  tensor at ``offset``, a scalar is a kernel argument. 1024 elements per program over 4 warps gives
  each thread 8 contiguous elements (16-byte fp16 / 32-byte fp32 accesses).

Tasks of other shapes (reductions, normalizations, matmul roots) raise UnsupportedTask naming the
missing plan. Generation is deterministic: the same task gives the same file.
"""

from __future__ import annotations

import pprint

from fusionforge import ops as catalog
from fusionforge.kernelfile import render
from fusionforge.ops import Family
from fusionforge.tasks import SCALAR_DTYPE, FusionTask, InputSpec, step_label

POINTWISE_BLOCK = 1024
POINTWISE_WARPS = 4


class UnsupportedTask(ValueError):
    """The built-in code generator has no plan for this chain yet."""


def plan_of(task: FusionTask) -> str:
    families = {catalog.get(s.op).family for s in task.steps}
    if families <= {Family.UNARY, Family.BINARY}:
        return "pointwise"
    missing = sorted(f.value for f in families - {Family.UNARY, Family.BINARY})
    raise UnsupportedTask(f"the built-in code generator has no plan yet for chains with {', '.join(missing)} "
                          f"ops (task {task.id}: {task.description})")


def generate(task: FusionTask, attempt: int = 1) -> str:
    """The complete kernel file (seed format) implementing ``task``."""
    plan = plan_of(task)
    python = "TASK = " + pprint.pformat(task.to_dict(), width=110, sort_dicts=False) + "\n\n\n" + task.pytorch_source()
    triton_section = {"pointwise": _pointwise}[plan](task)
    return render(task.description, python, triton_section, _get_inputs(task), attempt)


def _operand_load(spec: InputSpec, kind: str, other: str) -> str:
    index = {"col": "offsets % n_cols", "row": "offsets // n_cols", "full": "offsets"}[kind]
    return (f"{spec.name} = tl.load({spec.name}_ptr + {index}, mask=mask, other={other})"
            ".to(tl.float32)")


def _pointwise(task: FusionTask) -> str:
    by_name = {i.name: i for i in task.inputs}
    tensors = [i.name for i in task.inputs[1:] if i.dtype != SCALAR_DTYPE]
    kernel_args = ["x_ptr"] + [f"{i.name}_ptr" if i.dtype != SCALAR_DTYPE else i.name for i in task.inputs[1:]]
    body = ["h = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)"]
    math = []
    for k, step in enumerate(task.steps, start=1):
        op = catalog.get(step.op)
        params = {name: value for name, value in step.params.items() if name != "operand"}
        names = {}
        if op.family is Family.BINARY:
            spec = by_name[step.inputs[0]]
            if spec.dtype != SCALAR_DTYPE:
                # masked lanes are never stored; 1.0 keeps a divisor's dead lanes finite all the same
                body.append(_operand_load(spec, step.params["operand"], "1.0" if op.name == "div" else "0.0"))
            names = {"y": spec.name}
        body.append(f"# {k}. {step_label(step)}: {op.doc}")
        body.append("h = " + op.triton.format(x="h", **params, **names))
        math.append(step_label(step))
    body.append("tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)")
    shape = ", ".join(str(d) for d in task.inputs[0].shape)
    doc = (f'"""{" -> ".join(math)}, elementwise over x [{shape}] flattened.\n\n'
           f'    Per-column vectors are read at offset % n_cols, per-row vectors at offset // n_cols; fp32 math, '
           f'one cast on store.\n    """')
    kernel = "\n".join([
        "@triton.jit",
        f"def fused_kernel_triton({', '.join(kernel_args)}, out_ptr, n_elements, n_cols, BLOCK_SIZE: tl.constexpr):",
        f"    {doc}",
        "    pid = tl.program_id(0)",
        "    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)",
        "    mask = offsets < n_elements",
        *("    " + line for line in body),
    ])
    contiguous = [f"    {name} = {name}.contiguous()" for name in ["x", *tensors]]
    launch_args = ", ".join(["x", *[i.name for i in task.inputs[1:]], "out", "n_elements", "x.shape[-1]"])
    wrapper = "\n".join([
        f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):",
        *contiguous,
        "    out = torch.empty_like(x)",
        "    n_elements = out.numel()",
        f"    grid = (triton.cdiv(n_elements, {POINTWISE_BLOCK}),)",
        f"    fused_kernel_triton[grid]({launch_args}, BLOCK_SIZE={POINTWISE_BLOCK}, num_warps={POINTWISE_WARPS})",
        "    return out",
    ])
    return kernel + "\n\n\n" + wrapper + "\n"


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
