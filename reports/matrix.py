"""The pairwise verdicts of one metric as a model x model matrix (PNG + SVG): the figure a reader
scans instead of 1225 verdict rows at 50 models (issue 37); every pair stays listed in
verdicts.csv and summary.json.

Cell (row r, column c) is r's verdict against c, read from the pair's verdict word: *better*
(r better), *worse* (c better), *practically equivalent*, *undecided*; *not tested* when the pair
has no verdict (a failed trial), dark on the diagonal. The matrix is antisymmetric in better /
worse. Rows and columns follow `order` (the report passes Table 1's order, best first), so a
model's row reads left to right against ever weaker models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from covbench.reports.inference import EQUIVALENT

#: Verdict of the row model against the column model -> colour (blue / orange: colour-blind safe).
VERDICT_COLORS: dict[str, str] = {
    "better": "#2166ac",
    "worse": "#e08214",
    "equivalent": "#b2abd2",
    "undecided": "#eeeeee",
    "not tested": "#ffffff",
    "self": "#4d4d4d",
}
CODES = list(VERDICT_COLORS)  # the integer a cell holds is its index here


def cell_verdict(pair: dict, row: str) -> str:
    """`row`'s verdict against the other model of `pair` (a summary.json verdict pair)."""
    word = pair.get("verdict", "")
    other = pair["b"] if pair["a"] == row else pair["a"]
    if word == f"{row} better":
        return "better"
    if word == f"{other} better":
        return "worse"
    if word == EQUIVALENT:
        return "equivalent"
    return "undecided"


def verdict_grid(verdict: dict, order: list[str]) -> np.ndarray:
    """k x k array of `CODES` names: cell (i, j) is order[i]'s verdict against order[j]."""
    k = len(order)
    grid = np.full((k, k), "not tested", dtype=object)
    where = {m: i for i, m in enumerate(order)}
    for pair in verdict.get("pairs", []):
        a, b = pair["a"], pair["b"]
        if a in where and b in where:
            grid[where[a], where[b]] = cell_verdict(pair, a)
            grid[where[b], where[a]] = cell_verdict(pair, b)
    for i in range(k):
        grid[i, i] = "self"
    return grid


def matrix_figure(verdict: dict, order: list[str], title: str) -> Figure:
    """The figure of `verdict_grid`; label sizes shrink with the number of models so 50 names fit."""
    grid = verdict_grid(verdict, order)
    codes = np.vectorize(CODES.index, otypes=[int])(grid) if grid.size else np.zeros((0, 0), int)
    k = len(order)
    cell = 0.34 if k <= 10 else 0.22 if k <= 25 else 0.16
    font = 9 if k <= 10 else 7 if k <= 25 else 5.5
    longest = max((len(m) for m in order), default=1)
    label = 0.6 + 0.07 * font / 7 * longest  # inches for the tick labels
    side = max(k * cell, 2.0)
    fig = Figure(figsize=(side + label + 0.4, side + label + 1.3), layout="constrained")
    ax = fig.add_subplot()
    cmap = ListedColormap([VERDICT_COLORS[c] for c in CODES])
    norm = BoundaryNorm(np.arange(len(CODES) + 1) - 0.5, cmap.N)
    ax.imshow(codes, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")
    ax.set_xticks(range(k), order, rotation=90, fontsize=font)
    ax.set_yticks(range(k), order, fontsize=font)
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", lw=0.5 if k > 25 else 1.0)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2)
    ax.xaxis.tick_top()
    ax.set_ylabel("row model ...", fontsize=8)
    ax.set_xlabel("... against column model", fontsize=8)
    shown = [c for c in CODES if c != "self" and (grid == c).any()] or ["undecided"]
    handles = [Patch(facecolor=VERDICT_COLORS[c], edgecolor="#999999", label=c) for c in shown]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    return fig


def verdict_matrix(verdict: dict, order: list[str], stem: Path, title: str) -> list[Path]:
    """`stem`.png and `stem`.svg of the matrix (`covbench.reports.figures.save`)."""
    from covbench.reports.figures import save

    return save(matrix_figure(verdict, order, title), stem)
