"""Implementers: whatever turns a FusionTask into a kernel file's source text.

``builtin`` (the code generator, ``fusionforge.codegen``) and ``llm`` (an OpenAI-compatible endpoint;
optional extra). The outside agent, a person or program that writes the file and runs ``fusionforge
attempt``, is no implementer here: ``fusionforge.handout`` keeps what was handed out to it.
"""

from fusionforge.codegen import UnsupportedTask, generate
from fusionforge.implement.base import Implementation, Implementer, ImplementerError, PastAttempt
from fusionforge.implement.builtin import BuiltinImplementer

__all__ = ["BuiltinImplementer", "Implementation", "Implementer", "ImplementerError", "PastAttempt",
           "UnsupportedTask", "generate"]
