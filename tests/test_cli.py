"""The `fusionforge task` command and the seed-compatible generate_fusion_task.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusionforge.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_task_prints_a_numbered_list(capsys):
    assert main(["task", "--seed", "5", "--ops", "linear_bias,gelu,layer_norm", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "1. linear x @ w^T + bias" in out and "2. gelu (erf)" in out and "3. layer_norm" in out
    assert "[M, K] -> [M, N]" in out and "float16" in out and "bench" in out


def test_task_json_and_out_file(tmp_path, capsys):
    path = tmp_path / "task.json"
    assert main(["task", "--seed", "9", "--json", "--out", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(path.read_text())
    assert printed["seed"] == 9 and printed["ops"]


def test_task_count_gives_consecutive_seeds(capsys):
    assert main(["task", "--seed", "100", "--count", "3", "--json"]) == 0
    assert [t["seed"] for t in json.loads(capsys.readouterr().out)] == [100, 101, 102]


@pytest.mark.parametrize("argv, message", [
    (["task", "--ops", "gleu"], "unknown op 'gleu'; valid ops:"),
    (["task", "--ops", "relu,linear"], "must come first"),
    (["task", "--out", "/nonexistent/dir/task.json"], "cannot write"),
])
def test_task_usage_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["task", "--difficulty", "extreme"], ["run", "--implementer", "gpt"],
                                  ["run", "-n", "0"], ["nosuchcommand"], ["data"]])
def test_bad_flag_exits_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "--help" in err


def test_generate_fusion_task_script_runs_from_a_checkout(tmp_path):
    state = tmp_path / "state"
    result = subprocess.run([sys.executable, str(ROOT / "generate_fusion_task.py"), "--seed", "3", "--json",
                             "--state", str(state)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["seed"] == 3
    handed_out = json.loads((state / "current.json").read_text())["task_id"]
    assert json.loads((state / "tasks" / f"{handed_out}.json").read_text()) == json.loads(result.stdout)
    again = subprocess.run([sys.executable, "-m", "fusionforge", "task", "--seed", "3", "--json"],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.stdout == result.stdout
