"""data/ as a Hugging Face-ready folder: Parquet shards that `datasets` loads as they are, and a dataset card.

    OUT/README.md                                the card: a YAML header the Hub reads (the data files, tags,
                                                 size), then what is in it, how it was verified and timed, figures
    OUT/data/train-00000-of-00001.parquet        one row per kernel, at most ROWS_PER_SHARD rows a shard

Each row carries KernelBook's columns (``python_code``: the PyTorch program, runnable on its own;
``triton_code``: the Triton kernels and their wrapper; ``entry_point``: the PyTorch function both compute),
then fusionforge's own, typed (numbers as numbers, ops as a list; the nested task, checks and timings as
JSON text) and the whole kernel file as ``source``; `data export --format parquet` writes the same rows as
one file. Records are read, converted and written one shard at a time: a large dataset is never held whole.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from fusionforge.dataset import Dataset, DatasetError, paused_gc

ROWS_PER_SHARD = 20_000
CARD_START = "---\nlicense: mit\npretty_name: fusionforge fused Triton kernels\n"
ENTRY_POINT = "fused_kernel_pytorch"
TRITON_ENTRY_POINT = "fused_kernel_triton_wrapper"


def split_source(source: str) -> tuple[str | None, str | None]:
    """(python_code, triton_code) of a kernel file in the seed format; (None, None) when a marker is missing.

    python_code: the file's header (docstring, imports, DEVICE), the PYTHON section and ``get_inputs``;
    triton_code: the header and the TRITON section.
    """
    def section(name: str) -> str | None:
        begin, end = source.find(f"# <{name}>\n"), source.find(f"# </{name}>")
        return source[begin + len(name) + 4:end] if 0 <= begin < end else None

    python, triton, test = section("PYTHON"), section("TRITON"), section("TEST")
    if python is None or triton is None:
        return None, None
    header = source[:source.find("# <PYTHON>\n")]
    get_inputs = ""
    if test is not None and "def get_inputs(" in test:
        lines = test[test.find("def get_inputs("):].splitlines(keepends=True)
        body = [lines[0]]
        for line in lines[1:]:
            if line.strip() and not line[0].isspace():
                break
            body.append(line)
        get_inputs = "\n\n" + "".join(body).rstrip() + "\n"
    return header + python.rstrip() + "\n" + get_inputs, header + triton.rstrip() + "\n"


def _schema():
    import pyarrow as pa

    text, number = pa.string(), pa.float64()
    return pa.schema([
        ("id", text), ("python_code", text), ("triton_code", text), ("entry_point", text),
        ("triton_entry_point", text), ("task_id", text), ("seed", pa.int64()), ("description", text),
        ("ops", pa.list_(text)), ("family", text), ("dtype", text), ("difficulty", text), ("signature", text),
        ("implementer", text), ("model", text), ("attempts", pa.int64()), ("timed", pa.bool_()),
        ("speedup", number), ("speedup_vs_compile", number), ("eager_ms", number), ("compile_ms", number),
        ("triton_ms", number), ("floor_ms", number), ("triton_fraction_of_floor", number), ("device", text),
        ("driver", text), ("torch", text), ("triton", text), ("timer", text), ("created", text),
        ("code_hash", text), ("file", text), ("source", text), ("task", text), ("shapes", text), ("checks", text),
        ("timings", text),
    ])


def row(record: dict, source: str | None) -> dict:
    """One export row of an index record and its kernel file's source (None: the file is missing)."""
    python_code, triton_code = split_source(source) if source else (None, None)
    task = record.get("task") or {}
    timings = record.get("timings") or {}
    roofline = record.get("roofline") or {}

    def median(name: str) -> float | None:
        return (timings.get(name) or {}).get("median_ms")

    return {
        "id": record["id"], "python_code": python_code, "triton_code": triton_code, "entry_point": ENTRY_POINT,
        "triton_entry_point": TRITON_ENTRY_POINT, "task_id": task.get("id"), "seed": task.get("seed"),
        "description": record.get("description"), "ops": record.get("ops"), "family": record.get("family"),
        "dtype": record.get("dtype"), "difficulty": task.get("difficulty"), "signature": record.get("signature"),
        "implementer": record.get("implementer"), "model": record.get("model"), "attempts": record.get("attempts"),
        "timed": bool(record.get("timed")), "speedup": record.get("speedup"),
        "speedup_vs_compile": record.get("speedup_vs_compile"), "eager_ms": median("eager"),
        "compile_ms": median("compile"), "triton_ms": median("triton"), "floor_ms": roofline.get("floor_ms"),
        "triton_fraction_of_floor": roofline.get("triton_fraction_of_floor"), "device": record.get("device"),
        "driver": record.get("driver"), "torch": record.get("torch"), "triton": record.get("triton"),
        "timer": record.get("timer"), "created": record.get("created"), "code_hash": record.get("code_hash"),
        "file": record.get("file"), "source": source,
        **{name: json.dumps(record[name]) if record.get(name) is not None else None
           for name in ("task", "shapes", "checks", "timings")},
    }


