"""data/: the kept kernel files and ``data/index.jsonl``, one JSON record per kernel.

Several writers (parallel runs, ``fusionforge attempt`` from several shells) may share one data/
folder: every change happens under an exclusive ``flock`` on ``data/.lock``. A kernel file is copied
in under a temporary name and renamed, then its record is appended with one ``write`` and fsynced,
so an interrupt leaves either nothing or a complete file with its record (at worst an orphan file
that no record names, which ``records()`` ignores). Nothing is added twice: a record with the same
task signature and the same code hash (comments and whitespace stripped) is a duplicate.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import gc
import hashlib
import io
import json
import math
import tempfile
import tokenize
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from fusionforge.atomic import append_line, write_text
from fusionforge.kernelfile import next_free_path
from fusionforge.tasks import FusionTask

INDEX = "index.jsonl"
LOCK = ".lock"
EXPORT_FORMATS = ("jsonl", "parquet", "hf")


class DatasetError(Exception):
    """data/ cannot be used (not writable, malformed index): one line for the user."""


@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic garbage collector while building many acyclic objects (records, export rows): its
    passes over them were two thirds of the time of reading a 100,000-record index."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def code_hash(source: str) -> str:
    """sha256 of the file's tokens with comments, blank lines and indentation tokens dropped.

    The same on every Python: an f-string is one token, its source text, as Python 3.11 reads it
    (3.12 splits it into FSTRING_START, its parts and FSTRING_END, which ``_tokens`` joins again).
    """
    try:
        text = " ".join(_tokens(source))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        text = " ".join(line.split("#", 1)[0].strip() for line in source.splitlines() if line.strip())
    return hashlib.sha256(text.encode()).hexdigest()


_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _tokens(source: str) -> Iterator[str]:
    """The strings of ``source``'s significant tokens, each f-string whole (from its start to its end)."""
    lines = source.splitlines(keepends=True)
    depth, start = 0, (0, 0)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == _FSTRING_START:
            depth, start = depth + 1, (start if depth else token.start)
        elif token.type == _FSTRING_END:
            depth -= 1
            if not depth:
                yield _span(lines, start, token.end)
        elif not depth and token.type not in _SKIPPED:
            yield token.string


