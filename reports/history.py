"""A run history in SQLite (stdlib `sqlite3`): `covbench track RUN_DIR --history FILE` appends a
run's summary with its git commit and date; `covbench history FILE` prints the trend and draws one
plot per metric. SQLite because the history is appended from CI jobs one row set at a time, must
survive an interrupted write (transactions), and stays one file that can be committed or cached.

Every tracked run belongs to a named benchmark (table `benchmarks`), and a name stands for one
benchmark identity (`covbench.reports.identity`): a trend, a delta or a plotted line only ever
joins runs of the same benchmark. Tracking a run under a name whose identity differs is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from covbench.errors import CovbenchError, quote
from covbench.folder.io import read_json
from covbench.folder.layout import RunFolder
from covbench.folder.manifest import now_iso
from covbench.folder.stored_config import read_stored_config
from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.compare import load_summary, run_folder_lock, summary_digest
from covbench.reports.identity import (
    default_name,
    describe,
    describe_differences,
    differences,
    identity_from_config,
    short_hash,
)
from covbench.reports.table import column_titles, distance_unit_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmarks (
    name TEXT PRIMARY KEY,        -- `--benchmark NAME`, default dataset-preset[-unit]
    identity TEXT NOT NULL,       -- JSON, covbench.reports.identity: what makes runs comparable
    created TEXT NOT NULL
);
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
    summary_sha256 TEXT NOT NULL UNIQUE,  -- of summary + commit + run start: a run is tracked once
    benchmark TEXT REFERENCES benchmarks(name),
    gate TEXT                     -- JSON of the run's gate.json (`covbench compare`), NULL if not gated
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    model TEXT NOT NULL,
    metric TEXT NOT NULL,
    mean REAL, sd REAL, n INTEGER, seed_mean REAL, seed_sd REAL,
    PRIMARY KEY (run_id, model, metric)
);
"""
#: Columns added to `runs` after the first release; an older history file gains them on open.
ADDED_COLUMNS = {"benchmark": "TEXT", "gate": "TEXT"}
#: `covbench history` prints this many runs per benchmark unless told otherwise (`--last`).
DEFAULT_LAST = 10


@dataclass
class Point:
    run_id: int
    date: str
    commit: str | None
    model: str
    metric: str
    mean: float | None
    seed_sd: float | None
    benchmark: str = "default"
    gate: str | None = None  # "pass", "flagged" or None (the gate did not look at this run)
    failed: bool = False  # this (model, metric) is one the gate flagged


@dataclass
class Tracked:
    run_id: int
    benchmark: str
    new_benchmark: bool
    gate: str | None
    note: str | None = None  # why a new series was started under a derived name


