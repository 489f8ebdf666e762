"""``fusionforge check --memcheck``: the checker's child run under NVIDIA's compute-sanitizer on a GPU.

A GPU kernel that reads or writes a little past a tensor rarely faults: PyTorch's caching allocator
carves tensors out of large blocks, so the access lands in other memory and the values are silently
wrong, or right by luck. With ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` every tensor is an allocation of its
own, and compute-sanitizer's memcheck tool reports each access outside one: the kernel, the source
line (Triton compiles with line info), the address and the nearest allocation. The child logs each
launch's tensor arguments (name, address, bytes) to a file before the launch (``LaunchLog``: a child
that dies after a fault keeps its log), so the report names the pointer argument and the offset in
elements, as the CPU interpreter's bounds checks do (``interpreter.OutOfBoundsAccess``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

ENV = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1", "FUSIONFORGE_MEMCHECK": "1"}  # the runner ends normally under it
LAUNCH_LOG = "launches.jsonl"  # in the child's scratch folder
ACCESS = {"read": "load", "write": "store"}

_ERROR = re.compile(r"Invalid __global__ (\w+) of size (\d+) bytes")
_AT = re.compile(r"at (?:0x[0-9a-f]+ in )?([A-Za-z_]\w*)(?:\+0x[0-9a-f]+)?(?: in (.+?):(\d+))?\s*$")
_BLOCK = re.compile(r"by thread \((\d+),(\d+),(\d+)\) in block \((\d+),(\d+),(\d+)\)")
_ADDRESS = re.compile(r"(?:Address|Access to|Access at) (0x[0-9a-f]+)")
_NEAREST = re.compile(r"and is (?:[\d,]+ bytes (after|before)|(inside)) the nearest allocation "
                      r"at (0x[0-9a-f]+) of size ([\d,]+) bytes")
_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) error")


def sanitizer() -> str | None:
    """The compute-sanitizer executable, or None when it is not installed."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").is_file():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None


def command(executable: str, log: Path) -> list[str]:
    from fusionforge.verify.sandbox import SANITIZER_EXIT

    return [executable, "--tool", "memcheck", "--print-limit", "20", "--show-backtrace", "no",
            "--error-exitcode", str(SANITIZER_EXIT), "--log-file", str(log)]


class LaunchLog:
    """Each launch's tensor arguments as a JSON line, written and closed before the launch runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def read_launch_log(path: Path) -> list[dict]:
    """The launches a child logged (every complete line), however the child ended."""
    if not path.exists():
        return []
    launches = []
    for line in path.read_text().splitlines():
        try:
            launches.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by the child's end
            break
    return launches


def parse(report: str) -> list[dict]:
    """The invalid accesses in a memcheck report, in order: access, size, kernel, file, line, address, ..."""
    errors: list[dict] = []
    for line in report.splitlines():
        text = line.lstrip("= ").rstrip()
        if m := _ERROR.search(text):
            errors.append({"access": ACCESS.get(m.group(1), m.group(1)), "size": int(m.group(2))})
        elif not errors:
            continue
        elif text.startswith("at ") and (m := _AT.match(text)) and "kernel" not in errors[-1]:
            errors[-1].update(kernel=m.group(1), file=m.group(2), line=int(m.group(3)) if m.group(3) else None)
        elif m := _BLOCK.search(text):
            errors[-1]["block"] = [int(v) for v in m.group(4, 5, 6)]
        elif (m := _ADDRESS.search(text)) and "address" not in errors[-1]:
            errors[-1]["address"] = int(m.group(1), 16)
        if m := _NEAREST.search(text):
            errors[-1]["allocation"] = [int(m.group(3), 16), int(m.group(4).replace(",", ""))]
            errors[-1]["relation"] = m.group(1) or m.group(2)
    return errors


def total_errors(report: str) -> int | None:
    m = _SUMMARY.search(report)
    return int(m.group(1)) if m else None


def details(error: dict, launches: list[dict], count: int) -> dict:
    """The interpreter's ``OutOfBoundsAccess.details`` for a sanitizer error: which tensor argument of which
    launch the nearest allocation is, and the offset in elements."""
    out = {"kernel": error.get("kernel"), "access": error.get("access"), "argument": None, "offset": None,
           "valid_offsets": None, "dtype": None, "lanes_out_of_bounds": count, "program": error.get("block"),
           "address": error.get("address")}
    start = (error.get("allocation") or [None])[0]
    for launch in launches:
        if error.get("kernel") and launch["kernel"] != error["kernel"]:
            continue
        for arg in launch["args"]:
            if start is not None and arg["storage"] <= start < arg["storage"] + max(arg["nbytes"], 1):
                item = arg["itemsize"]
                # an access that starts inside the allocation and runs past its end (a vector store
                # straddling it) is out of bounds from the allocation's end on
                address = (start + error["allocation"][1] if error.get("relation") == "inside"
                           else error.get("address"))
                out.update(argument=arg["name"], dtype=arg["dtype"],
                           offset=(address - arg["data_ptr"]) // item if address is not None else None,
                           valid_offsets=[(arg["storage"] - arg["data_ptr"]) // item,
                                          (arg["storage"] + arg["nbytes"] - arg["data_ptr"]) // item - 1])
                return out
    return out