def _span(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    """The source text between two tokenize positions ((row from 1, column))."""
    (row, col), (end_row, end_col) = start, end
    if row == end_row:
        return lines[row - 1][col:end_col]
    return lines[row - 1][col:] + "".join(lines[row:end_row - 1]) + lines[end_row - 1][:end_col]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def make_record(task: FusionTask, source: str, result, implementer: str, model: str | None, attempt: int,
                run: str | None = None, usage: dict | None = None) -> dict:
    """The index record of a kernel that passed (``result``: a BenchResult, timed or not)."""
    import torch
    import triton

    checks = [{k: c.get(k) for k in ("label", "rel_err", "tolerance", "max_abs_err", "max_abs_tolerance",
                                     "torch_rel_err")} for c in result.check.checks if "rel_err" in c]
    context = result.context or {}
    ops = [s.op for s in task.steps]
    return {
        "id": f"{task.id}-{code_hash(source)[:8]}", "file": None, "task": task.to_dict(),
        "description": task.description, "ops": ops, "family": task.family, "dtype": task.dtype,
        "shapes": task.shapes,
        "signature": task.signature, "implementer": implementer, "model": model, "attempts": attempt,
        "run": run, "usage": usage or {}, "checks": checks, "check_device": result.check.device,
        "timed": result.timed, "note": result.note,
        "timings": result.timings, "timer": context.get("timer"), "flush_bytes": context.get("flush_bytes"),
        "speedup": result.speedup, "speedup_vs_compile": result.speedup_vs_compile,
        "faster_than_compile": result.faster_than_compile,
        "roofline": {k: v for k, v in result.roofline.items() if k.endswith("fraction_of_floor") or k == "floor_ms"},
        "device": context.get("device"), "driver": context.get("driver"),
        "torch": context.get("torch") or torch.__version__, "triton": context.get("triton") or triton.__version__,
        "created": now(), "code_hash": code_hash(source),
    }


class Dataset:
    """The data/ folder: kernel files ``NNN_fused_kernels.py`` and ``index.jsonl``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.index = self.root / INDEX

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):  # unique: threads probe too
                pass
        except OSError as e:
            raise DatasetError(f"data folder {self.root} is not writable: {e.strerror or e}") from None

    @contextlib.contextmanager
    def _locked(self):
        self.ensure_writable()
        with open(self.root / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def numbered_lines(self) -> Iterator[tuple[int, str]]:
        """The index's non-empty lines with their 1-based numbers, read as they go."""
        if not self.index.exists():
            return
        with open(self.index, encoding="utf-8") as lines:
            yield from ((number, line) for number, line in enumerate(lines, start=1) if line.strip())

    def parse(self, number: int, line: str) -> dict:
        """The record on line ``number`` of the index."""
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise DatasetError(f"{self.index}:{number} is not a JSON record") from None

    def iter_records(self) -> Iterator[dict]:
        """Every record, in the order added, parsed one at a time: a large index is never held whole."""
        return (self.parse(number, line) for number, line in self.numbered_lines())

    def records(self) -> list[dict]:
        """Every record, in the order added."""
        with paused_gc():
            return list(self.iter_records())

    def count(self) -> int:
        """How many records the index holds (its lines are counted, not parsed)."""
        if not self.index.exists():
            return 0
        with open(self.index, "rb") as lines:
            return sum(1 for line in lines if line.strip())

    def find_duplicate(self, signature: str, digest: str) -> dict | None:
        """The record with this task signature and code hash, if any; only lines holding the hash are parsed."""
        for number, line in self.numbered_lines():
            if digest in line:
                record = self.parse(number, line)
                if record["signature"] == signature and record["code_hash"] == digest:
                    return record
        return None

    def add(self, source_path: str | Path, record: dict) -> tuple[dict, bool]:
        """Move the kernel file into data/ and append its record; ``(record, added)``.

        A duplicate (same signature and code hash) is not added: the existing record comes back with
        ``added`` False, and the source file is removed all the same (its twin is already kept).
        """
        source_path = Path(source_path)
        with self._locked():
            twin = self.find_duplicate(record["signature"], record["code_hash"])
            if twin is None:
                dest = next_free_path(self.root)
                write_text(dest, source_path.read_text())
                record = {**record, "file": dest.name}
                append_line(self.index, json.dumps(record, sort_keys=False))
        source_path.unlink(missing_ok=True)
        return (record, True) if twin is None else (twin, False)

    def replace(self, record_id: str, record: dict | None) -> None:
        """Rewrite one record (``None``: drop it and delete its file), atomically."""
        with self._locked():
            records = self.records()
            kept = [r if r["id"] != record_id else record for r in records if r["id"] != record_id or record]
            write_text(self.index, "".join(json.dumps(r) + "\n" for r in kept))
            if record is None:  # the index no longer names the file: only now delete it
                for r in records:
                    if r["id"] == record_id:
                        (self.root / r["file"]).unlink(missing_ok=True)

    def pending(self) -> list[dict]:
        """Records verified on the CPU and not yet timed on a GPU."""
        return [r for r in self.records() if not r.get("timed")]

    def stats(self, runs: list[dict] | None = None) -> dict:
        """Counts, success rates (from the attempt logs in ``runs``) and speedups per family and dtype."""
        groups: dict[str, list[dict]] = defaultdict(list)
        implementers, attempts, devices, versions = [], [], set(), set()
        for r in self.iter_records():  # only what the figures need is kept
            groups[f"{r['family']}/{r['dtype']}"].append({"timed": r.get("timed"), "speedup": r.get("speedup")})
            implementers.append(r["implementer"])
            attempts.append(str(r["attempts"]))
            if r.get("timed") and r.get("device"):
                devices.add(r["device"])
            if r.get("torch"):
                versions.add(f"torch {r['torch']}, triton {r.get('triton')}")
        every = [row for rows in groups.values() for row in rows]
        summary = {"kernels": len(every), "timed": sum(1 for r in every if r["timed"]),
                   "pending": sum(1 for r in every if not r["timed"]),
                   "by_implementer": _count(implementers), "attempts_used": _count(attempts),
                   "devices": sorted(devices), "versions": sorted(versions),
                   "groups": {key: _speedups(rows) for key, rows in sorted(groups.items())},
                   "all": _speedups(every)}
        if runs is not None:
            landed = sum(1 for t in runs if t.get("outcome") == "kept")
            summary["tasks_attempted"] = len(runs)
            summary["tasks_landed"] = landed
            summary["success_rate"] = landed / len(runs) if runs else None
            first = sum(1 for t in runs if t.get("outcome") == "kept" and t.get("attempts") == 1)
            summary["first_attempt_rate"] = first / len(runs) if runs else None
        return summary

    def source_of(self, record: dict) -> str | None:
        """The kernel file's text of ``record`` (None: the file is gone)."""
        path = self.root / record["file"] if record.get("file") else None
        return path.read_text() if path is not None and path.exists() else None

    def export(self, out: str | Path, fmt: str) -> int:
        """Write every record with its kernel source, streamed: JSON lines (each record as it is, plus
        ``source``), one Parquet file, or a Hugging Face-ready folder (both in ``fusionforge.hub``'s typed
        schema); the count written."""
        if fmt not in EXPORT_FORMATS:
            raise DatasetError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
        out = Path(out)
        if out.resolve().is_relative_to(self.root.resolve()):
            raise DatasetError(f"{out} is inside the dataset folder {self.root}: export somewhere else")
        if fmt == "jsonl":
            count = 0
            with open(out, "w", encoding="utf-8") as lines:
                for r in self.iter_records():
                    lines.write(json.dumps({**r, "source": self.source_of(r)}) + "\n")
                    count += 1
            return count
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DatasetError(f"the {fmt} export needs pyarrow: pip install 'fusionforge[export]'") from None
        from fusionforge import hub

        if fmt == "parquet":
            return hub.write_parquet(self, out)
        return hub.export_hub(self, out)


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return dict(sorted(counts.items()))


def geomean(values) -> float | None:
    """The geometric mean of the positive ``values`` (None and zeros are left out); None when there are none."""
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _speedups(records: list[dict]) -> dict:
    """Count, and the geometric mean / median / min / max speedup over eager of the timed records."""
    speedups = sorted(r["speedup"] for r in records if r.get("timed") and r.get("speedup"))
    row: dict = {"kernels": len(records), "timed": len(speedups)}
    if speedups:
        row.update(geomean=geomean(speedups),
                   median=speedups[len(speedups) // 2], min=speedups[0], max=speedups[-1])
    return row
