"""Golden files: the generator's files for a dozen seeds, kept byte for byte in tests/golden/.

The generator promises the same file for the same task; these tests hold it to that, and show in review
what a change to the generator does to the files it writes. A change meant to alter them regenerates them:

    PYTHONPATH=src python tests/test_golden.py

and the diff of tests/golden/ goes into the same commit.
"""

import sys
from pathlib import Path

import pytest

from fusionforge.codegen import generate, variants
from fusionforge.tasks import TaskGenerator

GOLDEN = Path(__file__).parent / "golden"
# Every plan and form, both matmul variants, the three dtypes: pointwise flat (5) and tiles (1); rows in
# registers (33 layer_norm, 125 softmax, 128 instance_norm), short rows (67), a 3D group norm's tiles (84);
# matmul roots with partials (0 min, 31 logsumexp), batch norm in the epilogue (4), a normalization after the
# product (6 layer_norm, 100 group_norm, 420 a batched matmul then a 3D group norm's tiles); two reductions (60).
SEEDS = (0, 1, 4, 5, 6, 31, 33, 60, 67, 84, 100, 125, 128, 420)


def golden_files() -> list[tuple[int, str]]:
    generator = TaskGenerator()
    return [(seed, variant) for seed in SEEDS for variant in variants(generator.generate(seed))]


def _path(seed: int, variant: str) -> Path:
    return GOLDEN / f"{seed:04d}_{variant}.py"


@pytest.mark.parametrize("seed, variant", golden_files(), ids=lambda v: str(v))
def test_the_generator_writes_its_golden_files_byte_for_byte(seed, variant):
    expected = _path(seed, variant).read_text()
    assert generate(TaskGenerator().generate(seed), 1, variant) == expected, \
        f"{_path(seed, variant).name} differs: regenerate on purpose (this module's docstring) and review the diff"


def test_the_golden_folder_holds_those_files_and_no_others():
    assert sorted(p.name for p in GOLDEN.glob("*.py")) == sorted(_path(s, v).name for s, v in golden_files())


def regenerate() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for stale in GOLDEN.glob("*.py"):
        stale.unlink()
    generator = TaskGenerator()
    for seed, variant in golden_files():
        _path(seed, variant).write_text(generate(generator.generate(seed), 1, variant))
        print(_path(seed, variant))


if __name__ == "__main__":
    sys.exit(regenerate())
