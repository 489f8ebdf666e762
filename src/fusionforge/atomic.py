"""Files written whole or not at all, for folders that an interrupt or another process may see mid-write
(data/, runs/, the work folder, the handed-out tasks)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all: a temporary file, fsynced, then renamed over ``path``."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def append_line(path: Path, line: str) -> None:
    """One ``write`` of a whole line on an O_APPEND descriptor, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