#: Seconds a command waits for another process's write to the history to end (SQLite's busy wait).
LOCK_WAIT_SECONDS = 30.0


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    path = Path(path)
    if not create and not path.exists():
        raise CovbenchError(
            f"history {path}: no such file; create it with `covbench track RUN_DIR --history {path}`"
        )
    if path.is_dir():
        raise CovbenchError(f"history {path}: is a folder, not a history file")
    if path.is_file() and path.stat().st_size == 0:  # SQLite would quietly make it a database
        raise CovbenchError(
            f"history {path}: an empty file, not a covbench history database; remove it to start a "
            "new history there"
        )
    try:
        con = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS)
        con.executescript(SCHEMA)
        have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        with con:
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    except sqlite3.DatabaseError as exc:
        raise _database_error(path, exc) from None
    return con


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> CovbenchError:
    """What a SQLite error means for the user: locked, not openable, or not a history database."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return CovbenchError(
            f"history {path}: locked by another process for more than {LOCK_WAIT_SECONDS:g} s "
            f"({text}); try again when it is done"
        )
    if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "readonly" in text):
        return CovbenchError(f"history {path}: cannot be opened for writing ({text}); check the folder")
    return CovbenchError(f"history {path}: not a covbench history database ({text})")


@contextmanager
def _database(path: Path, create: bool) -> Iterator[sqlite3.Connection]:
    """A connection to the history, closed afterwards; a lock held too long by another process,
    at any statement of the block, ends as one CovbenchError saying so."""
    with closing(_connect(path, create)) as con:
        try:
            yield con
        except sqlite3.OperationalError as exc:
            raise _database_error(path, exc) from None


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def load_benchmarks(history: Path) -> dict[str, dict[str, Any] | None]:
    """name -> identity; runs tracked before identities existed appear as `legacy-<config key>`."""
    with _database(history, create=False) as con:
        named = {n: json.loads(i) for n, i in con.execute("SELECT name, identity FROM benchmarks")}
        legacy = con.execute("SELECT DISTINCT config_key FROM runs WHERE benchmark IS NULL").fetchall()
    return {**named, **{_legacy_name(k): None for (k,) in legacy}}


def _legacy_name(config_key: str | None) -> str:
    return f"legacy-{config_key or 'unknown'}"


def _choose_benchmark(
    con: sqlite3.Connection, identity: dict[str, Any], name: str | None, where: str
) -> tuple[str, bool, str | None]:
    """(benchmark name, whether it is new, a note) for a run; refuses a name whose identity differs.

    Without a name the run joins the series of its identity, else starts `dataset-preset`, or
    `dataset-preset-<hash>` when that name is taken by another benchmark: an unattended CI job keeps
    tracking after a deliberate change of its benchmark, into a new series, never into the old one.
    """
    known = {n: json.loads(i) for n, i in con.execute("SELECT name, identity FROM benchmarks ORDER BY name")}
    same = [n for n, ident in known.items() if not differences(ident, identity)]
    if name is None:
        if same:
            return same[0], False, None
        name = default_name(identity)
        if name not in known:
            return name, True, None
        note = f"not {name!r}: " + describe_differences(differences(known[name], identity), name, "this run")
        return f"{name}-{short_hash(identity)}", True, note
    if name in known:
        diffs = differences(known[name], identity)
        if diffs:
            raise CovbenchError(
                f"{where}: benchmark {name!r} is a different benchmark from this run ("
                + describe_differences(diffs, name, "this run")
                + "); track it under another --benchmark NAME"
            )
        return name, False, None
    if same:
        raise CovbenchError(
            f"{where}: this run's benchmark is already tracked as {same[0]!r}; use --benchmark {same[0]}"
        )
    return name, True, None


def _gate_record(run_dir: Path, digest: str) -> dict[str, Any] | None:
    """The run's gate.json when it judged this very summary (a re-reported run has a stale one)."""
    path = RunFolder(run_dir).gate
    if not path.is_file():
        return None
    record = read_json(path)
    return record if record.get("summary_sha256") == digest else None


def _verdict(gate: dict[str, Any] | None) -> str | None:
    """A gate record as the history shows it: "pass", "flagged", or None (not gated)."""
    return None if gate is None else "pass" if gate.get("passed") else "flagged"


