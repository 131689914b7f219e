"""The self-contained HTML report: one file, CSS inline, figures embedded as PNG data URIs, so it
can be mailed or attached to a CI job without its folder."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from covbench.reports.table import COLUMNS

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


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def tests_table(tests: dict[str, dict], unit: str) -> str:
    """All pairwise tests, one row per (metric, pair)."""
    head = (
        "<tr><th class=l>Metric</th><th class=l>Pair (a − b)</th><th>n</th><th>Mean difference [95% CI]</th>"
        "<th>W</th><th>p</th><th>p (Holm)</th><th>Rank-biserial r</th></tr>"
    )
    body = []
    for metric, t in tests.items():
        for p in t["pairs"]:
            ci = f"[{_num(p['ci_low'], '+.4f')}, {_num(p['ci_high'], '+.4f')}]"
            body.append(
                f"<tr><td class=l>{html.escape(COLUMNS.get(metric, metric))}</td>"
                f"<td class=l>{html.escape(p['a'])} − {html.escape(p['b'])}</td><td>{p['n']}</td>"
                f"<td>{_num(p['mean_difference'], '+.4f')} {ci}</td><td>{_num(p['statistic'], '.1f')}</td>"
                f"<td>{_num(p['p_value'], '.3g')}</td><td>{_num(p['p_adjusted'], '.3g')}</td>"
                f"<td>{_num(p['rank_biserial'], '+.2f')}</td></tr>"
            )
    caption = (
        f"Paired over test {unit}s every model has a value for. Wilcoxon signed-rank (zero differences "
        "dropped), Holm-adjusted over the pairs of each metric; r = matched-pairs rank-biserial correlation "
        "(> 0: a larger); 95% CI: percentile bootstrap over cases, 2000 resamples, seed 0."
    )
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead>{head}</thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def friedman_list(tests: dict[str, dict], unit: str) -> str:
    items = []
    for metric, t in tests.items():
        name = html.escape(COLUMNS.get(metric, metric))
        if t.get("friedman_p") is None:
            f = "Friedman n/a (needs ≥ 3 models and ≥ 2 cases)"
        else:
            f = f"Friedman χ² = {t['friedman_statistic']:.2f}, p = {t['friedman_p']:.3g}"
        ties = ", ".join(t.get("tied_with_best") or []) or "none"
        best = (
            f"best <b>{html.escape(t['best'])}</b>; not significantly different from it: {html.escape(ties)}"
            if t.get("best")
            else "no best (fewer than two models with values)"
        )
        items.append(f"<li><b>{name}</b> ({t['n_cases']} paired {unit}s): {f}; {best}</li>")
    return "<ul>" + "".join(items) + "</ul>"


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
) -> str:
    warn = "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in warnings)
    figs = "".join(figure(p, c) for p, c in figures)
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{warn}
<h2>Table 1</h2>
{table_html}
<h2>Seed view</h2>
{seed_table_html}
<h2>Significance</h2>
{friedman_list(tests, unit)}
{tests_table(tests, unit)}
<h2>Figures</h2>
{figs or "<p>No figures (run without test slices).</p>"}
<h2>Notes</h2><ul>{note}</ul>
</body></html>
"""
