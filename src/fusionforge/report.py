"""`fusionforge report`: data/ and runs/ as one self-contained HTML page (inline SVG and CSS, opens offline).

Sections: the headline numbers; per family and dtype and per difficulty; the speedups over eager and over
torch.compile (histograms on a log2 axis); each kernel's fraction of the roofline floor against its arithmetic
intensity (the roofline plot); attempts used and the categories of failed attempts (from the attempt logs);
an eval's metrics and fast_p curve when its ``results.json`` is given; then a panel per kernel with its
timings and source (the first ``kernels`` records; a large dataset would make a page no browser opens).
"""

from __future__ import annotations

import datetime
import html
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from fusionforge.dataset import Dataset, geomean
from fusionforge.tasks import DIFFICULTIES

FAMILY_COLORS = {"matmul": "#4c78a8", "reduction": "#f58518", "normalization": "#54a24b", "pointwise": "#e45756"}
OTHER_COLOR = "#79706e"
WIDTH, HEIGHT, MARGIN = 560, 260, 44
MAX_POINTS = 2000  # on the roofline plot: a larger dataset is sampled evenly

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 24px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.muted { color: #666; } .cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card b { display: block; font-size: 24px; } .plots { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; } figcaption { color: #555; font-size: 13px; max-width: 560px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
details { border: 1px solid #e2e2e2; border-radius: 6px; margin: 6px 0; padding: 6px 10px; }
summary { cursor: pointer; } pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""


def _x(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}x" if value is not None else "-"


def _axes(x_label: str, y_label: str) -> list[str]:
    bottom, right = HEIGHT - MARGIN, WIDTH - 12
    return [f'<line x1="{MARGIN}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
            f'<line x1="{MARGIN}" y1="12" x2="{MARGIN}" y2="{bottom}" stroke="#888"/>',
            f'<text x="{(MARGIN + right) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
            f'<text transform="translate(12,{(12 + bottom) / 2}) rotate(-90)" text-anchor="middle">'
            f'{html.escape(y_label)}</text>']


def _svg(parts: list[str], label: str) -> str:
    return (f'<svg class="plot" role="img" aria-label="{html.escape(label)}" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def bars(counts: dict[str, int], x_label: str, y_label: str, color: str = "#4c78a8") -> str:
    """A bar chart of ``counts`` (label -> count), in the order given."""
    parts = _axes(x_label, y_label)
    top = max(counts.values(), default=0) or 1
    span = min((WIDTH - 12 - MARGIN) / max(len(counts), 1), 80)
    for k, (label, count) in enumerate(counts.items()):
        h = (HEIGHT - MARGIN - 20) * count / top
        x = MARGIN + k * span + span * 0.1
        y = HEIGHT - MARGIN - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{span * 0.8:.1f}" height="{h:.1f}" fill="{color}">'
                     f'<title>{html.escape(label)}: {count}</title></rect>')
        parts.append(f'<text x="{x + span * 0.4:.1f}" y="{y - 3:.1f}" text-anchor="middle">{count}</text>')
        parts.append(f'<text x="{x + span * 0.4:.1f}" y="{HEIGHT - MARGIN + 13}" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    return _svg(parts, f"{y_label} by {x_label}")


def speedup_histogram(speedups: list[float], against: str) -> str:
    """Speedups in log2 bins of a quarter octave, 1x marked."""
    if not speedups:
        return "<p class='muted'>No timed kernels.</p>"
    low = math.floor(math.log2(min(speedups)) * 4) / 4
    high = math.ceil(math.log2(max(speedups)) * 4 + 1e-9) / 4
    edges = [low + k / 4 for k in range(int(round((high - low) * 4)) + 1)] or [low, low + 0.25]
    if len(edges) < 2:
        edges.append(edges[0] + 0.25)
    counts = Counter(min(int((math.log2(s) - low) * 4), len(edges) - 2) for s in speedups)
    labels = {f"{2 ** edges[k]:.2g}": counts.get(k, 0) for k in range(len(edges) - 1)}
    return bars(labels, f"speedup over {against} (each bin from)", "kernels",
                "#54a24b" if against == "eager" else "#4c78a8")


def roofline_plot(points: list[tuple[float, float, str, str]]) -> str:
    """Each kernel's fraction of the roofline floor (y) against its arithmetic intensity, FLOP/byte (x, log10)."""
    parts = _axes("arithmetic intensity (FLOP per byte, log scale)", "fraction of the roofline floor")
    if not points:
        return _svg(parts, "roofline")
    lows = [math.log10(max(p[0], 1e-3)) for p in points]
    x0, x1 = math.floor(min(lows)), math.ceil(max(lows) + 1e-9)
    x1 = x1 if x1 > x0 else x0 + 1
    y_top = max(1.0, max(p[1] for p in points)) * 1.05
    width, height = WIDTH - 12 - MARGIN, HEIGHT - MARGIN - 12

    def at(intensity: float, fraction: float) -> tuple[float, float]:
        return (MARGIN + (math.log10(max(intensity, 1e-3)) - x0) / (x1 - x0) * width,
                HEIGHT - MARGIN - fraction / y_top * height)

    for decade in range(x0, x1 + 1):
        x, _ = at(10 ** decade, 0)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 13}" text-anchor="middle">1e{decade}</text>')
    for tick in (0.25, 0.5, 0.75, 1.0):
        _, y = at(10 ** x0, tick)
        parts.append(f'<line x1="{MARGIN}" y1="{y:.1f}" x2="{WIDTH - 12}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{MARGIN - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for intensity, fraction, family, label in points:
        x, y = at(intensity, fraction)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{FAMILY_COLORS.get(family, OTHER_COLOR)}" '
                     f'fill-opacity="0.75"><title>{html.escape(label)}</title></circle>')
    for k, (family, color) in enumerate(FAMILY_COLORS.items()):
        parts.append(f'<circle cx="{MARGIN + 14 + k * 110}" cy="20" r="4" fill="{color}"/>'
                     f'<text x="{MARGIN + 22 + k * 110}" y="24">{family}</text>')
    return _svg(parts, "roofline")


def fast_p_plot(fast_p: dict[str, dict[str, float | None]]) -> str:
    """An eval's fast_p (y: share of samples correct and faster than p) against p (x), a line per baseline."""
    parts = _axes("p (speedup threshold)", "fast_p")
    series = {name: [(float(p), v) for p, v in row.items() if v is not None] for name, row in fast_p.items()}
    ps = sorted({p for points in series.values() for p, _ in points}) or [0.0, 1.0]
    width, height = WIDTH - 12 - MARGIN, HEIGHT - MARGIN - 24

    def at(p: float, value: float) -> tuple[float, float]:
        return (MARGIN + 10 + (p - ps[0]) / ((ps[-1] - ps[0]) or 1) * (width - 20),
                HEIGHT - MARGIN - value * height)

    for p in ps:
        x, _ = at(p, 0)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 13}" text-anchor="middle">{p:g}</text>')
    for tick in (0.25, 0.5, 0.75, 1.0):
        _, y = at(ps[0], tick)
        parts.append(f'<line x1="{MARGIN}" y1="{y:.1f}" x2="{WIDTH - 12}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{MARGIN - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for k, (name, points) in enumerate(series.items()):
        color = ("#54a24b", "#4c78a8")[k % 2]
        coords = [at(p, v) for p, v in points]
        if coords:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"><title>{html.escape(name)} p={p:g}: '
                  f'{v:.1%}</title></circle>' for (x, y), (p, v) in zip(coords, points)]
        parts.append(f'<rect x="{MARGIN + 10 + k * 140}" y="17" width="14" height="3" fill="{color}"/>'
                     f'<text x="{MARGIN + 28 + k * 140}" y="24">against {html.escape(name)}</text>')
    return _svg(parts, "fast_p")


def _eval_section(result: dict) -> list[str]:
    m = result["metrics"]
    passes = ", ".join(f"pass@{k} {v:.1%}" for k, v in m["pass_at_k"].items())
    return [
        "<h2>Eval</h2>",
        f"<p>Suite {html.escape(result['suite'])} (hash {result['suite_hash'][:12]}), "
        f"{html.escape(' '.join(str(v) for v in (result['implementer'], result.get('model')) if v))}, "
        f"{result['samples_per_task']} sample(s) per task, {result['attempts']} attempt(s) each: "
        f"{m['correct']} of {m['samples']} samples correct; {passes}.</p>",
        f"<figure>{fast_p_plot(m['fast_p'])}<figcaption>fast_p: the share of all samples that are correct and "
        "faster than the baseline by more than p.</figcaption></figure>",
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _group_rows(groups: dict[str, list[dict]], order: tuple[str, ...] = ()) -> list[list[str]]:
    rows = []
    for key, records in sorted(groups.items(), key=lambda item: (item[0] not in order,
                                                                 order.index(item[0]) if item[0] in order else 0,
                                                                 item[0])):
        timed = [r for r in records if r.get("timed")]
        rows.append([key, len(records), len(timed), _x(geomean([r.get("speedup") for r in timed])),
                     _x(geomean([r.get("speedup_vs_compile") for r in timed])),
                     f"{sum(1 for r in timed if r.get('faster_than_compile'))} of {len(timed)}"])
    return rows


def _failure_categories(runs_root: Path) -> Counter:
    categories: Counter = Counter()
    for path in sorted(runs_root.glob("*/*/attempt_*.json")) if runs_root.is_dir() else []:
        failure = json.loads(path.read_text()).get("failure")
        if failure:
            categories[failure.get("category") or "unknown"] += 1
    return categories


def _kernel_panel(dataset: Dataset, record: dict) -> str:
    timings = record.get("timings") or {}
    rows = [[name, *(f"{t[key]:.4f}" if t.get(key) is not None else "-" for key in ("median_ms", "p20_ms", "p80_ms")),
             t.get("calls", "-")] for name, t in timings.items()]
    fraction = (record.get("roofline") or {}).get("triton_fraction_of_floor")
    title = (f"{record.get('file')}: {record.get('description')} - "
             + (f"{_x(record.get('speedup'))} over eager, {_x(record.get('speedup_vs_compile'))} over torch.compile"
                if record.get("timed") else "verified, not timed"))
    source = dataset.source_of(record) or "(the kernel file is missing)"
    return (f"<details><summary>{html.escape(title)}</summary>"
            f"<p class='muted'>{html.escape(record['id'])} - {record.get('family')} / {record.get('dtype')} / "
            f"{(record.get('task') or {}).get('difficulty')} - attempt {record.get('attempts')} by "
            f"{html.escape(str(record.get('implementer')))}"
            + (f" - {fraction:.0%} of the roofline floor on {html.escape(str(record.get('device')))}" if fraction
               else "") + "</p>"
            + (_table(["contender", "median ms", "p20 ms", "p80 ms", "calls"], rows) if rows else "")
            + f"<pre><code>{html.escape(source)}</code></pre></details>")


def render(dataset: Dataset, runs_root: Path, kernels: int = 200, evaluation: dict | None = None) -> str:
    """The report page for ``dataset``, the attempt logs under ``runs_root`` and an eval's ``results.json``."""
    from fusionforge.pipeline import outcomes

    records = dataset.records()
    stats = dataset.stats(outcomes(runs_root))
    timed = [r for r in records if r.get("timed") and r.get("speedup")]
    by_family_dtype, by_difficulty = defaultdict(list), defaultdict(list)
    points = []
    for r in records:
        by_family_dtype[f"{r.get('family')} / {r.get('dtype')}"].append(r)
        by_difficulty[str((r.get("task") or {}).get("difficulty"))].append(r)
        bench_cost = ((r.get("task") or {}).get("cost") or {}).get("bench") or []
        fraction = (r.get("roofline") or {}).get("triton_fraction_of_floor")
        if r.get("timed") and fraction and bench_cost and bench_cost[0].get("bytes"):
            points.append((bench_cost[0]["flops"] / bench_cost[0]["bytes"], fraction, r.get("family"),
                           f"{r.get('file')}: {r.get('description')} ({fraction:.0%} of the floor)"))
    cards = [("kernels", stats["kernels"]), ("timed on a GPU", stats["timed"]),
             ("geomean over eager", _x(geomean([r["speedup"] for r in timed]))),
             ("geomean over torch.compile", _x(geomean([r.get("speedup_vs_compile") for r in timed]))),
             ("faster than torch.compile", f"{sum(1 for r in timed if r.get('faster_than_compile'))} of {len(timed)}")]
    if stats.get("tasks_attempted"):
        cards += [("tasks landed", f"{stats['tasks_landed']} of {stats['tasks_attempted']}"),
                  ("first-attempt rate", f"{stats['first_attempt_rate']:.0%}")]
    attempts = {k: v for k, v in sorted(stats["attempts_used"].items())}
    failures = dict(_failure_categories(runs_root).most_common())
    header = ["group", "kernels", "timed", "geomean over eager", "geomean over torch.compile",
              "faster than torch.compile"]
    shown = records[:kernels]
    over_compile = [r["speedup_vs_compile"] for r in timed if r.get("speedup_vs_compile")]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>fusionforge report: {html.escape(str(dataset.root))}</title><style>{CSS}</style></head><body>",
        "<h1>fusionforge report</h1>",
        f"<p class='muted'>{html.escape(str(dataset.root))} and {html.escape(str(runs_root))}; made "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; timed on "
        f"{html.escape(', '.join(stats['devices']) or 'no GPU')} ({html.escape('; '.join(stats['versions']))})</p>",
        "<div class='cards'>" + "".join(f"<div class='card'><b>{html.escape(str(v))}</b>{html.escape(k)}</div>"
                                        for k, v in cards) + "</div>",
        "<h2>Per family and dtype</h2>", _table(header, _group_rows(by_family_dtype)),
        "<h2>Per difficulty</h2>", _table(header, _group_rows(by_difficulty, DIFFICULTIES)),
        "<h2>Speedups</h2><div class='plots'>",
        f"<figure>{speedup_histogram([r['speedup'] for r in timed], 'eager')}<figcaption>Triton against PyTorch "
        "eager: medians of interleaved, L2-flushed calls at the bench shape.</figcaption></figure>",
        f"<figure>{speedup_histogram(over_compile, 'torch.compile')}"
        "<figcaption>Triton against torch.compile of the same chain.</figcaption></figure></div>",
        "<h2>Roofline</h2>",
        f"<figure>{roofline_plot(points[::math.ceil(len(points) / MAX_POINTS) or 1])}<figcaption>Each timed "
        "kernel's fraction of the roofline floor (the least time its bytes and FLOPs allow at the device's measured "
        "copy and matmul rates) against its arithmetic intensity at the bench shape"
        + (f"; one kernel in {math.ceil(len(points) / MAX_POINTS)} of {len(points)}" if len(points) > MAX_POINTS
           else "") + ".</figcaption></figure>",
        "<h2>Attempts</h2><div class='plots'>",
        f"<figure>{bars(attempts, 'attempt at which the kernel passed', 'kernels')}</figure>",
        f"<figure>{bars(failures, 'category of the failed attempt', 'attempts', '#e45756')}"
        "<figcaption>Every failed attempt in the logs, by the category of its failure.</figcaption></figure>"
        if failures else "<p class='muted'>No failed attempts in the logs.</p>",
        "</div>",
        *(_eval_section(evaluation) if evaluation else []),
        f"<h2>Kernels</h2><p class='muted'>{len(shown)} of {len(records)} shown"
        + (f" (the first {kernels}: `--kernels N` shows more)" if len(records) > kernels else "") + ".</p>",
        *(_kernel_panel(dataset, r) for r in shown),
        "</body></html>",
    ]
    return "\n".join(parts)
