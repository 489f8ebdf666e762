"""The checker against known-good and known-bad kernel files (tests/fixtures/expected.json)."""

import json
from pathlib import Path

import pytest

from fusionforge.cli import main
from fusionforge.tasks import TaskGenerator
from fusionforge.verify import check_file
from fusionforge.verify.verdict import render_check, render_failure

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
GOOD = FIXTURES / "good" / "pointwise_bias_gelu_fp16.py"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_verdict(name):
    expected = EXPECTED[name]
    timeout = 20 if expected.get("category") == "timeout" else 240
    verdict = check_file(FIXTURES / name, timeout=timeout)
    got = verdict.to_dict()
    if expected["status"] == "pass":
        assert verdict.passed, render_check(verdict, fancy=False)
        assert verdict.kernels and all(c["passed"] for c in got["checks"])
        assert len(set(verdict.kernels)) == len(verdict.kernels), verdict.kernels  # each kernel named once
        return
    assert not verdict.passed, f"{name} ({expected['defect']}) passed the check"
    failure = got["failure"]
    assert failure["category"] == expected["category"], render_check(verdict, fancy=False)
    if expected.get("implementation"):
        assert failure["implementation"] == expected["implementation"], render_check(verdict, fancy=False)
    assert failure["message"] and failure["root_cause"] and failure["planned_fix"]


def test_fixture_inventory_covers_the_issue():
    good = [n for n, e in EXPECTED.items() if e["status"] == "pass"]
    bad = [e["category"] for e in EXPECTED.values() if e["status"] == "fail"]
    assert len(good) >= 8 and len(bad) >= 30
    assert {"format", "syntax", "import", "compile", "runtime", "timeout", "crash", "shape", "dtype", "mismatch",
            "nan", "cheat", "mutation"} <= set(bad)
    assert all((FIXTURES / n).is_file() for n in EXPECTED)


def test_file_task_must_be_the_handed_out_task():
    other = TaskGenerator().generate(2, dtype="float16", ops="add:col,relu")
    verdict = check_file(GOOD, task=other)
    assert verdict.failure.category == "format" and "not the task that was handed out" in verdict.failure.message


def test_failure_report_has_the_seed_layout_in_both_forms():
    verdict = check_file(GOOD, task=TaskGenerator().generate(2, dtype="float16", ops="add:col,relu"))
    fancy = render_failure(verdict.failure, attempt=2, fancy=True)
    plain = render_failure(verdict.failure, attempt=2, fancy=False)
    for text in (fancy, plain):
        assert "FAILURE ANALYSIS - ATTEMPT 2" in text and "- Implementation: Both" in text
        assert "- Stage: format" in text and "PLANNED FIX:" in text and "ROOT CAUSE ANALYSIS:" in text
    assert "❌ FAILURE:" in fancy and "🔍 FAILURE POINT:" in fancy
    assert plain.isascii()


def test_check_cli_exit_codes(capsys, tmp_path):
    assert main(["check", str(GOOD), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == "pass" and verdict["failure"] is None and len(verdict["checks"]) == 6
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "001_fused_kernels.py"
    bad.write_text(GOOD.read_text().replace("# </TRITON>\n", ""))
    assert main(["check", str(bad)]) == 1
    assert "missing marker '# </TRITON>'" in capsys.readouterr().out


def test_no_color_gives_ascii(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NO_COLOR", "1")
    bad = tmp_path / "002_fused_kernels.py"
    bad.write_text(GOOD.read_text().replace("tl.erf(h * 0.7071067811865476)", "tl.erf(h)"))
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.isascii() and "[FAIL] FAILURE: mismatch" in out


def test_wrapper_must_return_a_plain_tensor(tmp_path):
    path = tmp_path / "004_fused_kernels.py"
    path.write_text(GOOD.read_text().replace("    return out\n# </TRITON>", "    return (out,)\n# </TRITON>"))
    failure = check_file(path).failure
    assert failure.category == "dtype" and "not a torch.Tensor" in failure.message
    assert failure.line is not None
