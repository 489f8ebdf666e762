"""data/ and its index: atomic, duplicate-free appends with several writers; stats and export."""

import json
import multiprocessing

import pytest

from fusionforge import cli
from fusionforge.dataset import Dataset, DatasetError, code_hash

SOURCE = '''"""Fused Kernels: x"""
import torch


def fused_kernel_pytorch(x):
    return x + {k}  # the value
'''


def record(k: int, signature: str = "float32|sig", timed: bool = False, speedup: float | None = None) -> dict:
    source = SOURCE.format(k=k)
    return {"id": f"ff-{k}", "file": None, "signature": signature, "code_hash": code_hash(source),
            "family": "pointwise", "dtype": "float32", "implementer": "builtin", "attempts": 1 + k % 3,
            "timed": timed, "speedup": speedup, "task": {"seed": k}}


def add(root, k: int, tmp) -> tuple[dict, bool]:
    path = tmp / f"{k}-{multiprocessing.current_process().pid}.py"
    path.write_text(SOURCE.format(k=k))
    return Dataset(root).add(path, record(k))


def test_code_hash_ignores_comments_and_whitespace_only():
    base = code_hash(SOURCE.format(k=1))
    assert code_hash(SOURCE.format(k=1).replace("  # the value", "").replace("\n\n\n", "\n\n")) == base
    assert code_hash(SOURCE.format(k=1).replace("x + 1", "x  +  1")) == base
    assert code_hash(SOURCE.format(k=2)) != base


# f-strings that Python 3.12 tokenizes in parts (nested, format specs, escaped braces, a raw one, one
# over two lines): the hash must be the same on every Python, or a dataset's duplicates depend on it
FSTRINGS = '''def label(name, width, value):
    inner = f"{name!r:>{width}} {{literal}} {value:.3e}"
    nested = f"{'a' + f'{value}'}" + f"""
    {name} spans {
        width} lines"""
    return f'{inner}-{nested}' + rf"\\d{width}"
'''


def test_code_hash_is_the_same_on_every_python():
    assert code_hash(FSTRINGS) == "103b5d2b2cdd3ca04728ae6256175ef7a1ee34ad5346aad4be3de3b7e74e89eb"
    assert code_hash(FSTRINGS.replace(" spans ", " spans  ")) != code_hash(FSTRINGS)  # inside a string: kept


def _writer(root, tmp, keys):
    for k in keys:
        add(root, k, tmp)


def test_concurrent_writers_lose_nothing_and_add_nothing_twice(tmp_path):
    """Four processes add overlapping sets of kernels at once: every kernel lands exactly once."""
    root, scratch = tmp_path / "data", tmp_path / "scratch"
    scratch.mkdir()
    plans = [range(0, 12), range(6, 18), range(0, 18, 2), range(12, 24)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(root, scratch, list(keys))) for keys in plans]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    lines = (root / "index.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a whole record
    assert sorted(r["id"] for r in records) == sorted(f"ff-{k}" for k in range(24))
    files = sorted(p.name for p in root.glob("*_fused_kernels.py"))
    assert files == sorted(r["file"] for r in records) and len(set(files)) == 24
    for r in records:
        assert code_hash((root / r["file"]).read_text()) == r["code_hash"]
    assert not list(scratch.iterdir()), "each source is moved in or dropped as a duplicate"
    assert not list(root.glob(".*partial"))


def test_duplicate_comes_back_unadded(tmp_path):
    first, added = add(tmp_path / "data", 1, tmp_path)
    twin, again = add(tmp_path / "data", 1, tmp_path)
    assert added and not again and twin["file"] == first["file"]
    other_task, added = Dataset(tmp_path / "data").add(_source(tmp_path, 1), record(1, signature="float16|sig"))
    assert added, "the same code for another task is another kernel"


def _source(tmp_path, k):
    path = tmp_path / f"extra-{k}.py"
    path.write_text(SOURCE.format(k=k))
    return path


def test_replace_rewrites_or_drops_a_record(tmp_path):
    dataset = Dataset(tmp_path / "data")
    kept, _ = add(dataset.root, 1, tmp_path)
    dropped, _ = add(dataset.root, 2, tmp_path)
    assert [r["id"] for r in dataset.pending()] == ["ff-1", "ff-2"]
    dataset.replace("ff-1", {**kept, "timed": True, "speedup": 2.0})
    dataset.replace("ff-2", None)
    assert [(r["id"], r["timed"]) for r in dataset.records()] == [("ff-1", True)]
    assert not (dataset.root / dropped["file"]).exists() and (dataset.root / kept["file"]).exists()
    assert dataset.pending() == []


def test_malformed_index_is_a_clear_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "index.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(DatasetError, match="index.jsonl:2"):
        Dataset(root).records()


def test_stats_group_speedups_and_success_rates(tmp_path):
    dataset = Dataset(tmp_path / "data")
    for k, speedup in ((1, 2.0), (2, 8.0), (3, None)):
        path = _source(tmp_path, k)
        dataset.add(path, record(k, timed=speedup is not None, speedup=speedup))
    runs = [{"outcome": "kept", "attempts": 1}, {"outcome": "kept", "attempts": 2}, {"outcome": "failed"},
            {"outcome": "kept", "attempts": 1}]
    stats = dataset.stats(runs)
    assert stats["kernels"] == 3 and stats["timed"] == 2 and stats["pending"] == 1
    assert stats["all"]["geomean"] == pytest.approx(4.0) and stats["all"]["max"] == 8.0
    assert stats["groups"]["pointwise/float32"]["kernels"] == 3
    assert stats["success_rate"] == 0.75 and stats["first_attempt_rate"] == 0.5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_carries_records_and_sources(tmp_path, capsys, fmt):
    root = tmp_path / "data"
    for k in (1, 2):
        add(root, k, tmp_path)
    out = tmp_path / f"export.{fmt}"
    assert cli.main(["data", "export", str(out), "--format", fmt, "--data", str(root)]) == 0
    assert "wrote 2 records" in capsys.readouterr().out
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == ["ff-1", "ff-2"]
    assert all(r["source"] == SOURCE.format(k=k) for r, k in zip(rows, (1, 2)))


def test_data_stats_command(tmp_path, capsys):
    root = tmp_path / "data"
    add(root, 1, tmp_path)
    assert cli.main(["data", "stats", "--data", str(root), "--runs", str(tmp_path / "runs")]) == 0
    assert "1 kernels" in capsys.readouterr().out
    assert cli.main(["data", "stats", "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernels"] == 1


def test_export_to_an_unwritable_place_is_a_usage_error(tmp_path, capsys):
    add(tmp_path / "data", 1, tmp_path)
    assert cli.main(["data", "export", str(tmp_path / "no" / "such" / "dir.jsonl"),
                     "--data", str(tmp_path / "data")]) == 2
    assert "cannot write" in capsys.readouterr().err
