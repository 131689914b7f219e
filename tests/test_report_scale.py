"""The report at leaderboard scale (issue 37): the batched statistics give the numbers of the
per-pair code they replaced, the verdict matrix shows the verdicts it is given, Table 1 reads in
primary-metric order, and a many-model report shows the matrix instead of every pair's row."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from scipy import optimize, stats
from typer.testing import CliRunner

from covbench.cli import app
from covbench.folder.io import to_jsonable, write_json
from covbench.folder.record import TrialRecord
from covbench.reports import curves, matrix
from covbench.reports.inference import difference, holm, p_superior, power_of
from covbench.reports.json_text import dumps, write_summary
from covbench.reports.stats import bootstrap_ci, compare_models, rank_biserial
from covbench.reports.table import build_table, primary_order
from covbench.reports.verdicts import _pair_clustering, _slice_table, unit_values, verdicts

ROOT = Path(__file__).resolve().parents[1]


def _rows(n_models: int = 5, n_seeds: int = 3, n_patients: int = 9, per_patient: int = 7, seed: int = 3):
    """Slice rows of a made-up run: patients with several slices, model effects, seed shifts, a
    few ties and zero differences (rounded Dice), one undefined precision."""
    rng = np.random.default_rng(seed)
    out = []
    for m in range(n_models):
        for s in range(n_seeds):
            shift = rng.normal(0, 0.01)
            for p in range(n_patients):
                level = rng.normal(0.7, 0.1)
                for k in range(per_patient):
                    dice = float(np.clip(level + 0.01 * m + shift + rng.normal(0, 0.05), 0, 1))
                    out.append(
                        {
                            "model": f"m{m}",
                            "seed": s,
                            "fold": 0,
                            "case": f"p{p}#{k}",
                            "patient": f"p{p}",
                            "dice": round(dice, 2),
                            "assd": abs(rng.normal(2, 1)),
                            "mae": abs(rng.normal(0.01, 0.005)),
                            "precision": math.nan if (m, s, p, k) == (1, 0, 0, 0) else dice,
                        }
                    )
    return pd.DataFrame(out)


# --- the batched statistics equal the per-pair ones --------------------------------------------


def _holm_loop(p_values):
    """Holm as the report computed it before issue 37 (a Python loop over sorted p-values)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted, running = [math.nan] * m, 0.0
    for rank, i in enumerate(order):
        if not math.isnan(p_values[i]):
            running = max(running, min(1.0, (m - rank) * p_values[i]))
            adjusted[i] = running
    return adjusted


def test_holm_in_numpy_equals_the_loop():
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0, 0.2, 200)) + [math.nan, 0.01, 0.01, 1.0, 0.0]
    rng.shuffle(p)
    assert np.array_equal(holm(p), _holm_loop(p), equal_nan=True)
    assert holm([]) == []


def _power_scipy(delta, se, df, alpha=0.05):
    crit = stats.t.ppf(1 - alpha / 2, df)
    upper, lower = stats.nct.sf(crit, df, delta / se), stats.nct.cdf(-crit, df, delta / se)
    return float(np.nan_to_num(upper) + np.nan_to_num(lower))


def test_power_through_scipy_special_equals_scipy_stats():
    for delta, se, df in itertools.product(
        [0.0, 0.003, 0.02, 0.5], [0.004, 0.01, 0.2], [1.0, 2.7, 8.0, 40.0]
    ):
        assert power_of(delta, se, df) == _power_scipy(delta, se, df)


