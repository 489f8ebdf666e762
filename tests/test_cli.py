"""The `fusionforge` command's options and messages; `task` and the seed-compatible generate_fusion_task.py."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fusionforge import cli
from fusionforge.cli import main
from fusionforge.kernelfile import parse
from fusionforge.tasks import FusionTask, TaskGenerator

ROOT = Path(__file__).resolve().parents[1]


def test_task_prints_a_numbered_list(capsys):
    assert main(["task", "--seed", "5", "--ops", "linear_bias,gelu,layer_norm", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "1. linear x @ w^T + bias" in out and "2. gelu (erf)" in out and "3. layer_norm" in out
    assert "[M, K] -> [M, N]" in out and "float16" in out and "bench" in out


def test_a_quantizers_task_prints_its_statements_and_both_outputs(capsys):
    assert main(["task", "--seed", "3", "--ops", "silu,quantize_fp8_rows", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "scales = h.abs().amax(dim=-1, keepdim=True)" in out and ".to(torch.float8_e4m3fn), scales" in out
    assert "Output: a tuple: [M, N] float8_e4m3fn (the values), [M, 1] float32 (their scales)" in out


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


# -- numeric options: every one is checked, with a one-line error and exit code 2 ---------------------------

@pytest.mark.parametrize("argv, option", [
    *[([command, "f.py", "--timeout", value], "--timeout") for command in ("check", "bench", "attempt")
      for value in ("0", "-5", "nan", "inf", "soon")],
    (["run", "--timeout", "0"], "--timeout"),
    (["run", "--timeout", "-1"], "--timeout"),
    (["run", "--temperature", "-0.5"], "--temperature"),
    (["run", "--temperature", "nan"], "--temperature"),
    (["run", "--attempts", "0"], "--attempts"),
    (["run", "--max-tokens", "0"], "--max-tokens"),
    (["run", "-j", "0"], "-j/--jobs"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "-n", "2.5"], "-n/--count"),
    (["bench", "f.py", "-j", "-2"], "-j/--jobs"),
    (["check", "f.py", "--seeds", "0"], "--seeds"),
    (["attempt", "f.py", "--attempts", "0"], "--attempts"),
    (["task", "--count", "0"], "--count"),
    (["task", "--seed", "-7"], "--seed"),
    (["task", "--seed", "x"], "--seed"),
])
def test_numeric_options_are_validated(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: must be" in err and "Traceback" not in err


def test_every_option_has_help():
    import argparse

    from fusionforge.cli import build_parser

    def undocumented(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield from undocumented(subparser, f"{name} {sub}")
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                yield f"{name} {action.option_strings or action.dest}"

    assert list(undocumented(build_parser(), "fusionforge")) == []


@pytest.mark.parametrize("argv", [["data", "stats", "--help"], ["data", "export", "--help"], ["report", "--help"]])
def test_data_commands_explain_their_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    options = out.split("options:", 1)[1]
    assert "--json " in options and "print" in options.split("--json", 1)[1].splitlines()[0]


# -- task: streamed, reproducible, shown again ----------------------------------------------------------------

def test_task_count_json_is_one_list_laid_out_as_json_dumps(tmp_path, capsys):
    out = tmp_path / "tasks.json"
    assert main(["task", "--seed", "100", "--count", "3", "--json", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tasks = json.loads(printed)
    assert printed == json.dumps(tasks, indent=2) + "\n" == out.read_text()


def test_task_count_streams(monkeypatch, capsys):
    """Each task is printed as soon as it is made: the first ones are out before the last is generated."""
    from fusionforge import tasks

    made = []
    generate = tasks.TaskGenerator.generate

    def counted(self, seed, *args):
        if len(made) == 2:
            assert capsys.readouterr().out.count("Fusion task ") == 2  # printed before the third is made
            raise KeyboardInterrupt
        made.append(seed)
        return generate(self, seed, *args)

    monkeypatch.setattr(tasks.TaskGenerator, "generate", counted)
    assert main(["task", "--seed", "0", "--count", "1000000000"]) == 130


def test_an_interrupted_bench_json_keeps_the_files_it_finished(tmp_path, monkeypatch, capsys):
    """A bench cut short (Ctrl-C, or `timeout`'s SIGTERM) prints the files finished so far as its JSON, in file
    order, and exits 130."""
    from types import SimpleNamespace

    import fusionforge.bench

    paths = [tmp_path / f"00{k}_fused_kernels.py" for k in range(3)]
    for path in paths:
        path.write_text("")

    def cut_short(paths, tasks, done, **options):
        done(2, SimpleNamespace(to_dict=lambda: {"status": "pass"}))
        done(0, SimpleNamespace(to_dict=lambda: {"status": "slower"}))
        raise KeyboardInterrupt

    monkeypatch.setattr(fusionforge.bench, "bench_files", cut_short)
    assert main(["bench", "--json", *map(str, paths)]) == 130
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"file": str(paths[0]), "status": "slower"}, {"file": str(paths[2]), "status": "pass"}]


@pytest.mark.parametrize("options", [["--difficulty", "easy"], ["--dtype", "bfloat16"],
                                     ["--difficulty", "hard", "--dtype", "float16"], ["--ops", "relu,softmax"], []])
def test_every_printed_task_says_the_command_that_prints_it_again(options, capsys):
    assert main(["task", "--seed", "235988", *options]) == 0
    first = capsys.readouterr().out
    command = next(line for line in first.splitlines() if line.startswith("Print it again: "))
    argv = shlex.split(command.removeprefix("Print it again: "))
    assert argv[:2] == ["fusionforge", "task"] and argv[2:] == ["--seed", "235988", *options]
    assert main(argv[1:]) == 0
    assert capsys.readouterr().out == first


def test_current_shows_the_handed_out_task_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "11", "--difficulty", "medium", "--dtype", "float16"]) == 0
    handed = capsys.readouterr()
    assert "print it again: fusionforge task --seed 11 --difficulty medium --dtype float16" in handed.err
    assert main(["task", "--current"]) == 0
    assert capsys.readouterr().out.strip() == handed.out.strip()
    assert main(["task", "--current", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == TaskGenerator().generate(11, "medium", "float16").to_dict()
    assert main(["task", "--current", "--seed", "3"]) == 2
    assert "takes no --seed" in capsys.readouterr().err


def test_current_without_a_handout_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["task", "--current"]) == 2
    assert "generate_fusion_task.py" in capsys.readouterr().err


@pytest.mark.parametrize("seed, difficulty, dtype", [(1, "easy", "float32"), (2, "medium", "float16"),
                                                     (3, "hard", "bfloat16"), (4, "hard", "float32")])
def test_skeleton_is_the_task_file_to_fill_in(seed, difficulty, dtype, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "001_fused_kernels.py").write_text("taken")
    assert cli.task_main(["--seed", str(seed), "--difficulty", difficulty, "--dtype", dtype, "--skeleton"]) == 0
    assert "wrote 002_fused_kernels.py" in capsys.readouterr().err
    kf = parse(tmp_path / "002_fused_kernels.py")
    task = TaskGenerator().generate(seed, difficulty, dtype)
    assert kf.ok, kf.problems
    assert FusionTask.from_dict(kf.task).to_dict() == task.to_dict()  # a Python literal, never JSON's words
    assert kf.kernels == ["fused_kernel_triton"] and "get_inputs" in kf.functions
    assert "raise NotImplementedError" in kf.text and "ATTEMPT" in kf.text


def test_check_dry_runs_the_skeleton_against_the_handed_out_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.task_main(["--seed", "5", "--difficulty", "easy", "--skeleton"]) == 0
    task_id = TaskGenerator().generate(5, "easy").id
    capsys.readouterr()
    assert main(["check", "001_fused_kernels.py"]) == 1
    out = capsys.readouterr().out
    assert f"against task {task_id}" in out and "NotImplementedError" in out and "ATTEMPT" not in out
    assert f"`fusionforge attempt 001_fused_kernels.py` judges it as attempt 1 at task {task_id}" in out
    assert not (tmp_path / "runs").exists()  # nothing was counted


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: (p.mkdir(), (p / "001_fused_kernels.py").touch())])
def test_check_of_a_folder_explains(make, tmp_path, capsys):
    folder = tmp_path / "data"
    make(folder)
    assert main(["check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a kernel file" in err and "bench" in err and err.count("\n") == 1


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    """`generate_fusion_task.py --json --count N | head -1`: no BrokenPipeError traceback."""
    script = (f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'generate_fusion_task.py'))} --seed 0 "
              f"--count 40 --json --state {shlex.quote(str(tmp_path / 'state'))} | head -1; "
              "exit ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout == "[\n"
    assert result.returncode == 0 and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_make_setup_shows_its_progress():
    """`make run` on a fresh machine installs for minutes: pip shows what it downloads, with step lines."""
    result = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent/venv"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    torch_line = next(line for line in result.stdout.splitlines() if "torch==" in line and "pip install" in line)
    assert " -q" not in torch_line and "setup 2/3" in result.stdout


def test_a_bad_chain_leaves_no_out_file(tmp_path, capsys):
    out = tmp_path / "task.json"
    assert main(["task", "--ops", "gleu", "--out", str(out)]) == 2
    assert not out.exists()
