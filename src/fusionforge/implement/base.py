"""What every implementer (built-in code generator, LLM, outside agent) gives and gets.

An implementer turns a FusionTask, plus every earlier attempt at it (source and failure analysis),
into the source text of a kernel file. A reply with no usable file is itself a failed attempt: the
implementer returns ``Implementation(source=None, failure=...)`` and the loop reports it like any
other failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from fusionforge.tasks import FusionTask
from fusionforge.verify.verdict import Failure


class ImplementerError(Exception):
    """The implementer cannot work at all (missing package, no API key, unreachable endpoint)."""


@dataclass
class PastAttempt:
    """An earlier attempt at the same task, as the implementer sees it."""

    number: int
    source: str | None  # the file that was tried; None when no usable file came back
    report: str  # the FAILURE ANALYSIS text of that attempt (plain ASCII form)
    failure: dict | None = None  # Failure.to_dict()
    variant: str | None = None  # the built-in generator's variant it was written in (from the attempt log)


@dataclass
class Implementation:
    source: str | None
    failure: Failure | None = None  # why there is no usable file (source is None)
    usage: dict = field(default_factory=dict)  # requests, prompt/completion tokens, seconds
    model: str | None = None
    variant: str | None = None  # the code generator's plan variant (the built-in implementer's), logged
    exhausted: bool = False  # nothing new to try (a deterministic implementer): the loop stops early


class Implementer(Protocol):
    name: str  # "builtin" | "llm" | "agent"
    model: str | None

    def implement(self, task: FusionTask, attempt: int, history: list[PastAttempt]) -> Implementation:
        """Source of ``NNN_fused_kernels.py`` for ``task`` at attempt number ``attempt`` (1-based)."""
        ...
