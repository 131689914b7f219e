"""Table 1: one row per model, mean ± SD per metric, as in Salehi et al. 2023, rendered as
Markdown, LaTeX (booktabs), CSV and HTML from one `Table` so the four never disagree.

Marks (case view only) come from the verdicts (`covbench.reports.verdicts`): bold = best mean on
the paired values the verdicts use (direction from `covbench.metrics.HIGHER_IS_BETTER`);
≈ = practically equivalent to the best; † = undecided against the best (neither shown worse nor
shown equivalent: no evidence either way); no mark = the best is better.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from covbench.metrics import HIGHER_IS_BETTER
from covbench.reports.stats import ALPHA, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED

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
#: Metrics measured as distances: in mm where the data had a pixel spacing, in px where it had none
#: (the run's `distance_unit`, recorded in split.json and summary.json).
DISTANCE_METRICS: tuple[str, ...] = ("assd", "hd95")


def column_titles(distance_unit: str = "mm") -> dict[str, str]:
    """`COLUMNS` with ASSD and HD95 in `distance_unit` ("mm" or "px"): a title never claims
    millimetres the data does not have."""
    unit = f"({distance_unit})"
    return {m: t.replace("(mm)", unit) if m in DISTANCE_METRICS else t for m, t in COLUMNS.items()}


def distance_unit_of(summary: dict) -> str:
    """The distance unit a summary was computed in; summaries written before it was recorded are mm."""
    return str(summary.get("distance_unit", "mm"))


EXTRA_COLUMNS: dict[str, str] = {
    "params_m": "Params (M)",
    "gflops": "GFLOPs/img",
    "train_seconds": "Train time (s)",
}
VIEWS = {"case": ("mean", "sd"), "seed": ("seed_mean", "seed_sd")}
MARK_LEGEND = (
    "Lower is better for ASSD, MAE and HD95, higher for the others. Bold: best mean over the paired "
    "values the verdicts use; unmarked: the best is better (its verdict); ≈: practically equivalent "
    "to the best (within the metric's equivalence margin); †: undecided against the best (no evidence "
    "either way, which is not a tie). Verdicts count test patients and seeds (docs/reports.md)."
)
MARK_SIGNS = {"equivalent": "≈", "undecided": "†", "untested": "†"}


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def number(x: float | None, fmt: str) -> str:
    """`format(x, fmt)`, or "n/a" for a missing (None) or NaN value."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


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
    mark: str = ""  # "≈" or "†" (MARK_SIGNS), after the text


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
    order: list[str] | None = None,
) -> Table:
    """Table 1 from `summary["models"]` (+ `summary["tests"]` for the marks in the case view);
    `extra` = {model: {"params_m": float, "gflops": float, "train_seconds": (mean, sd)}}.
    `order`: the rows' order (the report passes `primary_order`, best first); models it leaves
    out follow in the summary's order."""
    keys = VIEWS[view]
    models = summary["models"]
    if order is not None:
        ranked = [m for m in order if m in models]
        models = {m: models[m] for m in ranked + [m for m in models if m not in ranked]}
    verdicts = summary.get("verdicts", {}) if view == "case" else {}
    extra = extra or {}
    metrics = [m for m in COLUMNS if any(m in v for v in models.values())]
    titles_of = column_titles(distance_unit_of(summary))
    header = ["Model", *(titles_of[m] for m in metrics), *EXTRA_COLUMNS.values()]
    rows, numeric = [], []
    for name, entry in models.items():
        cells = []
        record: dict[str, object] = {"model": name}
        for m in metrics:
            marks = verdicts.get(m, {}).get("marks", {})
            cells.append(
                Cell(
                    cell(entry.get(m), digits, keys),
                    best=marks.get(name) == "best",
                    mark=MARK_SIGNS.get(marks.get(name, ""), ""),
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


def primary_order(summary: dict, primary: str) -> list[str]:
    """The models best first by the primary metric: by the paired means its verdicts chose the
    best on, else by Table 1's mean, in the metric's direction (ties by name); models without a
    value last, by name."""
    models = summary.get("models", {})
    verdict = summary.get("verdicts", {}).get(primary, {})
    means = dict(verdict.get("means") or {})
    for m, entry in models.items():
        if m not in means and _finite((entry.get(primary) or {}).get("mean")):
            means[m] = entry[primary]["mean"]
    finite = {m: v for m, v in means.items() if _finite(v)}
    higher = summary.get("higher_is_better", {}).get(primary, HIGHER_IS_BETTER.get(primary, True))
    ranked = sorted(finite, key=lambda m: (-finite[m] if higher else finite[m], m))
    return ranked + sorted(m for m in models if m not in finite)


def _md_text(c: Cell) -> str:
    text = f"**{c.text}**" if c.best else c.text
    return f"{text} {c.mark}" if c.mark else text


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for name, cells in table.rows:
        lines.append("| " + " | ".join([name, *(_md_text(c) for c in cells)]) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    text = text.replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("≥", r"$\geq$")
    return text.replace("≈", r"$^{\approx}$")


def to_latex(table: Table, label: str = "tab:covbench") -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""

    def fmt(c: Cell) -> str:
        text = _tex(c.text)
        text = rf"\textbf{{{text}}}" if c.best else text
        return text + _tex(c.mark) if c.mark else text

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
        what = {"≈": "practically equivalent to the best", "†": "undecided against the best"}
        text = (
            f'{text}<span class="tie" title="{what.get(c.mark, "")}">{html.escape(c.mark)}</span>'
            if c.mark
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


def test_summaries(
    tests: dict[str, dict],
    unit: str,
    strong: Callable[[str], str],
    text: Callable[[str], str] = str,
    distance_unit: str = "mm",
) -> list[str]:
    """One line per metric of the slice-level tests (descriptive: slices of one patient are not
    independent): the Friedman test, the best model and the models the Wilcoxon test did not separate.
    `strong` marks up (and escapes) a bold name, `text` escapes plain text, for Markdown or HTML."""
    titles_of = column_titles(distance_unit)
    lines = []
    for metric, t in tests.items():
        if t.get("friedman_p") is None:
            friedman = "Friedman n/a (needs ≥ 3 models and ≥ 2 cases)"
        else:
            friedman = f"Friedman χ² = {t['friedman_statistic']:.2f}, p = {t['friedman_p']:.3g}"
        ties = ", ".join(t.get("tied_with_best") or []) or "none"
        best = (
            f"best {strong(t['best'])}, not separated from it by the slice-level test: {text(ties)}"
            if t.get("best")
            else "no best (fewer than two models with values)"
        )
        name = strong(titles_of.get(metric, metric))
        lines.append(f"{name} ({t['n_cases']} paired {unit}s): {friedman}; {best}")
    return lines


def significance_table(tests: dict[str, dict], unit: str, distance_unit: str = "mm") -> Table:
    """Every pairwise test, one row per (metric, pair), from `summary["tests"]`; the Markdown and
    HTML reports both render this one table."""
    titles_of = column_titles(distance_unit)
    header = [
        "Metric", "Pair (a − b)", "n", "Mean difference [95% CI]", "W", "p", "p (Holm)", "r (rank-biserial)"
    ]  # fmt: skip
    rows: list[tuple[str, list[Cell]]] = []
    for metric, t in tests.items():
        for p in t["pairs"]:
            ci = f"[{number(p['ci_low'], '+.4f')}, {number(p['ci_high'], '+.4f')}]"
            texts = [
                f"{p['a']} − {p['b']}",
                str(p["n"]),
                f"{number(p['mean_difference'], '+.4f')} {ci}",
                number(p["statistic"], ".1f"),
                number(p["p_value"], ".3g"),
                number(p["p_adjusted"], ".3g"),
                number(p["rank_biserial"], "+.2f"),
            ]
            rows.append((titles_of.get(metric, metric), [Cell(text) for text in texts]))
    caption = (
        f"Paired over test {unit}s every model has a value for. Wilcoxon signed-rank (zero differences "
        f"dropped), Holm-adjusted over the pairs of each metric, α = {ALPHA}; r = matched-pairs "
        f"rank-biserial correlation (> 0: a larger); 95% CI: percentile bootstrap over {unit}s "
        f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED})."
    )
    return Table(header, rows, caption)


def _difference_text(p: dict, higher_is_better: bool) -> str:
    ci = f"[{number(p['ci_low'], '+.4f')}, {number(p['ci_high'], '+.4f')}]"
    return f"{number(p['estimate'], '+.4f')} {ci}"


def verdict_lines(
    verdicts: dict[str, dict],
    strong: Callable[[str], str],
    text: Callable[[str], str] = str,
    distance_unit: str = "mm",
    metrics: list[str] | None = None,
) -> list[str]:
    """One line per pair of each metric in `metrics` (default: the primary): the verdict, the
    difference with its 95% CI, and the chance that a seed of one beats a seed of the other."""
    titles_of = column_titles(distance_unit)
    chosen = metrics or [m for m, v in verdicts.items() if v.get("primary")]
    lines = []
    for metric in chosen:
        v = verdicts[metric]
        title = titles_of.get(metric, metric)
        for p in v["pairs"]:
            seeds = f"{p['n_seeds_a']} + {p['n_seeds_b']} seeds"
            lines.append(
                f"{text(p['a'])} vs {text(p['b'])} on {text(title)}: {strong(p['verdict'])} "
                f"({text(p['a'])} − {text(p['b'])} = {_difference_text(p, v['higher_is_better'])}, "
                f"p (Holm) = {number(p['p_adjusted'], '.3g')}, equivalence margin ±{p['rope']:g}; "
                f"P(a seed of {text(p['a'])} does better than one of {text(p['b'])}) = "
                f"{p['p_a_better_seed']:.2f}; {p['n_units']} {v['unit']}s, {seeds})"
                + (f"; {text(p['reason'])}" if p.get("reason") else "")
            )
    return lines


def verdict_table(verdicts: dict[str, dict], distance_unit: str = "mm") -> Table:
    """Every (metric, pair) verdict, the primary metric first; Markdown and HTML render it."""
    titles_of = column_titles(distance_unit)
    header = [
        "Metric", "Pair (a − b)", "units × seeds", "Difference [95% CI]", "df", "p (Holm)",
        "equiv. p (Holm)", "P(seed a better)", "detectable (80%)", "ICC (slices)", "Verdict",
    ]  # fmt: skip
    rows: list[tuple[str, list[Cell]]] = []
    ordered = sorted(verdicts.items(), key=lambda kv: not kv[1].get("primary"))
    unit = "unit"
    for metric, v in ordered:
        unit = v.get("unit", unit)
        name = titles_of.get(metric, metric) + (" (primary)" if v.get("primary") else "")
        for p in v["pairs"]:
            cl = p.get("clustering") or {}
            icc = (
                f"{cl['icc']:.2f} (DE {cl['design_effect']:.1f}, n_eff {cl['n_effective']:.0f})"
                if cl
                else "–"
            )
            texts = [
                f"{p['a']} − {p['b']}",
                f"{p['n_units']} × {p['n_seeds_a']}/{p['n_seeds_b']}",
                _difference_text(p, v["higher_is_better"]),
                number(p["df"], ".1f"),
                number(p["p_adjusted"], ".3g"),
                number(p["p_equivalence_adjusted"], ".3g"),
                number(p["p_a_better_seed"], ".2f"),
                number(p["detectable"], ".3g"),
                icc,
                p["verdict"] + (" ‡" if p.get("health_dependent") else ""),  # reports/health.py
            ]
            rows.append(
                (
                    name,
                    [Cell(t, best=(i == len(texts) - 1 and v.get("primary"))) for i, t in enumerate(texts)],
                )
            )
    caption = (
        f"Per test {unit}, each model's seeds as independent replicates: difference of means with a "
        f"95% t-interval whose variance counts {unit}s and seeds (mixed model, Satterthwaite df), "
        f"two-sided p Holm-adjusted (primary metric over its pairs; secondary metrics over all their "
        f"pairs together), equivalence by TOST within ± the metric's margin, α = {ALPHA}. "
        f"'detectable': the smallest difference this design shows with 80% power. ICC: clustering of "
        f"the pair's slice differences within patients, with the design effect and the effective number "
        f"of slices (what slice-level tests ignore)."
    )
    if any(p.get("health_dependent") for v in verdicts.values() for p in v["pairs"]):
        caption += " ‡: the verdict changes when the seeds flagged for their training are left out (below)."
    return Table(header, rows, caption)
