"""Tests run on the CPU: Triton kernels go through its interpreter unless a GPU is present."""

import os

import torch

from fusionforge.dataset import Dataset, code_hash
from fusionforge.implement.builtin import BuiltinImplementer
from fusionforge.tasks import TaskGenerator

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The sm_90 build of a file that passes on the CPU costs 2-10 s a check; tests/test_builds.py and the fixtures'
# verdicts (test_checker.py) ask for it, the other tests' checks do without.
os.environ.setdefault("FUSIONFORGE_BUILD_TARGET", "none")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_args(tmp_path, *extra) -> list[str]:
    """``fusionforge run`` arguments keeping its work, data and runs folders under ``tmp_path``, on the CPU."""
    return ["run", "--workdir", str(tmp_path / "work"), "--data", str(tmp_path / "data"),
            "--runs", str(tmp_path / "runs"), "--device", "cpu", *extra]


def generated_source(seed: int) -> str:
    """The built-in generator's kernel file for the task of ``seed``."""
    task = TaskGenerator().generate(seed)
    return BuiltinImplementer().implement(task, 1, []).source


def kept_record(k: int, source: str, timed: bool) -> dict:
    """A kept kernel's index record (timed: with timings, speedups and a roofline) for ``source``."""
    timings = {name: {"median_ms": ms, "p20_ms": ms * 0.99, "p80_ms": ms * 1.01, "calls": 150}
               for name, ms in (("eager", 0.3), ("compile", 0.2), ("triton", 0.1))} if timed else {}
    task = {"id": f"task-{k}", "seed": k, "difficulty": "easy",
            "cost": {"bench": [{"bytes": 2**28, "flops": 2**26 * (k + 1)}]}}
    return {"id": f"ff-{k}", "file": None, "signature": f"float16|sig{k}", "code_hash": code_hash(source),
            "family": "pointwise", "dtype": "float16", "implementer": "builtin", "model": None, "attempts": 1,
            "ops": ["add", "gelu"], "description": "add a per-column vector -> gelu (float16)", "task": task,
            "shapes": {"bench": [{"M": 8}]}, "checks": [{"label": "test[0]", "rel_err": 1e-4}], "timed": timed,
            "timings": timings, "speedup": 3.0 if timed else None, "speedup_vs_compile": 2.0 if timed else None,
            "faster_than_compile": timed,
            "roofline": {"floor_ms": 0.05, "triton_fraction_of_floor": 0.5} if timed else {},
            "device": "NVIDIA H200" if timed else None, "torch": "2.11.0", "triton": "3.6.0"}


def dataset_of(tmp_path, sources: list[str], timed: list[bool]) -> Dataset:
    """A data/ under ``tmp_path`` keeping ``sources``, the k-th timed when ``timed[k]``."""
    dataset = Dataset(tmp_path / "data")
    for k, (source, is_timed) in enumerate(zip(sources, timed)):
        path = tmp_path / f"in-{k}.py"
        path.write_text(source)
        dataset.add(path, kept_record(k, source, is_timed))
    return dataset
