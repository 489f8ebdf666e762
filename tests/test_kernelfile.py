"""Parsing and validating the seed format."""

from pathlib import Path

import pytest

from fusionforge import kernelfile

GOOD = Path(__file__).parent / "fixtures" / "good" / "pointwise_bias_gelu_fp16.py"


def _variant(tmp_path, old, new):
    path = tmp_path / "001_fused_kernels.py"
    text = GOOD.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return kernelfile.parse(path)


def test_good_file_parses():
    kf = kernelfile.parse(GOOD)
    assert kf.ok, kf.problems
    assert kf.description.startswith("add a per-column vector")
    assert set(kf.sections) == {"PYTHON", "TRITON", "TEST"}
    assert kf.kernels == ["fused_kernel_triton"] and kf.task["ops"][1]["op"] == "gelu"
    line = kf.functions["fused_kernel_triton"].lineno
    assert kf.section_of(line) == "TRITON" and kf.function_at(line + 2) == "fused_kernel_triton"


@pytest.mark.parametrize("old, new, message", [
    ("# </TRITON>\n", "", "missing marker '# </TRITON>'"),
    ('"""Fused Kernels:', '"""Kernels:', "first line must be the docstring"),
    ("def fused_kernel_triton_wrapper(x, bias0):", "def fused_kernel_triton_wrapper(x, b):", "same arguments"),
    ("def test_performance(", "def perf(", "missing function test_performance()"),
    ("def fused_kernel_triton(", "def my_kernel(", "fused_kernel_triton is missing"),
    ("if __name__ == '__main__':", "if True:", "missing main block"),
    ("# <TEST>\n", "# <TEST>\n# <TEST>\n", "appears 2 times"),
])
def test_format_problems_are_named(tmp_path, old, new, message):
    kf = _variant(tmp_path, old, new)
    assert not kf.ok
    assert any(message in p.message for p in kf.problems), kf.problems


def test_syntax_error_has_its_line(tmp_path):
    kf = _variant(tmp_path, "    mask = offsets < n_elements\n", "    mask = offsets < < n_elements\n")
    problem = kf.problems[0]
    assert problem.category == "syntax" and kf.section_of(problem.line) == "TRITON"


def test_no_inputs_and_no_task(tmp_path):
    text = GOOD.read_text()
    start, end = text.index("TASK = {"), text.index("def fused_kernel_pytorch")
    text = text[:start] + text[end:]
    start, end = text.index("def get_inputs"), text.index("def test_performance")
    path = tmp_path / "003_fused_kernels.py"
    path.write_text(text[:start] + text[end:])
    assert any("neither get_inputs() nor TASK" in p.message for p in kernelfile.parse(path).problems)


def test_render_is_parseable_and_numbered_names():
    text = kernelfile.render("relu (float32)", "def fused_kernel_pytorch(x):\n    return torch.relu(x)\n",
                             "@triton.jit\ndef fused_kernel_triton(x_ptr):\n    pass\n\n\n"
                             "def fused_kernel_triton_wrapper(x):\n    return x\n",
                             "def get_inputs():\n    return [torch.randn(4, 4)]\n", attempt=2)
    assert text.startswith('"""Fused Kernels: relu (float32)"""') and "ATTEMPT = 2" in text
    assert kernelfile.attempt_number("007_fused_kernels.py") == 7
    assert kernelfile.attempt_number("fused.py") is None


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("\n   \n", "the file is empty"),
    ("print('hello')\n", "not a kernel file in the seed format"),
    ("import torch\n\ndef f(x):\n    return x\n", "not a kernel file in the seed format"),
])
def test_empty_or_foreign_file_is_one_clear_problem(tmp_path, text, message):
    path = tmp_path / "001_fused_kernels.py"
    path.write_text(text)
    [problem] = kernelfile.parse(path).problems
    assert message in problem.message


@pytest.mark.parametrize("json_word, python_word", [("true", "True"), ("false", "False"), ("null", "None")])
def test_task_in_json_says_so(tmp_path, json_word, python_word):
    """TASK copied from `--json` output: JSON's literals are not Python's, and the message says what to write."""
    kf = _variant(tmp_path, "TASK = {", f"TASK = {{'extra': {json_word}, ")
    [problem] = kf.problems
    assert f"TASK is JSON ({json_word}), not Python: write {python_word}" in problem.message
    assert problem.line == kf.text.splitlines().index(next(ln for ln in kf.text.splitlines()
                                                           if ln.startswith("TASK = "))) + 1


def test_a_generated_file_run_on_its_own_says_what_to_do_without_a_gpu_and_exits_non_zero(tmp_path):
    import os
    import subprocess
    import sys

    from fusionforge.implement import generate
    from fusionforge.tasks import TaskGenerator

    path = tmp_path / "001_fused_kernels.py"
    # a file without autotuning: under the bare interpreter, Triton's autotuner has no GPU to time configs on
    task = TaskGenerator().generate(5)
    source = generate(task)
    assert "@triton.autotune" not in source
    path.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and f"fusionforge check {path}" in done.stderr
    interpreted = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                 env=env | {"TRITON_INTERPRET": "1"}, timeout=300)
    assert interpreted.returncode == 0 and "SUCCESS: Both implementations" in interpreted.stdout
    wrong = tmp_path / "002_fused_kernels.py"  # a wrapper returning zeros: the report fails it, and so does the exit
    wrong.write_text(source.replace("def fused_kernel_triton_wrapper(", "def fused_kernel_triton_wrapper(*args):\n"
                                    "    return args[0] * 0\n\n\ndef _unused_wrapper("))
    failed = subprocess.run([sys.executable, str(wrong)], capture_output=True, text=True,
                            env=env | {"TRITON_INTERPRET": "1"}, timeout=300)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
