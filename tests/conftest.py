"""Tests run on the CPU: Triton kernels go through its interpreter unless a GPU is present."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_args(tmp_path, *extra) -> list[str]:
    """``fusionforge run`` arguments keeping its work, data and runs folders under ``tmp_path``, on the CPU."""
    return ["run", "--workdir", str(tmp_path / "work"), "--data", str(tmp_path / "data"),
            "--runs", str(tmp_path / "runs"), "--device", "cpu", *extra]