def _table(dataset: Dataset, records: Iterable[dict]):
    """The export rows of ``records`` (and their files in ``dataset``) as one pyarrow table."""
    import pyarrow as pa

    schema = _schema()
    with paused_gc():
        rows = [row(record, dataset.source_of(record)) for record in records]
        columns = {field.name: pa.array([r[field.name] for r in rows], type=field.type) for field in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def write_parquet(dataset: Dataset, out: Path) -> int:
    """Every record of ``dataset`` as one Parquet file (a row group per ROWS_PER_SHARD rows); the count."""
    import pyarrow.parquet as pq

    count = 0
    records = dataset.iter_records()
    with pq.ParquetWriter(out, _schema(), compression="zstd") as writer:
        while (table := _table(dataset, itertools.islice(records, ROWS_PER_SHARD))).num_rows:
            writer.write_table(table)
            count += table.num_rows
    return count


def _write_shard(dataset: Dataset, lines: list[tuple[int, str]], path: Path) -> int:
    """Parse ``lines`` of the index, and write their rows as the shard ``path``; the count."""
    import pyarrow.parquet as pq

    table = _table(dataset, (dataset.parse(number, line) for number, line in lines))
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


def _check_destination(out: Path) -> None:
    """Refuse a folder whose README.md or data/ is something else's: an export replaces only its own files."""
    card_file = out / "README.md"
    if card_file.is_file() and not card_file.read_text(errors="replace").startswith(CARD_START):
        raise DatasetError(f"{out} holds a README.md that is not a fusionforge dataset card: export into a new "
                           "or empty folder")
    if (out / "data").is_dir() and any(p.suffix != ".parquet" for p in (out / "data").iterdir()):
        raise DatasetError(f"{out / 'data'} holds other files than an export's shards (a dataset?): export into a "
                           "new or empty folder")


def export_hub(dataset: Dataset, out: Path, rows_per_shard: int = ROWS_PER_SHARD) -> int:
    """Write ``dataset`` as OUT/data/train-*.parquet and the card OUT/README.md; the count written.

    The shards are written by a process per CPU (at most one per shard), the card's figures by one more;
    the index is read once here and handed out a shard's lines at a time.
    """
    shards = out / "data"
    _check_destination(out)
    shards.mkdir(parents=True, exist_ok=True)
    for stale in shards.glob("train-*-of-*.parquet"):  # a shard of a larger export would be loaded with this one
        stale.unlink()
    total = max(1, math.ceil(dataset.count() / rows_per_shard))
    name = "train-{:05d}-of-{:05d}.parquet".format
    lines = dataset.numbered_lines()
    chunks = iter(lambda: list(itertools.islice(lines, rows_per_shard)), [])
    workers = min(os.cpu_count() or 1, total)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        stats = pool.submit(dataset.stats)
        writing: set[Future] = set()
        count = 0
        for k, chunk in enumerate(chunks):
            if len(writing) >= workers:  # a shard's lines are read only when a process is free for them
                done, writing = wait(writing, return_when=FIRST_COMPLETED)
                count += sum(f.result() for f in done)
            writing.add(pool.submit(_write_shard, dataset, chunk, shards / name(k, total)))
        count += sum(f.result() for f in writing)
        if count == 0:
            _write_shard(dataset, [], shards / name(0, 1))
        (out / "README.md").write_text(card(stats.result()))
    return count


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def card(stats: dict) -> str:
    """The dataset card (README.md): the Hub's YAML header, then the contents, the method and the figures."""
    devices, versions = stats["devices"], stats["versions"]
    implementers = ", ".join(f"{name} ({count})" for name, count in stats["by_implementer"].items()) or "none"
    overall = stats["all"]
    lines = [
        *CARD_START.splitlines(),
        "task_categories:", "- text-generation",
        "tags:", "- triton", "- gpu-kernels", "- kernel-fusion", "- pytorch", "- code",
        "size_categories:", f"- {_size_category(stats['kernels'])}",
        "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: data/train-*",
        "---", "",
        "# fusionforge fused Triton kernels", "",
        f"{stats['kernels']} fused kernels, each a chain of PyTorch operations written twice: as PyTorch "
        "(`python_code`) and as Triton kernels with the wrapper that launches them (`triton_code`). "
        f"{stats['timed']} were timed on a GPU ({', '.join(devices) or 'none'}); the other "
        f"{stats['pending']} were verified through Triton's interpreter on the CPU and not timed. "
        f"Implementers: {implementers}. Versions: {'; '.join(versions) or 'unknown'}.", "",
        "## How each kernel was verified", "",
        "- In a fresh child process, its outputs matched a float64 reference that the checker built itself, on "
        "fresh random inputs at odd test shapes and (on a GPU) the bench shape, then on the same tensors "
        "refilled with new values; within a tolerance relative to PyTorch's own error at the same dtype "
        "(`checks`: each input set's errors and tolerances).",
        "- The Triton kernels did the work: their launches were counted, the wrapper's allocations poisoned, "
        "and known ways of computing the result elsewhere (PyTorch, the host, caches keyed on the inputs) fail.",
        "- While it was timed, outputs of timed calls were compared with the reference again.", "",
        "## How it was timed", "",
        "CUDA events on the current stream, the L2 cache flushed before every call, PyTorch eager, "
        "torch.compile and Triton interleaved in rounds until the medians are stable; `timings` has the "
        "medians, the 20th and 80th percentiles and the call counts. `speedup` is eager's median over "
        "Triton's, `speedup_vs_compile` torch.compile's over Triton's; `floor_ms` is the roofline floor "
        "(bytes moved and flops against the device's measured copy and matmul rates).", "",
        "## Figures", "",
        "| family / dtype | kernels | timed | geomean speedup over eager | min | max |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, group in list(stats["groups"].items()) + [("all", overall)]:
        figures = (f"{group['geomean']:.2f}x | {group['min']:.2f}x | {group['max']:.2f}x" if group.get("geomean")
                   else "- | - | -")
        lines.append(f"| {key} | {group['kernels']} | {group['timed']} | {figures} |")
    lines += [
        "", "## Columns", "",
        "- `python_code`, `triton_code`, `entry_point`: as in KernelBook; `entry_point` names the PyTorch "
        f"function (`{ENTRY_POINT}`), `triton_entry_point` the Triton wrapper with the same parameters "
        f"(`{TRITON_ENTRY_POINT}`); `get_inputs()` in `python_code` builds inputs at the bench shape.",
        "- `source`: the whole kernel file (seed format: PYTHON, TRITON and TEST sections), runnable as it is.",
        "- `description`, `ops`, `family`, `dtype`, `difficulty`, `signature`, `seed`, `task_id`: the task; "
        "`task` and `shapes` hold it whole (JSON).",
        "- `implementer`, `model`, `attempts`: who wrote the kernel and at which attempt it passed.",
        "- `timed`, `speedup`, `speedup_vs_compile`, `eager_ms`, `compile_ms`, `triton_ms`, `floor_ms`, "
        "`triton_fraction_of_floor`, `device`, `driver`, `torch`, `triton`, `timer`: the timing.", "",
        "## Loading", "",
        "```python",
        "from datasets import load_dataset",
        "kernels = load_dataset('parquet', data_files='data/train-*.parquet', split='train')",
        "```", "",
    ]
    return "\n".join(lines)
