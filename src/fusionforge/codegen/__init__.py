"""The built-in code generator: a task in, a complete kernel file out, the same file for the same task.

It works as a small compiler. ``resolve`` turns a task into a ``Plan`` once (plan.py): the kind of file
(``pointwise``, ``row``, ``loss``, ``matmul``, ``two_reductions``, ``pool``, ``attention``, ``conv``, ``conv2d``,
``depthwise``; tasks.classify), the variant written and why, and each step with its number in the chain, its catalog
entry and its inputs. An emitter per kind (pointwise.py, rows.py, losses.py, matmul.py, two_reductions.py,
pooling.py, attention.py, convolution.py) writes its kernels and wrapper into indented buffers (source.py),
composing the one record per reduction and normalization (reductions.py: state, block, update, combine, finalize)
and the catalog's pointwise and scan forms through operand layouts (layout.py); every tile size, warp count and
config comes from tuning.py, with the section of docs/tuning.md behind it. render.py assembles the file.

Each kernel computes in fp32 and casts once on store; float16 and bfloat16 tasks take an op's cheaper 16-bit
form where the catalog has one. A chain with no plan (several normalizations, more than two reductions)
raises UnsupportedTask naming what is missing.
"""

from __future__ import annotations

from fusionforge.codegen import attention, convolution, losses, matmul, pointwise, pooling, rows, two_reductions
from fusionforge.codegen.plan import Plan, UnsupportedTask, resolve, variants
from fusionforge.codegen.render import file_text, python_section
from fusionforge.tasks import FusionTask

EMITTERS = {"pointwise": pointwise.emit, "row": rows.emit, "loss": losses.emit, "matmul": matmul.emit,
            "two_reductions": two_reductions.emit, "pool": pooling.emit, "attention": attention.emit,
            "conv": convolution.emit, "conv2d": convolution.emit_2d,
            "conv_transpose2d": convolution.emit_transposed, "depthwise": convolution.emit_depthwise}


def generate(task: FusionTask, attempt: int = 1, variant: str | None = None) -> str:
    """The complete kernel file (seed format) implementing ``task`` in ``variant`` (default: the first)."""
    return write(resolve(task, variant), attempt)


def write(plan: Plan, attempt: int = 1) -> str:
    """The kernel file of a resolved plan."""
    return file_text(plan.task, EMITTERS[plan.kind](plan), attempt)


__all__ = ["Plan", "UnsupportedTask", "generate", "python_section", "resolve", "variants", "write"]
