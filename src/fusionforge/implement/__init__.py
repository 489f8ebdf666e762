"""Implementers: whatever turns a FusionTask into a kernel file's source text (built-in code generator)."""

from fusionforge.implement.codegen import UnsupportedTask, generate

__all__ = ["UnsupportedTask", "generate"]
