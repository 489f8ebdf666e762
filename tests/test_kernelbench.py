"""KernelBench problems as tasks: the task made from a problem file, its float64 reference on the weights a call
is given, the checker on a known-good and a known-bad kernel file, and `fusionforge task --from-kernelbench`."""

import json
from pathlib import Path

import pytest
import torch

from fusionforge.cli import main
from fusionforge.kernelbench import KernelBenchTask, parse_dims, problem_constants
from fusionforge.kernelfile import parse
from fusionforge.tasks import FusionTask, TaskError
from fusionforge.verify import check_file

PROBLEMS = Path(__file__).parent / "fixtures" / "kernelbench"
LINEAR = PROBLEMS / "linear_relu.py"
BATCHNORM = PROBLEMS / "batchnorm_relu.py"
SMALL_LINEAR = {"batch_size": 3, "in_features": 37, "out_features": 50}


def test_a_problem_becomes_a_task_whose_arguments_are_inputs_then_weights():
    task = KernelBenchTask.from_problem(LINEAR, "float16", 0, SMALL_LINEAR)
    assert task.arg_names == ["x", "linear_weight", "linear_bias"]
    assert task.shapes == {"test": [SMALL_LINEAR],
                           "bench": [{"batch_size": 1024, "in_features": 2048, "out_features": 4096}]}
    assert task.argument_shapes(SMALL_LINEAR) == [(3, 37), (50, 37), (50,)]
    assert task.cost(task.shapes["bench"][0])["flops"] == 2 * 1024 * 2048 * 4096
    again = FusionTask.from_dict(json.loads(task.to_json()))
    assert isinstance(again, KernelBenchTask) and again.to_dict() == task.to_dict()
    assert KernelBenchTask.from_problem(LINEAR, "float16", 0, SMALL_LINEAR).id == task.id
    assert KernelBenchTask.from_problem(LINEAR, "float32", 0, SMALL_LINEAR).id != task.id


def test_the_reference_is_the_module_in_float64_on_the_given_weights():
    task = KernelBenchTask.from_problem(LINEAR, "float16", 0, SMALL_LINEAR)
    x, weight, bias = args = task.make_inputs(SMALL_LINEAR, seed=7)
    assert all(a.dtype == torch.float16 for a in args)
    expected = torch.relu(x.double() @ weight.double().T + bias.double())
    assert torch.equal(task.reference(args), expected)
    assert task.function(*args).dtype == torch.float16
    assert torch.allclose(task.function(*args).double(), expected, atol=1e-2)
    other = task.make_inputs(SMALL_LINEAR, seed=8)
    assert not torch.equal(other[1], weight)  # every input set draws its own weights
    assert all(torch.equal(a, b) for a, b in zip(task.make_inputs(SMALL_LINEAR, seed=7), args))


def test_buffers_are_arguments_and_the_module_runs_in_training_mode():
    task = KernelBenchTask.from_problem(BATCHNORM, "float32", 0, {"batch_size": 7, "num_features": 33})
    assert task.arg_names == ["x", "bn_weight", "bn_bias", "bn_running_mean", "bn_running_var",
                              "bn_num_batches_tracked"]
    args = task.make_inputs(task.shapes["test"][0], seed=1)
    x = args[0].double()
    normalized = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    expected = torch.relu(normalized * args[1].double() + args[2].double())  # the batch's statistics
    assert torch.allclose(task.reference(args), expected, atol=1e-12)
    assert args[-1].dtype == torch.int64


def test_test_dims_are_refused_when_the_forward_reads_the_sizes_it_was_built_with():
    with pytest.raises(TaskError, match="drop --test-dims"):
        KernelBenchTask.from_problem(PROBLEMS / "sized_view.py", "float32", 0, {"group": 4})
    with pytest.raises(TaskError, match="give arguments of the same shapes"):  # one module would serve both
        KernelBenchTask.from_problem(PROBLEMS / "sized_view.py", "float32", 0, {"group": 8, "groups": 64})
    task = KernelBenchTask.from_problem(PROBLEMS / "sized_view.py", "float32", 0, {"groups": 3, "batch_size": 5})
    assert task.argument_shapes(task.shapes["test"][0]) == [(5, 48)]


def test_parse_dims_names_only_the_problems_constants():
    constants = problem_constants(LINEAR.read_text())
    assert constants == {"batch_size": 1024, "in_features": 2048, "out_features": 4096}
    assert parse_dims("batch_size=3, in_features=9", constants) == {"batch_size": 3, "in_features": 9}
    for text, message in (("batch=3", "not one of the problem's integer constants"), ("batch_size", "NAME=INTEGER"),
                          ("batch_size=0", "at least 1"), ("batch_size=x", "NAME=INTEGER")):
        with pytest.raises(TaskError, match=message):
            parse_dims(text, constants)


