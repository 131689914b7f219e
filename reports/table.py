"""Table 1: one row per model, mean ± SD per metric, as in Salehi et al. 2023, rendered as
Markdown, LaTeX (booktabs), CSV and HTML from one `Table` so the four never disagree.

Marks (case view only, where the tests are): bold = best mean for the metric (direction from
`covbench.metrics.HIGHER_IS_BETTER`); † = not significantly different from the best
(Holm-adjusted Wilcoxon p >= 0.05, or not testable).
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field

COLUMNS: dict[str, str] = {
    "dice": "Dice",
    "assd": "ASSD (mm)",
    "mae": "MAE",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "hd95": "HD95 (mm)",
    "nsd": "NSD",
}
EXTRA_COLUMNS: dict[str, str] = {
    "params_m": "Params (M)",
    "gflops": "GFLOPs/img",
    "train_seconds": "Train time (s)",
}
VIEWS = {"case": ("mean", "sd"), "seed": ("seed_mean", "seed_sd")}
MARK_LEGEND = (
    "Lower is better for ASSD, MAE and HD95, higher for the others. Bold: best mean; †: not significantly "
    "different from the best (Holm-adjusted Wilcoxon p ≥ 0.05)."
)


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def cell(stat: dict | None, digits: int = 2, keys: tuple[str, str] = ("mean", "sd")) -> str:
    mean_key, sd_key = keys
    if not stat or not _finite(stat.get(mean_key)):
        return "n/a"
    sd = stat.get(sd_key)
    sd_text = f"{sd:.{digits}f}" if _finite(sd) else "n/a"
    return f"{stat[mean_key]:.{digits}f} ± {sd_text}"


@dataclass
class Cell:
    text: str
    best: bool = False
    tied: bool = False


@dataclass
class Table:
    """Rendered-ready Table 1: `header` titles, one list of cells per model, and the caption."""

    header: list[str]
    rows: list[tuple[str, list[Cell]]]
    caption: str
    numeric: list[dict[str, object]] = field(default_factory=list)  # the CSV rows


def build_table(
    summary: dict,
    caption: str,
    view: str = "case",
    extra: dict[str, dict] | None = None,
    titles: dict[str, str] | None = None,
    digits: int = 2,
) -> Table:
    """Table 1 from `summary["models"]` (+ `summary["tests"]` for the marks in the case view);
    `extra` = {model: {"params_m": float, "gflops": float, "train_seconds": (mean, sd)}}."""
    keys = VIEWS[view]
    models = summary["models"]
    tests = summary.get("tests", {}) if view == "case" else {}
    extra = extra or {}
    metrics = [m for m in COLUMNS if any(m in v for v in models.values())]
    header = ["Model", *(COLUMNS[m] for m in metrics), *EXTRA_COLUMNS.values()]
    rows, numeric = [], []
    for name, entry in models.items():
        cells = []
        record: dict[str, object] = {"model": name}
        for m in metrics:
            t = tests.get(m, {})
            cells.append(
                Cell(
                    cell(entry.get(m), digits, keys),
                    best=t.get("best") == name,
                    tied=name in (t.get("tied_with_best") or []),
                )
            )
            stat = entry.get(m, {})
            record.update({f"{m}_mean": stat.get(keys[0]), f"{m}_sd": stat.get(keys[1])})
            record[f"{m}_n"] = stat.get("n_seeds" if view == "seed" else "n")
        ex = extra.get(name, {})
        params = ex.get("params_m")
        train = ex.get("train_seconds")
        cells.append(Cell(f"{params:.{2 if params >= 1 else 3}f}" if _finite(params) else "n/a"))
        gflops = ex.get("gflops")
        cells.append(Cell(f"{gflops:.3g}" if _finite(gflops) else "n/a"))
        cells.append(
            Cell(cell({"mean": train[0], "sd": train[1]}, 0 if train[0] >= 10 else 1) if train else "n/a")
        )
        record.update(
            params_m=params,
            gflops=gflops,
            train_seconds_mean=train[0] if train else None,
            train_seconds_sd=train[1] if train else None,
        )
        rows.append(((titles or {}).get(name, name), cells))
        numeric.append(record)
    return Table(header, rows, caption, numeric)


def _md_text(c: Cell) -> str:
    text = f"**{c.text}**" if c.best else c.text
    return f"{text} †" if c.tied else text


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for name, cells in table.rows:
        lines.append("| " + " | ".join([name, *(_md_text(c) for c in cells)]) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("≥", r"$\geq$")


def to_latex(table: Table, label: str = "tab:covbench") -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""

    def fmt(c: Cell) -> str:
        text = _tex(c.text)
        text = rf"\textbf{{{text}}}" if c.best else text
        return text + r"$^\dagger$" if c.tied else text

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex(table.caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "c" * (len(table.header) - 1) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join([_tex(name), *(fmt(c) for c in cells)]) + r" \\" for name, cells in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers, not strings: mean, sd and n per metric, parameters and training time per model."""
    buf = io.StringIO()
    fields = list(table.numeric[0]) if table.numeric else ["model"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in table.numeric:
        writer.writerow(
            {
                k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                for k, v in record.items()
            }
        )
    return buf.getvalue()


def to_html(table: Table) -> str:
    """An HTML <table> fragment with a <caption>; the page around it is `covbench.reports.html`."""

    def td(c: Cell) -> str:
        text = html.escape(c.text)
        text = f"<strong>{text}</strong>" if c.best else text
        text = (
            f'{text}<span class="tie" title="not significantly different from the best">†</span>'
            if c.tied
            else text
        )
        return f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "\n".join(
        f'<tr><th scope="row">{html.escape(name)}</th>{"".join(td(c) for c in cells)}</tr>'
        for name, cells in table.rows
    )
    return (
        f"<table>\n<caption>{html.escape(table.caption)}</caption>\n"
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
    )


def markdown_table(
    summary: dict, titles: dict[str, str] | None = None, extra: dict[str, dict] | None = None
) -> str:
    """Markdown Table 1 of the case view (kept for callers that want only the table text)."""
    return to_markdown(build_table(summary, "", extra=extra, titles=titles))
