"""What every plan's TRITON section shares: its parts, the wrapper's opening, the words for steps and shapes."""

from __future__ import annotations

from dataclasses import dataclass

from fusionforge.codegen.plan import Plan
from fusionforge.codegen.source import Code, Kernel
from fusionforge.tasks import SCALAR_DTYPE, InputSpec


@dataclass
class Section:
    """A TRITON section's parts: the kernels (each after its tuning code), host-side helper functions (their
    text), and the wrapper. Jit helpers of the catalog's op forms are added by the file's renderer."""

    kernels: list[Kernel]
    host: list[str]
    wrapper: Code


def shape_text(spec: InputSpec) -> str:
    """``x [M, N]``; a scalar's name alone."""
    if spec.dtype == SCALAR_DTYPE:
        return spec.name
    return f"{spec.name} [{', '.join(str(d) for d in spec.shape)}]"


def chain_text(steps) -> str:
    """The steps' labels joined by arrows."""
    return " -> ".join(s.label for s in steps)


def wrapper(plan: Plan) -> Code:
    """``def fused_kernel_triton_wrapper(...)``, its docstring (the arguments' and the output's shapes) and its
    tensor arguments made contiguous; the plan writes the rest at the body's indentation."""
    task = plan.task
    code = Code()
    code(f"def fused_kernel_triton_wrapper({', '.join(task.arg_names)}):")
    code.level = 1
    outputs = [f"[{', '.join(str(d) for d in shape)}]" for shape, _ in task.outputs]
    if len(outputs) > 1:  # a quantizer's values and scales
        outputs = [f"{shape} {dtype.replace('float8_e4m3fn', 'float8 e4m3')}" for shape, (_, dtype)
                   in zip(outputs, task.outputs)]
    code(f'"""{", ".join(shape_text(spec) for spec in task.inputs)} -> {", ".join(outputs)}: allocate, launch."""')
    code(*(f"{i.name} = {i.name}.contiguous()" for i in task.inputs if i.dtype != SCALAR_DTYPE))
    return code