def _fixture_task() -> KernelBenchTask:
    """The task the fixtures' kernel files were written for."""
    return KernelBenchTask.from_problem(PROBLEMS / "scale_bias_gelu.py", "float16", 0,
                                        {"batch_size": 5, "channels": 131})


@pytest.mark.parametrize("name, passed", [("scale_bias_gelu_fp16.py", True), ("bad_ignores_weight_fp16.py", False)])
def test_the_checker_judges_kernels_against_the_problem(name, passed):
    verdict = check_file(PROBLEMS / name, task=_fixture_task(), device="cpu")
    assert verdict.passed is passed, verdict.failure
    if not passed:
        assert verdict.failure.category == "mismatch"


@pytest.mark.parametrize("name, passed", [("batchnorm_relu_fp32.py", True),
                                          ("bad_batchnorm_ignores_scale_shift_fp32.py", False)])
def test_a_norm_kernel_must_use_the_scale_and_shift_it_is_given(name, passed):
    """The module initialises them to 1 and 0; drawn anew per input set, a kernel that drops them fails."""
    task = KernelBenchTask.from_problem(BATCHNORM, "float32", 0, {"batch_size": 7, "num_features": 37})
    verdict = check_file(PROBLEMS / name, task=task, device="cpu")
    assert verdict.passed is passed, verdict.failure
    if not passed:
        assert verdict.failure.category == "mismatch"


def test_a_files_own_kernelbench_task_is_never_run(tmp_path):
    """Its source would run in the checker's process: a TASK whose 'source' switches the checker off."""
    good = (PROBLEMS / "scale_bias_gelu_fp16.py").read_text()
    switch_off = "'sys.modules[\"fusionforge.verify.checker\"]._Run.evaluate = lambda self, result: None',\n"
    patched = good.replace("        'import torch',\n", "        'import torch',\n        'import sys',\n        "
                           + switch_off, 1)
    assert patched != good
    path = tmp_path / "bad_task_source_patches_checker.py"
    path.write_text(patched)
    verdict = check_file(path, device="cpu")
    assert not verdict.passed and "not taken from the file's own TASK" in verdict.failure.message
    with pytest.raises(TaskError, match="not the one its signature names"):
        FusionTask.from_dict(parse(path).task)


def test_weights_a_module_sets_to_one_value_are_drawn_anew():
    """A norm's scale 1, shift 0 and running statistics vary per input set, so a kernel ignoring them fails."""
    task = KernelBenchTask.from_problem(BATCHNORM, "float32", 0, {"batch_size": 7, "num_features": 33})
    _, scale, shift, mean, var, count = task.make_inputs(task.shapes["test"][0], seed=4)
    assert len(set(scale.tolist())) > 1 and len(set(shift.tolist())) > 1 and len(set(mean.tolist())) > 1
    assert bool((var > 0).all()) and bool((scale > 0).all()) and count.dtype == torch.int64
    assert not torch.equal(scale, task.make_inputs(task.shapes["test"][0], seed=5)[1])


def test_pytorch_at_the_dtype_always_computes_with_the_weights_it_is_given():
    """New weights each call, the old ones freed (their ids free for the new ones): never an old module's answer."""
    task = KernelBenchTask.from_problem(PROBLEMS / "scale_bias_gelu.py", "float32", 0, {"batch_size": 5, "channels": 9})
    for seed in range(60):
        args = task.make_inputs(task.shapes["test"][0], seed)
        assert torch.allclose(task.function(*args).double(), task.reference(args), rtol=1e-5, atol=1e-6)
        del args


def test_the_handed_out_task_must_be_the_files(tmp_path):
    other = KernelBenchTask.from_problem(PROBLEMS / "scale_bias_gelu.py", "float16", 0,
                                         {"batch_size": 5, "channels": 7})
    verdict = check_file(PROBLEMS / "scale_bias_gelu_fp16.py", task=other, device="cpu")
    assert not verdict.passed and "shapes differs" in verdict.failure.message