def test_slice_level_tests_equal_the_per_pair_computation():
    """compare_models (one Wilcoxon call, rank-biserial per column, one bootstrap for all pairs)
    against the per-pair code it replaced, on more than 50 cases (the vectorised Wilcoxon) with
    ties and zero differences."""
    rows = _rows()
    per_case = rows.groupby(["model", "fold", "case"], as_index=False)[["dice", "assd"]].mean()
    for metric in ("dice", "assd"):
        result = compare_models(per_case, metric, metric == "dice")
        wide = per_case.pivot_table(index=["fold", "case"], columns="model", values=metric).dropna()
        assert len(wide) > 50
        pairs = list(itertools.combinations(wide.columns, 2))
        ps = []
        for (a, b), got in zip(pairs, result.pairs, strict=True):
            x, y = wide[a].to_numpy(), wide[b].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = stats.wilcoxon(x, y, zero_method="wilcox")
            assert (got.a, got.b) == (a, b)
            assert got.statistic == float(ref.statistic) and got.p_value == float(ref.pvalue)
            assert got.rank_biserial == rank_biserial(x - y)
            assert got.mean_difference == float((x - y).mean())
            assert (got.ci_low, got.ci_high) == pytest.approx(bootstrap_ci(x - y), abs=1e-13)
            ps.append(float(ref.pvalue))
        assert [p.p_adjusted for p in result.pairs] == _holm_loop(ps)
    assert any(p.rank_biserial not in (-1.0, 1.0) for p in result.pairs)


def test_verdicts_equal_the_per_pair_computation():
    """Every pair of the batched verdicts against `difference`, `p_superior`, the scalar TOST,
    brentq's detectable difference and the clustering, pair by pair as before issue 37."""
    rows = _rows(n_models=5)
    uv = unit_values(rows)
    got = verdicts(uv, rows, "dice")
    for metric, v in got.items():
        units = uv.units_of(metric)
        mats = {m: uv.matrix(m, metric, units) for m in uv.models}
        assert {m: a.tolist() for m, a in uv.matrices(metric, units).items()} == {
            m: a.tolist() for m, a in mats.items()
        }
        slices = _slice_table(rows, metric)
        for p in v.pairs:
            d = difference(mats[p.a], mats[p.b])
            sign = 1 if v.higher_is_better else -1
            assert (p.estimate, p.ci_low, p.ci_high, p.se, p.df, p.p_value) == (
                d.estimate, d.ci_low, d.ci_high, d.se, d.df, d.p_value
            )  # fmt: skip
            assert p.p_equivalence == d.p_equivalence(p.rope)
            assert p.p_a_better_seed == p_superior(sign * mats[p.a], sign * mats[p.b])
            assert p.detectable == d.detectable()
            assert p.clustering == _pair_clustering(slices, p.a, p.b)
    assert got["precision"].pairs and got["dice"].pairs[0].clustering is not None


def test_detectable_is_brentq_on_the_power_equation():
    d = difference(
        np.array([[0.7, 0.72, 0.69], [0.71, 0.7, 0.73]]), np.array([[0.68, 0.7, 0.66], [0.7, 0.69, 0.7]])
    )
    expected = optimize.brentq(lambda x: _power_scipy(x, d.se, d.df) - 0.8, 0.0, 60 * d.se)
    assert d.detectable() == expected


def test_summary_text_is_write_jsons_bytes(tmp_path):
    data = {
        "b": [
            1,
            2.5,
            math.nan,
            np.float32(0.1),
            np.int64(3),
            np.bool_(True),
            (1, 2),
            np.array([1.0, np.inf]),
        ],
        "a": {"x": math.inf, "y": 1e-5, "z": -0.0, "big": 1e308, "bigger": 1e308},
        3: None,
        "p": Path("/x"),
        "e": {},
        "l": [],
        "u": 'é"\n',
        "g": {"q": 0.1, "r": np.float64(0.2)},
    }
    write_json(tmp_path / "a.json", data)
    write_summary(tmp_path / "b.json", data)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert dumps(data) == json.dumps(to_jsonable(data), indent=2, sort_keys=True) + "\n"


