"""The built-in implementer: the code generator behind the Implementer interface.

The generator is deterministic: a later attempt gets the same kernel (with its ATTEMPT number), so
retries only help against transient failures (a timeout on a busy machine, a flaky timing).
"""

from __future__ import annotations

from fusionforge.implement.base import Implementation, PastAttempt
from fusionforge.implement.codegen import UnsupportedTask, generate
from fusionforge.tasks import FusionTask
from fusionforge.verify.verdict import Failure


class BuiltinImplementer:
    name = "builtin"
    model = None

    def implement(self, task: FusionTask, attempt: int, history: list[PastAttempt]) -> Implementation:
        try:
            return Implementation(source=generate(task, attempt))
        except UnsupportedTask as e:
            return Implementation(source=None, failure=Failure(
                "format", "Both", f"no kernel file: {e}",
                "The built-in code generator has no plan for this chain of operations.",
                "Implement it with another implementer (--implementer llm, or an outside agent through "
                "`fusionforge attempt`), or add a plan to fusionforge.implement.codegen."))
