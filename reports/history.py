"""A run history in SQLite (stdlib `sqlite3`): `covbench track RUN_DIR --history FILE` appends a
run's summary with its git commit and date; `covbench history FILE` prints the trend and draws one
plot per metric. SQLite because the history is appended from CI jobs one row set at a time, must
survive an interrupted write (transactions), and stays one file that can be committed or cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from covbench.errors import CovbenchError
from covbench.manifest import now_iso
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.compare import load_summary
from covbench.reports.table import COLUMNS
from covbench.store import read_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,            -- run folder name
    path TEXT NOT NULL,           -- run folder as given to `track`
    git_commit TEXT,              -- from the run's environment.json
    git_dirty INTEGER,
    date TEXT NOT NULL,           -- when the run finished (ISO 8601), else when it was tracked
    tracked TEXT NOT NULL,
    unit TEXT NOT NULL,
    config_key TEXT,
    n_seeds INTEGER,
    summary_sha256 TEXT NOT NULL UNIQUE  -- the same summary is tracked once
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    model TEXT NOT NULL,
    metric TEXT NOT NULL,
    mean REAL, sd REAL, n INTEGER, seed_mean REAL, seed_sd REAL,
    PRIMARY KEY (run_id, model, metric)
);
"""


@dataclass
class Point:
    run_id: int
    date: str
    commit: str | None
    model: str
    metric: str
    mean: float | None
    seed_sd: float | None


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    path = Path(path)
    if not create and not path.exists():
        raise CovbenchError(
            f"history {path}: no such file; create it with `covbench track RUN_DIR --history {path}`"
        )
    try:
        con = sqlite3.connect(path)
        con.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise CovbenchError(f"history {path}: not a covbench history database ({exc})") from None
    return con


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def track(run_dir: Path, history: Path) -> int:
    """Append the run's summary; returns the new run id. Refuses a summary already tracked."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CovbenchError(f"RUN_DIR {run_dir}: not a folder")
    summary = load_summary(run_dir, "RUN_DIR")
    blob = json.dumps(summary["models"], sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()
    env = read_json(run_dir / "environment.json") if (run_dir / "environment.json").exists() else {}
    cfg = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    git = env.get("git") or {}
    with closing(_connect(history, create=True)) as con, con:
        if con.execute("SELECT id FROM runs WHERE summary_sha256 = ?", (digest,)).fetchone():
            raise CovbenchError(f"history {history}: this summary of {run_dir} is already tracked")
        cur = con.execute(
            "INSERT INTO runs (run, path, git_commit, git_dirty, date, tracked, unit, config_key, n_seeds, "
            "summary_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_dir.name,
                str(run_dir),
                git.get("commit"),
                None if git.get("dirty") is None else int(bool(git["dirty"])),
                env.get("finished") or env.get("created") or now_iso(),
                now_iso(),
                summary.get("unit", "slice"),
                cfg.get("_key"),
                len(summary.get("seeds", [])) or None,
                digest,
            ),
        )
        run_id = int(cur.lastrowid)
        con.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    model,
                    metric,
                    _num(s.get("mean")),
                    _num(s.get("sd")),
                    s.get("n"),
                    _num(s.get("seed_mean")),
                    _num(s.get("seed_sd")),
                )
                for model, entry in sorted(summary["models"].items())
                for metric, s in entry.items()
                if metric in METRICS
            ],
        )
    return run_id


def load_history(history: Path) -> list[Point]:
    with closing(_connect(history, create=False)) as con:
        rows = con.execute(
            "SELECT r.id, r.date, r.git_commit, m.model, m.metric, m.mean, m.seed_sd "
            "FROM metrics m JOIN runs r ON r.id = m.run_id ORDER BY r.date, r.id, m.model"
        ).fetchall()
    return [Point(*row) for row in rows]


def trend_markdown(points: list[Point]) -> str:
    """Per metric, one row per tracked run (oldest first), one column per model."""
    if not points:
        return "The history is empty.\n"
    runs = sorted({(p.date, p.run_id, p.commit) for p in points}, key=lambda r: (r[0], r[1]))
    models = sorted({p.model for p in points})
    value = {(p.run_id, p.model, p.metric): p for p in points}
    lines = []
    for metric in [m for m in METRICS if any(p.metric == m for p in points)]:
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        lines += [f"### {COLUMNS[metric]} {arrow}", "", "| Date | Commit | " + " | ".join(models) + " |"]
        lines.append("|---|---|" + "---|" * len(models))
        previous: dict[str, float] = {}
        for date, run_id, commit in runs:
            cells = []
            for model in models:
                p = value.get((run_id, model, metric))
                if p is None or p.mean is None:
                    cells.append("n/a")
                    continue
                text = f"{p.mean:.4f}"
                if model in previous:
                    text += f" ({p.mean - previous[model]:+.4f})"
                previous[model] = p.mean
                cells.append(text)
            lines.append(f"| {date} | {(commit or 'n/a')[:10]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_history(points: list[Point], folder: Path) -> list[Path]:
    """One PNG + SVG per metric: mean per run and model, error bars = SD between seeds."""
    from matplotlib.figure import Figure

    from covbench.reports.figures import model_colors, save

    runs = sorted({(p.date, p.run_id, p.commit) for p in points}, key=lambda r: (r[0], r[1]))
    position = {run_id: i for i, (_, run_id, _) in enumerate(runs)}
    labels = [f"{d[:10]}\n{(c or 'n/a')[:7]}" for d, _, c in runs]
    models = sorted({p.model for p in points})
    colors = model_colors(models)
    paths: list[Path] = []
    dodge = {m: 0.06 * (k - (len(models) - 1) / 2) for k, m in enumerate(models)}  # error bars side by side
    for metric in [m for m in METRICS if any(p.metric == m for p in points)]:
        fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * len(runs)), 3.4), layout="constrained")
        ax = fig.add_subplot()
        for model in models:
            pts = [p for p in points if p.model == model and p.metric == metric and p.mean is not None]
            if not pts:
                continue
            pts.sort(key=lambda p: position[p.run_id])
            ax.errorbar(
                [position[p.run_id] + dodge[model] for p in pts],
                [p.mean for p in pts],
                yerr=[p.seed_sd or 0.0 for p in pts],
                marker="o",
                capsize=3,
                color=colors[model],
                label=model,
            )
        ax.set_xticks(range(len(runs)), labels, fontsize=7)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        ax.set_title(f"{COLUMNS[metric]} ({direction}); error bars: SD between seeds", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths += save(fig, Path(folder) / f"history_{metric}")
    return paths
