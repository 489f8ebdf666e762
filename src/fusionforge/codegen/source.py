"""Writing Python source: an indented buffer, wrapped calls and signatures, and kernels as parts.

``Code`` is the buffer every emitter writes into (statements at the current indentation, ``block`` for a
nested one); ``wrap`` breaks a call or a signature at 120 columns; ``Kernel`` holds one ``@triton.jit``
function's parts (what is tuned before it, its parameters, docstring and body) and keeps only the size
parameters its body reads; ``fit`` breaks the lines of finished source that are still longer than 120 columns.
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
    if len(lines) == 1 and len(indent + lines[0]) + 3 <= WIDTH:
        return [indent + lines[0] + '"""']
    return [indent + line if line else "" for line in lines] + [indent + '"""']


def fit(source: str, width: int = WIDTH) -> str:
    """``source`` with each line longer than ``width`` broken the way a person would: a comment wrapped onto
    comment lines, a trailing comment moved above its statement, a statement broken after the commas (else before
    the operators) of its outermost bracket, continuation lines aligned inside it. Lines in a multi-line string,
    and lines no rule can shorten, are kept as they are."""
    lines, in_string = [], False
    for line in source.split("\n"):
        if in_string or len(line) <= width:
            lines.append(line)
        else:
            lines += _fit_line(line, width)
        in_string ^= line.count('"""') % 2 == 1
    return "\n".join(lines)


def _fit_line(line: str, width: int) -> list[str]:
    indent = line[:len(line) - len(line.lstrip())]
    code, comment = _split_comment(line)
    if not code.strip():
        return _comment_lines(indent, comment, width)
    if code.lstrip().startswith('"""') and code.rstrip().endswith('"""') and not comment:
        kept = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace(" ", "\0"), code.strip()[3:-3])
        return [line.replace("\0", " ") for line in docstring([kept], indent)]  # no break inside [B, C, P, Q]
    above = _comment_lines(indent, comment, width) if comment else []
    return above + _break_statement(code.rstrip(), width)


def _code_chars(text: str):
    """(position, character) of each character of ``text`` outside its string literals and their quotes."""
    quote = None
    for k, char in enumerate(text):
        if quote:
            quote = None if char == quote and text[k - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        else:
            yield k, char


def _split_comment(line: str) -> tuple[str, str]:
    """(the code, the comment's text) of a line; a ``#`` inside a string is not a comment."""
    for k, char in _code_chars(line):
        if char == "#":
            return line[:k], line[k + 1:].strip()
    return line, ""


def _comment_lines(indent: str, text: str, width: int) -> list[str]:
    return [f"{indent}# {part}" for part in textwrap.wrap(text, width - len(indent) - 2, break_long_words=False,
                                                           break_on_hyphens=False)]


def _break_statement(code: str, width: int) -> list[str]:
    """The first way that fits: an assignment whose value has operators outside brackets, its value parenthesised
    and broken before them; the statement broken inside its first outermost bracket, after the commas there, or
    before the operators there. Where none fits, the one whose longest line is shortest; the statement as it is
    where none applies."""
    depth, opening, closing, commas, operators, outside = 0, None, None, [], [], []
    assignment = code.find(" = ")
    for k, char in _code_chars(code):
        if char in "([{":
            depth += 1
            opening = k if depth == 1 and opening is None else opening
        elif char in ")]}":
            depth -= 1
            closing = k if depth == 0 and closing is None and opening is not None else closing
        elif code[k - 1:k + 2] in _OPERATORS and depth == 0 and 0 < assignment < k:
            outside.append(k)
        elif depth == 1 and closing is None and opening is not None:
            if char == ",":
                commas.append(k)
            elif code[k - 1:k + 2] in _OPERATORS:
                operators.append(k)
    candidates = []
    if outside:
        head = code[:assignment + 3] + "("
        candidates.append(_fill_pieces(head, _cut(code[assignment + 3:], [k - assignment - 3 for k in outside], 0),
                                       ")", width))
    if opening is not None and closing is not None:
        inner = code[opening + 1:closing]
        if commas:
            items = [part.strip() for part in _cut(inner, [c - opening - 1 for c in commas], 1)]
            candidates.append(wrap(code[:opening + 1], items, code[closing:], width))
        if operators:
            pieces = _cut(inner, [k - opening - 1 for k in operators], 0)
            candidates.append(_fill_pieces(code[:opening + 1], pieces, code[closing:], width))
    fitting = [lines for lines in candidates if max(map(len, lines)) <= width]
    return fitting[0] if fitting else min(candidates, key=lambda lines: max(map(len, lines)), default=[code])


_OPERATORS = (" & ", " | ", " + ", " - ", " * ")


def _fill_pieces(head: str, pieces: list[str], tail: str, width: int) -> list[str]:
    """``head`` + the pieces (each starting with its operator but the first) + ``tail``, as many pieces a line as
    fit, continuation lines aligned after ``head``."""
    lines, line, pad = [], head + pieces[0].strip(), " " * len(head)
    for piece in pieces[1:]:
        piece = piece.strip()
        if len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = pad + piece
        else:
            line += " " + piece
    return lines + [line + tail]


def _cut(text: str, at: list[int], skip: int) -> list[str]:
    """``text`` cut at the positions ``at``, ``skip`` characters dropped at each cut (a comma; an operator is kept
    at the start of the next piece)."""
    pieces, start = [], 0
    for k in at:
        pieces.append(text[start:k])
        start = k + skip
    return pieces + [text[start:]]
