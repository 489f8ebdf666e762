"""Implementers: whatever turns a FusionTask into a kernel file's source text.

``builtin`` (the code generator, ``fusionforge.codegen``), ``llm`` (an OpenAI-compatible endpoint;
optional extra) and, for ``fusionforge eval --files``, ``folder`` (an outside agent's files, written
beforehand). The outside agent working through ``fusionforge attempt`` is no implementer here:
``fusionforge.handout`` keeps what was handed out to it.
"""

from fusionforge.codegen import UnsupportedTask, generate
from fusionforge.implement.base import Implementation, Implementer, ImplementerError, PastAttempt
from fusionforge.implement.builtin import BuiltinImplementer

__all__ = ["BuiltinImplementer", "Implementation", "Implementer", "ImplementerError", "PastAttempt",
           "UnsupportedTask", "generate"]
