"""The self-contained HTML report: one file, CSS inline, figures embedded as PNG data URIs, so it
can be mailed or attached to a CI job without its folder."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from covbench.reports.table import significance_table, test_summaries, to_html, verdict_lines, verdict_table

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:78rem;
 padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.75rem 0;font-size:.9rem;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;font-size:.82rem;color:#57606a;padding-top:.4rem;max-width:70rem}
th,td{padding:.3rem .6rem;border-bottom:1px solid #d0d7de;text-align:right;white-space:nowrap}
thead th{border-bottom:2px solid #1f2328}th[scope=row],td.l{text-align:left}
tbody tr:hover{background:#f6f8fa}.tie{color:#9a6700;margin-left:.15rem}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem .8rem;margin:.4rem 0}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.82rem;color:#57606a}code{background:#f6f8fa;padding:0 .2rem}
"""


def _strong(text: str) -> str:
    return f"<b>{html.escape(text)}</b>"


def figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def page(
    title: str,
    warnings: list[str],
    table_html: str,
    seed_table_html: str,
    tests: dict[str, dict],
    unit: str,
    figures: list[tuple[Path, str]],
    notes: list[str],
    distance_unit: str = "mm",
    verdicts: dict[str, dict] | None = None,
    verdict_intro: str = "",
    compact: str | None = None,
    verdict_figure: tuple[Path, str] | None = None,
) -> str:
    """The report page. `compact` (a sentence, many models): the verdicts as `verdict_figure` (the
    matrix) and that sentence instead of one line and one row per pair, and the slice-level tests
    without their table; the CSV files and summary.json keep every pair."""
    warn = "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in warnings)
    summaries = test_summaries(tests, unit, _strong, html.escape, distance_unit)
    figs = "".join(figure(p, c) for p, c in figures)
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    verdict_block = ""
    if verdicts and compact is not None:
        matrix = figure(*verdict_figure) if verdict_figure is not None else ""
        verdict_block = (
            f"<h2>Verdicts</h2><p>{html.escape(verdict_intro)}</p><p>{html.escape(compact)}</p>{matrix}"
        )
    elif verdicts:
        lines = verdict_lines(verdicts, _strong, html.escape, distance_unit)
        verdict_block = (
            f"<h2>Verdicts</h2><p>{html.escape(verdict_intro)}</p>"
            f"<ul>{''.join(f'<li>{line}</li>' for line in lines)}</ul>"
            f"{to_html(verdict_table(verdicts, distance_unit))}"
        )
    tests_table = to_html(significance_table(tests, unit, distance_unit)) if compact is None else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{warn}
{verdict_block}
<h2>Table 1</h2>
{table_html}
<h2>Seed view</h2>
{seed_table_html}
<h2>Slice-level tests (descriptive)</h2>
<ul>{"".join(f"<li>{line}</li>" for line in summaries)}</ul>
{tests_table}
<h2>Figures</h2>
{figs or "<p>No figures (run without test slices).</p>"}
<h2>Notes</h2><ul>{note}</ul>
</body></html>
"""
