"""`fusionforge report`: the page's numbers, its plots and kernel panels, and the page in headless Chromium."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import dataset_of, generated_source

from fusionforge import cli
from fusionforge.evaluation import metrics
from fusionforge.report import render

EVAL = {"suite": "small-v1", "suite_hash": "ab" * 32, "implementer": "llm", "model": "m", "samples_per_task": 2,
        "attempts": 1, "metrics": metrics([
            {"task_id": "a", "correct": True, "timed": True, "speedup": 1.5, "speedup_vs_compile": 1.1},
            {"task_id": "a", "correct": False, "timed": True, "speedup": None, "speedup_vs_compile": None}])}


def attempt_log(runs, task: str, attempt: int, category: str | None) -> None:
    folder = runs / "20261204-000000-abcd" / task
    folder.mkdir(parents=True, exist_ok=True)
    failure = {"category": category, "message": "m"} if category else None
    (folder / f"attempt_{attempt}.json").write_text(json.dumps({"attempt": attempt, "failure": failure}))


@pytest.fixture
def kept(tmp_path):
    """Three kept kernels (two timed), attempt logs with two failed attempts, and a task that failed."""
    sources = [generated_source(seed) for seed in (1, 2, 3)]
    sources[0] = sources[0].replace("# <TRITON>", "# <TRITON>\n# a < b && c > d")  # must be escaped
    dataset = dataset_of(tmp_path, sources, [True, True, False])
    runs = tmp_path / "runs"
    attempt_log(runs, "001-a", 1, "slower")
    attempt_log(runs, "001-a", 2, None)
    attempt_log(runs, "002-b", 1, "numerical")
    for name, outcome in (("001-a", "kept"), ("002-b", "failed")):
        (runs / "20261204-000000-abcd" / name / "outcome.json").write_text(
            json.dumps({"outcome": outcome, "attempts": 1}))
    return dataset, runs


def test_the_page_has_the_figures_the_plots_and_a_panel_per_kernel(kept):
    dataset, runs = kept
    page = render(dataset, runs)
    assert page.count('<svg class="plot"') == 5
    assert "<b>3</b>kernels" in page and "<b>2</b>timed on a GPU" in page and "<b>3.00x</b>geomean over eager" in page
    assert "<b>1 of 2</b>tasks landed" in page
    assert "<td>pointwise / float16</td><td>3</td><td>2</td><td>3.00x</td><td>2.00x</td><td>2 of 2</td>" in page
    assert "<title>slower: 1</title>" in page and "<title>numerical: 1</title>" in page
    assert page.count("<circle") == 2 + 4  # two timed kernels on the roofline, four legend marks
    assert page.count("<details>") == 3 and "verified, not timed" in page
    assert "# a &lt; b &amp;&amp; c &gt; d" in page and "# a < b" not in page


def test_an_evals_results_add_its_metrics_and_fast_p_curve(kept, tmp_path, capsys):
    dataset, runs = kept
    results = tmp_path / "results.json"
    results.write_text(json.dumps(EVAL))
    out = tmp_path / "report.html"
    assert cli.main(["report", "--data", str(dataset.root), "--runs", str(runs), "-o", str(out),
                     "--eval", str(results)]) == 0
    page = out.read_text()
    assert page.count('<svg class="plot"') == 6 and page.count("<polyline") == 2
    assert "1 of 2 samples correct; pass@1 50.0%" in page and "<title>eager p=1: 50.0%</title>" in page
    results.write_text("{}")
    assert cli.main(["report", "--data", str(dataset.root), "--eval", str(results), "-o", str(out)]) == 2
    assert "not an eval's results.json" in capsys.readouterr().err


def test_kernels_limits_the_panels_not_the_figures(kept, tmp_path, capsys):
    dataset, runs = kept
    out = tmp_path / "report.html"
    assert cli.main(["report", "--data", str(dataset.root), "--runs", str(runs), "-o", str(out),
                     "--kernels", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "kernels": 3}
    page = out.read_text()
    assert page.count("<details>") == 1 and "1 of 3 shown (the first 1" in page and "<b>3</b>kernels" in page


def test_report_without_a_dataset_or_to_an_unwritable_place_is_a_usage_error(kept, tmp_path, capsys):
    assert cli.main(["report", "--data", str(tmp_path / "nothing"), "-o", str(tmp_path / "r.html")]) == 2
    assert "holds no dataset" in capsys.readouterr().err
    dataset, runs = kept
    assert cli.main(["report", "--data", str(dataset.root), "-o", str(tmp_path / "no" / "dir" / "r.html")]) == 2
    assert "cannot write" in capsys.readouterr().err


def chromium() -> str:
    """Headless Chromium, installed from Debian's packages where absent and this test may (root, apt)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                 "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        if subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], **quiet)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("no Chromium, and it cannot be installed here (needs root and apt-get)")
    return found


def test_the_page_loads_in_headless_chromium_without_errors_and_shows_its_plots(kept, tmp_path):
    dataset, runs = kept
    page = tmp_path / "report.html"
    page.write_text(render(dataset, runs, evaluation=EVAL))
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--window-size=1280,1600"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<svg class="plot"') == 6 and "fusionforge report" in dom.stdout
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr
    shot = tmp_path / "report.png"
    done = subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page of that size compresses to a few kB


def test_a_large_datasets_roofline_is_sampled(kept, monkeypatch):
    from fusionforge import report

    dataset, runs = kept
    monkeypatch.setattr(report, "MAX_POINTS", 1)
    page = render(dataset, runs)
    assert page.count("<circle") == 1 + 4 and "one kernel in 2 of 2" in page