def test_epoch_logs_read_together_equal_one_read_per_file(tmp_path):
    """`load_curves` joins the logs into one parse; a damaged or odd log still goes alone."""
    trials = []
    for k in range(5):
        folder = tmp_path / f"m{k % 2}__seed{k}__fold0"
        folder.mkdir()
        epochs = [1, 2, 3, 3, 4] if k == 0 else [2, 1, 3]  # a repeated epoch, one out of order
        text = "epoch,train_loss,val_dice\n" + "".join(
            f"{e},{1 / (e + k) + i / 1000},{0.1 * e}\n" for i, e in enumerate(epochs)
        )
        if k == 3:
            text = "epoch,train_loss\n1,0.5\n2,nan\n"  # another header: no validation
        if k == 4:
            text = "epoch,train_loss\n"  # a header alone
        (folder / "epochs.csv").write_text(text)
        raw = {"model": f"m{k % 2}", "seed": k, "fold": 0, "best_epoch": None, "status": "done"}
        trials.append((folder, TrialRecord.from_dict(raw)))
    missing = tmp_path / "m9__seed9__fold0"
    missing.mkdir()
    trials.append((missing, TrialRecord.from_dict({"model": "m9", "seed": 9, "fold": 0, "status": "done"})))
    damaged = tmp_path / "m8__seed8__fold0"
    damaged.mkdir()
    (damaged / "epochs.csv").write_text("")
    trials.append((damaged, TrialRecord.from_dict({"model": "m8", "seed": 8, "fold": 0, "status": "done"})))
    with pytest.warns(Warning, match="training curve is left out"):
        got = curves.load_curves(trials)
    frames = []
    for folder, record in trials[:5]:
        log = pd.read_csv(folder / "epochs.csv").drop_duplicates("epoch", keep="last").sort_values("epoch")
        frames.append(
            pd.DataFrame(
                {
                    "model": record.model,
                    "seed": record.seed,
                    "fold": 0,
                    "epoch": log["epoch"].astype(int).to_numpy(),
                    "train_loss": log["train_loss"].to_numpy(float),
                    "val_dice": log["val_dice"].to_numpy(float)
                    if "val_dice" in log
                    else np.full(len(log), np.nan),
                    "selected_epoch": int(log["epoch"].max()) if len(log) else 0,
                }
            )  # fmt: skip
        )
    expected = pd.concat([f for f in frames if len(f)], ignore_index=True)
    pd.testing.assert_frame_equal(got.frame, expected, check_dtype=False)
    assert got.missing == [missing.name, damaged.name]


# --- what the report shows ------------------------------------------------------------------------


def _verdict_of(pairs: list[tuple[str, str, str]]) -> dict:
    return {"metric": "dice", "pairs": [{"a": a, "b": b, "verdict": w} for a, b, w in pairs]}