def track(run_dir: Path, history: Path, benchmark: str | None = None) -> Tracked:
    """Append the run's summary to its benchmark's series. Refuses a summary already tracked, a run
    folder without config.json (its identity is unknown) and a benchmark name that stands for a
    different identity, and a run folder that a run is writing (RunLocked)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CovbenchError(f"RUN_DIR {run_dir}: not a folder")
    with run_folder_lock(run_dir):  # not a summary that a run is about to rewrite
        return _track(run_dir, Path(history), benchmark)


def _track(run_dir: Path, history: Path, benchmark: str | None) -> Tracked:
    summary = load_summary(run_dir, "RUN_DIR")
    unit = summary.get("unit", "slice")
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise CovbenchError(f"RUN_DIR {run_dir}: no config.json, so which benchmark it ran is unknown")
    cfg = read_stored_config(run_dir)
    assert cfg is not None  # config.json is there (checked above)
    env = read_json(folder.environment) if folder.environment.is_file() else {}
    identity = identity_from_config(cfg, env.get("data_fingerprint"), unit, distance_unit_of(summary))
    git = env.get("git") or {}
    gate = _gate_record(run_dir, summary_digest(summary))
    # A deterministic benchmark gives the same summary at every commit: each run is still a point of
    # the trend. What is tracked once is a run: its summary, commit and start time together.
    once = json.dumps([summary_digest(summary), git.get("commit"), env.get("created")]).encode()
    digest = hashlib.sha256(once).hexdigest()
    with _database(history, create=True) as con, con:
        if con.execute("SELECT id FROM runs WHERE summary_sha256 = ?", (digest,)).fetchone():
            raise CovbenchError(f"history {history}: this summary of {run_dir} is already tracked")
        name, new, note = _choose_benchmark(con, identity, benchmark, f"history {history}")
        if new:
            con.execute(
                "INSERT INTO benchmarks VALUES (?, ?, ?)",
                (name, json.dumps(identity, sort_keys=True), now_iso()),
            )
        cur = con.execute(
            "INSERT INTO runs (run, path, git_commit, git_dirty, date, tracked, unit, config_key, n_seeds, "
            "summary_sha256, benchmark, gate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_dir.name,
                str(run_dir),
                git.get("commit"),
                None if git.get("dirty") is None else int(bool(git["dirty"])),
                env.get("finished") or env.get("created") or now_iso(),
                now_iso(),
                unit,
                str(cfg.key) if cfg.key else None,
                len(summary.get("seeds", [])) or None,
                digest,
                name,
                None if gate is None else json.dumps(gate, sort_keys=True),
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
    return Tracked(run_id, name, new, _verdict(gate), note)


def load_history(history: Path, benchmark: str | None = None) -> list[Point]:
    """Every tracked (run, model, metric), oldest run first; only `benchmark`'s when given."""
    if benchmark is not None:
        names = load_benchmarks(history)
        if benchmark not in names:
            known = ", ".join(sorted(names)) or "none yet"
            raise CovbenchError(
                f"--benchmark {quote(benchmark)}: not in {history}; tracked benchmarks: {known}"
            )
    with _database(history, create=False) as con:
        rows = con.execute(
            "SELECT r.id, r.date, r.git_commit, m.model, m.metric, m.mean, m.seed_sd, r.benchmark, "
            "r.config_key, r.gate FROM metrics m JOIN runs r ON r.id = m.run_id "
            "ORDER BY r.date, r.id, m.model"
        ).fetchall()
    points = []
    for run_id, date, commit, model, metric, mean, seed_sd, name, key, gate_json in rows:
        name = name or _legacy_name(key)
        if benchmark is not None and name != benchmark:
            continue
        gate = json.loads(gate_json) if gate_json else None
        failed = gate is not None and any(
            f.get("model") == model and f.get("metric") == metric for f in gate.get("failed", [])
        )
        points.append(Point(run_id, date, commit, model, metric, mean, seed_sd, name, _verdict(gate), failed))
    return points


def _series(points: list[Point]) -> dict[str, pd.DataFrame]:
    """benchmark name -> its points as a table, in order of each benchmark's first run."""
    if not points:
        return {}
    frame = pd.DataFrame([vars(p) for p in points])
    frame["order"] = range(len(frame))  # load_history's order: by date, then run id
    first = frame.groupby("benchmark")["order"].min().sort_values()
    return {name: frame[frame["benchmark"] == name] for name in first.index}


