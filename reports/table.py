"""Table 1: one row per model, mean ± SD per metric, as in Salehi et al. 2023."""

from __future__ import annotations

import math

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


def cell(stat: dict | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "n/a"
    sd = stat.get("sd")
    sd_text = "n/a" if sd is None or (isinstance(sd, float) and math.isnan(sd)) else f"{sd:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {sd_text}"


def markdown_table(
    summary: dict, titles: dict[str, str] | None = None, extra: dict[str, dict] | None = None
) -> str:
    """Markdown Table 1 from `summary["models"]`; `extra` adds columns per model (params, time)."""
    models = summary["models"]
    extra = extra or {}
    extra_cols = sorted({k for v in extra.values() for k in v})
    header = ["Model", *COLUMNS.values(), *extra_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in models.items():
        row = [(titles or {}).get(name, name), *(cell(metrics.get(m)) for m in COLUMNS)]
        row += [str(extra.get(name, {}).get(c, "")) for c in extra_cols]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