def test_matrix_colours_are_the_verdicts(tmp_path):
    order = ["b", "a", "c", "d"]
    v = _verdict_of(
        [
            ("a", "b", "b better"),
            ("a", "c", "a better"),
            ("a", "d", "practically equivalent"),
            ("b", "c", "undecided"),
            ("b", "d", "b better"),  # c vs d: no pair (a failed trial)
        ]
    )
    expected = {
        ("b", "a"): "better", ("a", "b"): "worse", ("a", "c"): "better", ("c", "a"): "worse",
        ("a", "d"): "equivalent", ("d", "a"): "equivalent", ("b", "c"): "undecided", ("c", "b"): "undecided",
        ("b", "d"): "better", ("d", "b"): "worse", ("c", "d"): "not tested", ("d", "c"): "not tested",
    }  # fmt: skip
    fig = matrix.matrix_figure(v, order, "test")
    image = fig.axes[0].images[0]
    rgba = image.to_rgba(image.get_array())
    for i, row in enumerate(order):
        for j, col in enumerate(order):
            want = "self" if row == col else expected[(row, col)]
            assert tuple(rgba[i, j]) == pytest.approx(to_rgba(matrix.VERDICT_COLORS[want])), (row, col)
    paths = matrix.verdict_matrix(v, order, tmp_path / "verdicts_dice", "test")
    assert [p.name for p in paths] == ["verdicts_dice.png", "verdicts_dice.svg"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_table_one_reads_in_primary_order():
    summary = {
        "models": {
            m: {"dice": {"mean": v, "sd": 0.1, "n": 9}} for m, v in [("a", 0.7), ("b", 0.8), ("c", 0.75)]
        },
        "verdicts": {
            "dice": {"means": {"a": 0.70, "b": 0.81, "c": 0.74}, "marks": {"b": "best", "c": "undecided"}}
        },
        "higher_is_better": {"dice": True, "assd": False},
    }
    summary["models"]["z"] = {"dice": {"mean": math.nan, "sd": math.nan, "n": 0}}
    order = primary_order(summary, "dice")
    assert order == ["b", "c", "a", "z"]
    table = build_table(summary, "caption", order=order)
    assert [name for name, _ in table.rows] == ["b", "c", "a", "z"]
    assert table.rows[0][1][0].best and table.rows[1][1][0].mark == "†"
    assert [name for name, _ in build_table(summary, "caption").rows] == ["a", "b", "c", "z"]  # default kept
    summary["models"]["a"]["assd"] = {"mean": 1.0}
    summary["models"]["b"]["assd"] = {"mean": 2.0}
    assert primary_order(summary, "assd")[:2] == ["a", "b"]  # lower is better


@pytest.fixture(scope="module")
def many_models(tmp_path_factory, ray_session):
    """A real one-trial smoke run, cloned into 10 models x 2 seeds by the benchmark's builder."""
    base = tmp_path_factory.mktemp("scale")
    result = CliRunner().invoke(
        app, ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--out", str(base / "one")]
    )
    assert result.exit_code == 0, result.output
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_report import build
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return build(base / "one", base / "many", 10, 2, 1)


def test_many_models_report_shows_the_matrix_and_keeps_every_pair(many_models):
    result = CliRunner().invoke(app, ["report", str(many_models)])
    assert result.exit_code == 0, result.output
    summary = json.loads((many_models / "summary.json").read_text())
    md = (many_models / "report.md").read_text()
    assert "![" in md and "figures/verdicts_dice.png" in md
    assert (many_models / "figures" / "verdicts_dice.png").exists()
    assert "Difference [95% CI]" not in md  # no verdict table of 45 x 8 rows
    verdict_rows = pd.read_csv(many_models / "verdicts.csv")
    n_pairs = sum(len(v["pairs"]) for v in summary["verdicts"].values())
    assert len(verdict_rows) == n_pairs == 45 * len(summary["verdicts"])
    assert len(pd.read_csv(many_models / "tests.csv")) == sum(
        len(t["pairs"]) for t in summary["tests"].values()
    )
    html = (many_models / "report.html").read_text()
    assert "data:image/png;base64" in html and "verdicts.csv" in html
    order = primary_order(summary, "dice")
    table_rows = [
        line.split("|")[1].strip() for line in (many_models / "table.md").read_text().splitlines()[2:]
    ]
    assert table_rows == order
    means = summary["verdicts"]["dice"]["means"]
    assert [means[m] for m in order] == sorted(means.values(), reverse=True)


def test_kendall_taus_equal_scipy_row_by_row():
    from covbench.reports.verdicts import kendall_taus

    rng = np.random.default_rng(5)
    full = stats.rankdata(rng.integers(0, 6, 12))  # ties in the full ranking
    ranks = stats.rankdata(rng.integers(0, 8, (300, 12)), axis=1)
    ranks[0] = 1.0  # a resample where every model ties
    got = kendall_taus(full, ranks)
    want = np.array([stats.kendalltau(full, r).statistic for r in ranks])
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got[0])


def test_figures_drawn_on_a_spare_core_are_the_files_drawn_alone(many_models, tmp_path, monkeypatch):
    """The same text files byte for byte and the same PNG pixels, whichever process drew what."""
    from PIL import Image

    import covbench.reports.report as report

    folders = {}
    for workers in (0, 1):
        folder = shutil.copytree(many_models, tmp_path / str(workers) / "run")
        monkeypatch.setattr(report, "spare_cores", lambda n=workers: n)
        report.write_report(folder)
        folders[workers] = folder
    alone, shared = folders[0], folders[1]
    written = sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file())
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) >= 6
    for name in pngs:
        assert np.array_equal(np.asarray(Image.open(alone / name)), np.asarray(Image.open(shared / name)))
    for name in [p for p in written if p.suffix in (".md", ".csv", ".json", ".tex")]:
        assert (alone / name).read_bytes() == (shared / name).read_bytes(), name
    html = [(f / "report.html").read_text().replace(str(f.resolve()), "RUN") for f in (alone, shared)]
    assert html[0] == html[1]
