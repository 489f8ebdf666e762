"""The built-in implementer: the code generator behind the Implementer interface.

The generator is deterministic, so a retry writes another variant when the task has one: after a
failure, the next variant of ``codegen.variants(task)`` (matmul roots: ``persistent`` or ``tf32x3``,
then ``tiled``, then back), or the same one again after a timeout or a crash (which may be
the machine's doing). The variant an attempt was written in is the plan's, logged with the attempt.
When the kernel is one that already failed for another reason, there is nothing new to try: the
implementation says so (``exhausted``) and the loop stops early.
"""

from __future__ import annotations

import re

from fusionforge.codegen import UnsupportedTask, resolve, variants, write
from fusionforge.implement.base import Implementation, PastAttempt
from fusionforge.tasks import FusionTask
from fusionforge.verify.verdict import Failure

TRANSIENT = ("timeout", "crash")


def next_variant(task: FusionTask, history: list[PastAttempt]) -> str:
    """The variant for the next attempt, given the earlier ones."""
    options = variants(task)
    if not history:
        return options[0]
    last = history[-1]
    tried = last.variant if last.variant in options else options[0]
    if last.failure and last.failure["category"] in TRANSIENT:
        return tried
    return options[(options.index(tried) + 1) % len(options)]


class BuiltinImplementer:
    name = "builtin"
    model = None

    def implement(self, task: FusionTask, attempt: int, history: list[PastAttempt]) -> Implementation:
        try:
            plan = resolve(task, next_variant(task, history))
        except UnsupportedTask as e:
            if history:  # said at the first attempt; nothing new since
                return Implementation(source=None, exhausted=True)
            return Implementation(source=None, failure=Failure(
                "format", "Both", f"no kernel file: {e}",
                "The built-in code generator has no plan for this chain of operations.",
                "Implement it with another implementer (--implementer llm, or an outside agent through "
                "`fusionforge attempt`), or add a plan to fusionforge.codegen."))
        source = write(plan, attempt)
        if any(past.source and _kernel(past.source) == _kernel(source) and past.failure
               and past.failure["category"] not in TRANSIENT for past in history):
            return Implementation(source=None, exhausted=True)
        return Implementation(source=source, variant=plan.variant)


def _kernel(source: str) -> str:
    """The file without its ATTEMPT number: what differs between two attempts' kernels."""
    return re.sub(r"^\s*ATTEMPT = \d+$", "", source, flags=re.MULTILINE)