def _runs(series: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a series, in order: run_id, date, commit, gate."""
    return series.sort_values("order").drop_duplicates("run_id")[["run_id", "date", "commit", "gate"]]


def trend_markdown(
    points: list[Point],
    benchmarks: dict[str, dict[str, Any] | None] | None = None,
    last: int = DEFAULT_LAST,
) -> str:
    """Per benchmark, per metric: one row per run (oldest first, the `last` most recent; 0 = all),
    one column per model, each cell the mean and its change since the benchmark's previous run."""
    if last < 0:
        raise CovbenchError(f"--last must be 0 (all runs) or a positive number, got {last}")
    if not points:
        return "The history is empty.\n"
    lines: list[str] = []
    all_series = _series(points)
    identities = {n: i for n, i in (benchmarks or {}).items() if n in all_series and i is not None}
    telling = tuple(
        {k for a in identities.values() for b in identities.values() for k, _, _ in differences(a, b)}
    )
    for name, series in all_series.items():
        runs = _runs(series)
        shown = runs.tail(last) if last > 0 else runs
        identity = identities.get(name)
        titles = column_titles(distance_unit_of(identity or {}))
        about = (
            describe(identity, telling)
            if identity
            else "identity not recorded (tracked by an older covbench)"
        )
        count = f"{len(runs)} run(s)" + (
            f", the last {len(shown)} shown (--last 0 for all)" if len(shown) < len(runs) else ""
        )
        lines += [f"## Benchmark `{name}`", "", f"{about}; {count}.", ""]
        models = sorted(series["model"].unique())
        for metric in [m for m in METRICS if (series["metric"] == m).any()]:
            rows = series[series["metric"] == metric]
            means = rows.pivot(index="run_id", columns="model", values="mean").reindex(runs["run_id"])
            means = means.reindex(columns=models).astype(float)
            delta = means - means.ffill().shift()  # change since the model's previous run in this series
            failed = set(
                zip(rows.loc[rows["failed"], "run_id"], rows.loc[rows["failed"], "model"], strict=True)
            )
            arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
            lines += [
                f"### {titles[metric]} {arrow}",
                "",
                "| Date | Commit | " + " | ".join(models) + " | Gate |",
            ]
            lines.append("|---|---|" + "---|" * len(models) + "---|")
            for run in shown.itertuples():
                cells = []
                for model in models:
                    value, change = means.at[run.run_id, model], delta.at[run.run_id, model]
                    if pd.isna(value):
                        cells.append("n/a")
                        continue
                    text = f"{value:.4f}" + ("" if pd.isna(change) else f" ({change:+.4f})")
                    cells.append(f"**{text}**" if (run.run_id, model) in failed else text)
                gate = {"pass": "pass", "flagged": "**flagged**"}.get(run.gate or "", "–")
                commit = (run.commit or "n/a")[:10]
                lines.append(f"| {run.date} | {commit} | " + " | ".join(cells) + f" | {gate} |")
            lines.append("")
    return "\n".join(lines)


def plots_folder(history: Path) -> Path:
    """Where `covbench history FILE` draws its plots unless told: `<stem>-plots` beside FILE."""
    return Path(history).with_name(Path(history).stem + "-plots")


def plot_history(
    points: list[Point], folder: Path, benchmarks: dict[str, dict[str, Any] | None] | None = None
) -> list[Path]:
    """One PNG + SVG per metric, one panel per benchmark: each model's mean per run with a band of
    ± SD between seeds; runs the gate flagged are shaded and their failing points crossed. The
    y label carries each benchmark's own distance unit (`benchmarks`: name -> identity)."""
    from matplotlib.figure import Figure

    from covbench.reports.figures import model_colors, save

    series = _series(points)
    colors = model_colors(sorted({p.model for p in points}))
    longest = max(len(_runs(s)) for s in series.values())
    paths: list[Path] = []
    for metric in [m for m in METRICS if any(p.metric == m for p in points)]:
        panels = {
            name: s[s["metric"] == metric] for name, s in series.items() if (s["metric"] == metric).any()
        }
        fig = Figure(
            figsize=(min(16.0, max(5.0, 1.0 + 0.6 * longest)), 2.9 * len(panels)), layout="constrained"
        )
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        for ax, (name, rows) in zip(axes, panels.items(), strict=True):
            runs = _runs(series[name]).reset_index(drop=True)
            position = {run_id: i for i, run_id in enumerate(runs["run_id"])}
            flagged_label = "flagged by the gate"
            for i in runs.index[runs["gate"] == "flagged"]:
                ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.12, lw=0, label=flagged_label)
                flagged_label = None
            for model, pts in rows.dropna(subset=["mean"]).groupby("model"):
                x = pts["run_id"].map(position).to_numpy()
                y = pts["mean"].to_numpy(dtype=float)
                sd = pts["seed_sd"].fillna(0.0).to_numpy(dtype=float)
                ax.plot(x, y, marker="o", ms=4, color=colors[model], label=model)
                ax.fill_between(x, y - sd, y + sd, color=colors[model], alpha=0.2, lw=0)
                if len(x) == 1:  # a band needs two runs; one run shows its SD as an error bar
                    ax.errorbar(x, y, yerr=sd, fmt="none", color=colors[model], alpha=0.6, capsize=3)
                bad = pts["failed"].to_numpy(dtype=bool)
                if bad.any():
                    ax.scatter(x[bad], y[bad], marker="x", s=70, color="tab:red", zorder=5)
            step = max(1, math.ceil(len(runs) / 12))  # at most about 12 labels
            ticks = list(range(0, len(runs), step))
            labels = [f"{runs.at[i, 'date'][:10]}\n{(runs.at[i, 'commit'] or 'n/a')[:7]}" for i in ticks]
            ax.set_xticks(ticks, labels, fontsize=7)
            ax.set_xlim(-0.5, len(runs) - 0.5)
            ax.set_title(f"benchmark {name}", fontsize=9)
            ax.set_ylabel(column_titles(distance_unit_of((benchmarks or {}).get(name) or {}))[metric])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        direction = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        label = column_titles("mm")[metric].replace(" (mm)", "")  # each panel's y label has its unit
        fig.suptitle(f"{label} ({direction}); band: ± SD between seeds", fontsize=10)
        paths += save(fig, Path(folder) / f"history_{metric}")
    return paths
