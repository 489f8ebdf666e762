"""Verdicts: what a check concludes, as JSON (DESIGN.md's contract) and as the seed's text report."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

# category -> stage
STAGES = {
    "format": "format", "syntax": "format",
    "compile": "compilation",
    "import": "execution", "runtime": "execution", "memory": "execution", "timeout": "execution", "crash": "execution",
    "shape": "testing", "dtype": "testing", "nan": "testing", "mismatch": "testing", "cheat": "testing",
    "mutation": "testing", "race": "testing", "slower": "benchmark",
}

@dataclass
class Failure:
    category: str
    implementation: str  # PyTorch | Triton | Both | Harness
    message: str
    root_cause: str
    planned_fix: str
    line: int | None = None
    input_set: str | None = None

    @property
    def stage(self) -> str:
        return STAGES[self.category]

    def to_dict(self) -> dict:
        return {"stage": self.stage, "implementation": self.implementation, "category": self.category,
                "message": self.message, "line": self.line, "root_cause": self.root_cause,
                "planned_fix": self.planned_fix, "input_set": self.input_set}

    @classmethod
    def from_dict(cls, raw: dict) -> Failure:
        return cls(raw["category"], raw["implementation"], raw["message"], raw["root_cause"], raw["planned_fix"],
                   raw.get("line"), raw.get("input_set"))


@dataclass
class Verdict:
    file: str
    failure: Failure | None = None
    checks: list[dict] = field(default_factory=list)
    task_id: str | None = None
    device: str = "cpu"
    seconds: float = 0.0
    kernels: list[str] = field(default_factory=list)
    output_tail: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # the check child's seconds per phase

    @property
    def passed(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict:
        return {"status": "pass" if self.passed else "fail",
                "failure": self.failure.to_dict() if self.failure else None,
                "checks": self.checks, "file": self.file, "task_id": self.task_id, "device": self.device,
                "kernels": self.kernels, "seconds": round(self.seconds, 3), "phases": self.phases}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict) -> Verdict:
        """A verdict back from ``to_dict`` (the child's output tail is not kept there)."""
        failure = Failure.from_dict(raw["failure"]) if raw["failure"] else None
        return cls(file=raw["file"], failure=failure, checks=raw["checks"], task_id=raw["task_id"],
                   device=raw["device"], seconds=raw.get("seconds", 0.0), kernels=raw["kernels"],
                   phases=raw.get("phases") or {})


def use_symbols(stream=None) -> bool:
    """Real symbols unless NO_COLOR is set or the stream cannot encode them."""
    if os.environ.get("NO_COLOR"):
        return False
    encoding = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        "✓❌🔍🏆✅🛠".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


SYMBOLS = {"ok": ("✓", "[OK]"), "fail": ("❌", "[FAIL]"), "look": ("🔍", "[>]"), "fix": ("🛠", "[FIX]"),
           "win": ("🏆", "[RESULT]"), "done": ("✅", "[DONE]")}


def symbol(name: str, fancy: bool) -> str:
    return SYMBOLS[name][0 if fancy else 1]


RULE = "=" * 60


def attempt_title(title: str, attempt: int | None) -> str:
    """``FAILURE ANALYSIS - ATTEMPT 2``; a plain check or bench is no attempt and says only the title."""
    return f"{title} - ATTEMPT {attempt}" if attempt else title


def render_failure(failure: Failure, attempt: int | None = None, fancy: bool | None = None) -> str:
    """The seed's FAILURE ANALYSIS block (of attempt ``attempt``, when it is one)."""
    fancy = use_symbols() if fancy is None else fancy
    where = f" (line {failure.line})" if failure.line else ""
    lines = [RULE, attempt_title("FAILURE ANALYSIS", attempt), RULE,
             f"{symbol('fail', fancy)} FAILURE: {failure.category} in the {failure.implementation} implementation",
             f"{symbol('look', fancy)} FAILURE POINT:",
             f"- Implementation: {failure.implementation}",
             f"- Stage: {failure.stage}",
             f"- Error: {failure.message}{where}"]
    if failure.input_set:
        lines.append(f"- Input set: {failure.input_set}")
    lines += [f"{symbol('look', fancy)} ROOT CAUSE ANALYSIS:", failure.root_cause,
              f"{symbol('fix', fancy)} PLANNED FIX:", failure.planned_fix, RULE]
    return "\n".join(lines)


def integer_error(stats: dict) -> str | None:
    """A compare's error over integer outputs in words (None for values): an arg reduction's indices by the rows
    whose pick falls short of the row's extremum (verify/indices.py), other integers by those that differ."""
    if stats.get("rule") == "index":
        unwritten = f"{stats['unwritten']} never written; " if stats.get("unwritten") else ""
        return (f"{unwritten}{stats['rel_err']:.1%} of rows pick an index short of their extremum; the worst, row "
                f"{stats['max_abs_index']}: index {stats['value']:.0f}, {stats['max_abs_err']:.3g} short (bound "
                f"{stats['max_abs_tolerance']:.3g}; PyTorch in float64 picks {stats['expected']:.0f})")
    if stats.get("rule") == "exact":
        return (f"{stats['rel_err']:.1%} of elements differ; at {stats['max_abs_index']}: got {stats['value']:.0f}, "
                f"expected {stats['expected']:.0f}")
    return None


def render_input_sets(verdict: Verdict, fancy: bool | None = None) -> list[str]:
    """One line per input set the check ran: its error against the reference and the tolerance, or a note."""
    fancy = use_symbols() if fancy is None else fancy
    lines = []
    for c in verdict.checks:
        mark = symbol("ok", fancy) if c.get("passed") else symbol("fail", fancy)
        if c.get("rule") == "index":
            detail = (f"rows off {c['rel_err']:.1%}, worst shortfall {c['max_abs_err']:.2e} (bound "
                      f"{c['max_abs_tolerance']:.2e})")
        elif c.get("rel_err") is not None:
            detail = f"rel err {c['rel_err']:.2e} (tol {c['tolerance']:.2e}), max abs err {c['max_abs_err']:.2e}"
        else:
            detail = c.get("note") or ("" if c.get("passed") else "failed: see the analysis")
        lines.append(f"  {mark} {c['label']:<34} {detail}")
    return lines


def render_check(verdict: Verdict, attempt: int | None = None, fancy: bool | None = None) -> str:
    """A check's text report: one line per input set, then the verdict or the failure analysis."""
    fancy = use_symbols() if fancy is None else fancy
    lines = [f"Checked {verdict.file} on {verdict.device}"
             + (f" against task {verdict.task_id}" if verdict.task_id else "") + f" ({verdict.seconds:.1f} s)"]
    lines += render_input_sets(verdict, fancy)
    if verdict.passed:
        lines.append(f"{symbol('done', fancy)} PASS: the Triton kernel matches the reference on every input set")
    else:
        lines.append(render_failure(verdict.failure, attempt, fancy))
    return "\n".join(lines)
