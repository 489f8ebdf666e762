"""The Hugging Face-ready export: KernelBook's columns that run, typed columns, shards and a card `datasets` reads."""

import json
from pathlib import Path

import pytest
import torch
from conftest import dataset_of, generated_source

from fusionforge import cli
from fusionforge.dataset import Dataset
from fusionforge.hub import ENTRY_POINT, TRITON_ENTRY_POINT, export_hub, split_source

pq = pytest.importorskip("pyarrow.parquet")

FIXTURE = Path(__file__).parent / "fixtures" / "good" / "pointwise_bias_gelu_fp16.py"


@pytest.mark.parametrize("source", [FIXTURE.read_text(), generated_source(5)], ids=["fixture", "generated"])
def test_python_code_and_triton_code_run_on_their_own_and_agree(source):
    python_code, triton_code = split_source(source)
    assert f"def {ENTRY_POINT}(" in python_code and "def get_inputs(" in python_code
    assert "@triton.jit" not in python_code and "def test_performance" not in python_code
    assert f"def {TRITON_ENTRY_POINT}(" in triton_code and f"def {ENTRY_POINT}(" not in triton_code
    assert "def get_inputs(" not in triton_code and "# <" not in python_code + triton_code
    pytorch_side, triton_side = {}, {}
    exec(compile(python_code, "python_code", "exec"), pytorch_side)
    exec(compile(triton_code, "triton_code", "exec"), triton_side)
    inputs = pytorch_side["get_inputs"]()
    expected = pytorch_side[ENTRY_POINT](*inputs)
    got = triton_side[TRITON_ENTRY_POINT](*inputs)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_a_file_without_its_markers_has_no_code_columns():
    assert split_source('"""Fused Kernels: x"""\nimport torch\n') == (None, None)
    assert split_source(FIXTURE.read_text().replace("# </TRITON>", "")) == (None, None)


def test_hf_export_writes_typed_shards_and_a_card(tmp_path, capsys):
    sources = [FIXTURE.read_text(), generated_source(5), generated_source(8)]
    dataset = dataset_of(tmp_path, sources, [True, True, False])
    out = tmp_path / "hub"
    assert cli.main(["data", "export", str(out), "--format", "hf", "--data", str(dataset.root)]) == 0
    assert "wrote 3 records" in capsys.readouterr().out
    shards = sorted((out / "data").glob("*.parquet"))
    assert [s.name for s in shards] == ["train-00000-of-00001.parquet"]
    table = pq.read_table(shards[0])
    assert {"python_code", "triton_code", "entry_point"} <= set(table.column_names)
    pa = pytest.importorskip("pyarrow")
    assert table.schema.field("ops").type.value_type == pa.string()
    assert table.schema.field("speedup").type == pa.float64() and table.schema.field("seed").type == pa.int64()
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["ff-0", "ff-1", "ff-2"]
    assert [r["source"] for r in rows] == sources
    assert rows[0]["triton_ms"] == 0.1 and rows[0]["eager_ms"] == 0.3 and rows[0]["floor_ms"] == 0.05
    assert rows[2]["timed"] is False and rows[2]["speedup"] is None and rows[2]["triton_ms"] is None
    assert json.loads(rows[0]["task"])["seed"] == 0 and json.loads(rows[1]["checks"])[0]["rel_err"] == 1e-4

    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "path: data/train-*" in header and "size_categories:\n- n<1K" in header
    assert "3 fused kernels" in card and "2 were timed on a GPU (NVIDIA H200)" in card
    assert "| pointwise/float16 | 3 | 2 | 3.00x | 3.00x | 3.00x |" in card


def test_hf_export_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = dataset_of(tmp_path, [FIXTURE.read_text(), generated_source(5)], [True, False])
    out = tmp_path / "hub"
    dataset.export(out, "hf")
    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded.num_rows == 2 and loaded[0]["entry_point"] == ENTRY_POINT
    assert loaded.features["ops"].feature.dtype == "string"


def test_hf_export_shards_and_leaves_no_stale_shard(tmp_path):
    dataset = dataset_of(tmp_path, [generated_source(k) for k in (1, 2, 3)], [False] * 3)
    out = tmp_path / "hub"
    assert export_hub(dataset, out, rows_per_shard=2) == 3
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00002.parquet",
                                                                 "train-00001-of-00002.parquet"]
    assert pq.read_table(out / "data").num_rows == 3
    for record in dataset.records()[1:]:
        dataset.replace(record["id"], None)
    assert export_hub(dataset, out, rows_per_shard=2) == 1
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]


def test_hf_export_of_an_empty_dataset_is_an_empty_shard(tmp_path):
    out = tmp_path / "hub"
    assert Dataset(tmp_path / "data").export(out, "hf") == 0
    assert pq.read_table(out / "data").num_rows == 0 and "0 fused kernels" in (out / "README.md").read_text()


@pytest.mark.parametrize("fmt", ["hf", "parquet", "jsonl"])
def test_a_malformed_index_line_is_named_by_every_export(tmp_path, capsys, fmt):
    dataset = dataset_of(tmp_path, [generated_source(k) for k in (1, 2)], [False, False])
    with open(dataset.index, "a") as index:
        index.write('{"id": "ff-broken", \n')
    assert cli.main(["data", "export", str(tmp_path / "out"), "--format", fmt, "--data", str(dataset.root)]) == 2
    assert "index.jsonl:3 is not a JSON record" in capsys.readouterr().err


def test_an_export_never_replaces_what_is_not_its_own(tmp_path, capsys):
    """Into a folder with another README.md, or whose data/ is a dataset: a usage error, nothing touched."""
    dataset = dataset_of(tmp_path, [generated_source(1)], [False])
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    assert cli.main(["data", "export", str(project), "--format", "hf", "--data", str(dataset.root)]) == 2
    assert "not a fusionforge dataset card" in capsys.readouterr().err
    assert (project / "README.md").read_text() == "# my project\n" and not (project / "data").exists()
    assert cli.main(["data", "export", str(tmp_path), "--format", "hf", "--data", str(dataset.root)]) == 2
    assert "holds other files than an export's shards" in capsys.readouterr().err
    assert len(Dataset(dataset.root).records()) == 1 and not (tmp_path / "README.md").exists()
    for inside in (dataset.index, dataset.root, dataset.root / "hub"):
        assert cli.main(["data", "export", str(inside), "--format", "jsonl", "--data", str(dataset.root)]) == 2
        assert "is inside the dataset folder" in capsys.readouterr().err
    assert len(Dataset(dataset.root).records()) == 1
    out = tmp_path / "hub"
    assert cli.main(["data", "export", str(out), "--format", "hf", "--data", str(dataset.root)]) == 0
    assert cli.main(["data", "export", str(out), "--format", "hf", "--data", str(dataset.root)]) == 0  # again
