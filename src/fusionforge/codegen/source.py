"""Writing Python source: an indented buffer, wrapped calls and signatures, and kernels as parts.

``Code`` is the buffer every emitter writes into (statements at the current indentation, ``block`` for a
nested one); ``wrap`` breaks a call or a signature at 120 columns; ``Kernel`` holds one ``@triton.jit``
function's parts (what is tuned before it, its parameters, docstring and body) and keeps only the size
parameters its body reads.
"""

from __future__ import annotations

import re
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field

WIDTH = 120
INDENT = "    "


class Code:
    """Lines of Python written in order at an indentation (``block`` opens a nested one)."""

    def __init__(self, level: int = 0) -> None:
        self.lines: list[str] = []
        self.level = level

    def __call__(self, *lines: str) -> Code:
        """Write ``lines`` at the current indentation (an empty string is a blank line)."""
        self.lines += [INDENT * self.level + line if line else "" for line in lines]
        return self

    @contextmanager
    def block(self, header: str):
        """``header`` (a ``for``/``if``/``def`` line), then what is written inside the ``with`` one level deeper."""
        self(header)
        self.level += 1
        try:
            yield self
        finally:
            self.level -= 1

    def call(self, opening: str, items: list[str], closing: str = ")") -> Code:
        """``opening`` + items + ``closing`` wrapped at WIDTH (continuation lines aligned after the opening)."""
        lines = wrap(INDENT * self.level + opening, items, closing)
        self.lines += lines
        return self

    def extend(self, other: Code) -> Code:
        """``other``'s lines as they are (written at the indentation they are for)."""
        self.lines += other.lines
        return self

    def statements(self) -> list[str]:
        """The code without comments (for what a body reads)."""
        return [line.split("#", 1)[0] for line in self.lines]

    def text(self) -> str:
        return "\n".join(self.lines)


def wrap(opening: str, items: list[str], closing: str, width: int = WIDTH) -> list[str]:
    """``opening`` + items separated by commas + ``closing``, broken into lines of at most ``width`` (when the
    items allow), continuation lines aligned after the opening parenthesis. ``opening`` may be indented."""
    lines, line = [], opening
    for k, item in enumerate(items):
        piece = item + (closing if k == len(items) - 1 else ",")
        if line != opening and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = " " * len(opening) + piece
        else:
            line += ("" if line == opening else " ") + piece
    return lines + [line]


@dataclass
class Kernel:
    """One ``@triton.jit`` function: ``tuning`` (config and heuristics code with its decorators, written just
    before it), runtime parameters (pointers and scalars, then sizes, of which only those the body reads are
    kept), constexpr parameters, the docstring's paragraphs and the body."""

    name: str
    params: list[str]
    sizes: list[tuple[str, str]]  # (parameter, the wrapper's argument for it)
    constexprs: list[str]
    doc: list[str]
    body: Code
    tuning: list[str] = field(default_factory=list)

    def read_sizes(self) -> list[tuple[str, str]]:
        """The (parameter, argument) pairs of the sizes the body reads (a name in a comment is not a read)."""
        code = "\n".join(self.body.statements())
        return [(param, arg) for param, arg in self.sizes if re.search(rf"\b{param}\b", code)]

    def size_args(self) -> list[str]:
        return [arg for _, arg in self.read_sizes()]

    def text(self) -> str:
        params = [*self.params, *(param for param, _ in self.read_sizes()),
                  *(f"{c}: tl.constexpr" for c in self.constexprs)]
        return "\n".join([*self.tuning, "@triton.jit", *wrap(f"def {self.name}(", params, "):"),
                          *docstring(self.doc), *(INDENT + line if line else "" for line in self.body.lines)])


def docstring(paragraphs: list[str], indent: str = INDENT) -> list[str]:
    """A docstring of ``paragraphs`` (the first a summary), each wrapped at WIDTH, blank lines between."""
    lines = []
    for k, paragraph in enumerate(paragraphs):
        opening = '"""' if k == 0 else ""
        lines += textwrap.wrap(opening + paragraph, WIDTH - len(indent), break_long_words=False,
                               break_on_hyphens=False) + [""]
    lines = lines[:-1]
    if len(lines) == 1:
        return [indent + lines[0] + '"""']
    return [indent + line if line else "" for line in lines] + [indent + '"""']