def test_task_from_kernelbench_prints_writes_and_makes_the_skeleton(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "task.json"
    assert main(["task", "--from-kernelbench", str(LINEAR), "--dtype", "bfloat16",
                 "--test-dims", "batch_size=3,in_features=37,out_features=50", "--out", str(out), "--skeleton"]) == 0
    printed = capsys.readouterr().out
    assert "linear_weight  [50, 37] -> [4096, 2048]" in printed and "17.2 GFLOP" in printed
    spec = json.loads(out.read_text())
    assert spec["kind"] == "kernelbench" and spec["dtype"] == "bfloat16"
    kf = parse(tmp_path / "001_fused_kernels.py")
    assert not kf.problems and kf.task["id"] == spec["id"] and "get_problem_inputs" in kf.functions
    namespace: dict = {}
    exec(compile((tmp_path / "001_fused_kernels.py").read_text(), "skeleton", "exec"), namespace)
    args = namespace["get_inputs"]()  # on the CPU: the test sizes, at the task's dtype
    assert [tuple(a.shape) for a in args] == [(3, 37), (50, 37), (50,)] and args[0].dtype == torch.bfloat16
    task = FusionTask.from_dict(spec)
    assert torch.allclose(namespace["fused_kernel_pytorch"](*args).double(), task.reference(args), atol=0.1)


@pytest.mark.parametrize("argv, message", [
    (["--from-kernelbench", "missing.py"], "no such problem file"),
    (["--from-kernelbench", str(LINEAR), "--ops", "gelu"], "takes no --ops"),
    (["--from-kernelbench", str(LINEAR), "--test-dims", "rows=3"], "not one of the problem's integer constants"),
    (["--from-kernelbench", "not_a_problem.py"], "not a KernelBench problem"),
    (["--test-dims", "batch_size=3"], "--test-dims goes with --from-kernelbench"),
])
def test_task_from_kernelbench_refuses_bad_input_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_a_problem.py").write_text("import torch\n\nbatch_size = 4\n")
    assert main(["task", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _small_problem(folder: Path, name: str, problem: Path, sizes: dict[str, int]) -> Path:
    """``problem`` with its integer constants set to ``sizes``, as ``folder/name.py`` (sizes the CPU checks fast)."""
    text = problem.read_text()
    for constant, value in sizes.items():
        text = text.replace(f"\n{constant} = {problem_constants(text)[constant]}\n", f"\n{constant} = {value}\n")
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def test_an_eval_over_a_kernelbench_folder(tmp_path, capsys):
    """level1/: two problems; the agent's folder answers the first by its problem name, the second not at all."""
    from fusionforge.kernelbench import skeleton

    level = tmp_path / "level1"
    level.mkdir()
    first = _small_problem(level, "1_scale_bias_gelu", PROBLEMS / "scale_bias_gelu.py",
                           {"batch_size": 5, "channels": 131})
    _small_problem(level, "2_linear_relu", LINEAR, SMALL_LINEAR)
    good = (PROBLEMS / "scale_bias_gelu_fp16.py").read_text()
    triton = good[good.index("# <TRITON>\n") + len("# <TRITON>\n"):good.index("# </TRITON>")]
    files = tmp_path / "agent"
    files.mkdir()
    (files / first.name).write_text(skeleton(KernelBenchTask.from_problem(first, "float16"), triton))
    argv = ["eval", "--kernelbench", str(level), "--dtype", "float16", "--files", str(files),
            "--out", str(tmp_path / "evals"), "--device", "cpu", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "kernelbench:level1" and len(result["suite_hash"]) == 64
    m = result["metrics"]
    assert (m["samples"], m["correct"], m["correctness"], m["pass_at_k"]) == (2, 1, 0.5, {"1": 0.5})
    assert m["fast_p"]["eager"]["0.0"] == 0.5 and m["fast_p"]["eager"]["1.0"] is None  # the CPU times nothing
    assert list(result["by"]["difficulty"]) == ["level1"] and list(result["by"]["family"]) == ["kernelbench"]
    lines = (tmp_path / "evals" / result["run"] / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["correct"], r["failure"]) for r in rows] == [(True, None), (False, "format")]
    assert main(["eval", "--resume", "--out", str(tmp_path / "evals"), "--json"]) == 0  # the tasks travel with it
    assert json.loads(capsys.readouterr().out)["metrics"] == m
    for bad, message in ((["--kernelbench", str(tmp_path / "nowhere")], "not a folder"),
                         (["--kernelbench", str(files.parent / "evals")], "no problem files"),
                         (["--kernelbench", str(level), "--suite", "small-v1"], "takes the place of --suite"),
                         (["--dtype", "float16"], "--dtype goes with --kernelbench")):
        assert main(["eval", *bad, "--device", "cpu"]) == 2
        assert message in capsys.readouterr().err


def test_the_llm_is_shown_the_problem_its_arguments_and_the_file_to_complete(tmp_path):
    from fusionforge.implement.llm import task_prompt

    task = KernelBenchTask.from_problem(LINEAR, "float16", 0, SMALL_LINEAR)
    prompt = task_prompt(task, 2)
    assert "KernelBench problem linear_relu as task " + task.id in prompt and "attempt 2" in prompt
    assert "class Model(nn.Module):" in prompt and "each floating tensor in float16" in prompt
    assert "- linear_weight: [50, 37] at the test sizes, [4096, 2048] at the bench sizes" in prompt
    file = prompt[prompt.rindex("```python\n") + len("```python\n"):prompt.rindex("```")]
    (tmp_path / "001_fused_kernels.py").write_text(file)
    kf = parse(tmp_path / "001_fused_kernels.py")
    assert kf.task == {k: v for k, v in task.to_dict().items() if k != "cost"}
    assert "def fused_kernel_triton_wrapper(x, linear_weight, linear_bias):" in file and "ATTEMPT = 2" in file
