"""Input a hostile user tries (issue 38) is refused the way every bad input is: exit 2, one line on
stderr under 500 characters naming the file or option, no traceback, nothing written. The gate
never passes a baseline it cannot interpret."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from click.testing import Result
from test_ci_examples import GITHUB, GITLAB, covbench_lines, github_shell, gitlab_shell
from typer.testing import CliRunner

from covbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "reports" / "baselines" / "ci.json"
runner = CliRunner()


def refused(result: Result, *named: str, folder: Path | None = None) -> str:
    """Assert `result` is a one-line refusal (exit 2) naming each of `named`; `folder` holds no new
    file. Returns the line."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:2000]
    assert len(lines[0]) < 500, lines[0][:600]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for name in named:
        assert name in lines[0], (name, lines[0])
    if folder is not None:
        assert not list(folder.iterdir()), list(folder.iterdir())
    return lines[0]


def files(tmp_path: Path) -> set[Path]:
    return set(tmp_path.rglob("*"))


# --- 1. the gate: schema and identity -------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads(BASELINE.read_text())


def run_folder(tmp_path: Path, summary: dict) -> Path:
    """A run folder as the gate sees one: summary.json with the run's own config.json beside it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    identity = summary["benchmark"]
    config = {k: v for k, v in identity.items() if k not in ("data_fingerprint", "unit", "distance_unit")}
    (run / "config.json").write_text(json.dumps(config))
    (run / "environment.json").write_text(json.dumps({"data_fingerprint": identity["data_fingerprint"]}))
    return run


def _future(data: dict) -> dict:
    return {**data, "schema": 99}


def _schemaless(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "schema"}


def _identityless(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "benchmark"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_future, "summary schema 99 is newer than this covbench reads (1 to 2)"),
        (lambda d: {**d, "schema": "2"}, "summary schema '2' is not a schema covbench writes"),
        (lambda d: {**d, "schema": True}, "summary schema True is not a schema covbench writes"),
        (
            _schemaless,
            "no 'schema', so it reads as schema 1, but holds primary, inference, verdicts, unit_values",
        ),
    ],
    ids=["future", "text", "bool", "missing"],
)
def test_the_gate_refuses_a_baseline_of_a_schema_it_cannot_read(tmp_path, good, change, message):
    """Next to a run folder with its own config.json (the case that passed before)."""
    current = run_folder(tmp_path, good)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(change(good)))
    before = files(tmp_path)
    line = refused(runner.invoke(app, ["compare", str(baseline), str(current)]), f"BASELINE {baseline}")
    assert message in line
    assert files(tmp_path) == before  # no gate.json in the run folder


def test_a_schema_1_summary_still_reads(tmp_path, good):
    """What covbench wrote before schema 2 (no schema, none of its fields) is still refused only for
    lacking per-seed values, as before, and compared when its run folder has cases.csv."""
    old = {k: v for k, v in _schemaless(good).items() if k not in ("primary", "inference", "verdicts")}
    old.pop("unit_values")
    baseline = tmp_path / "old.json"
    baseline.write_text(json.dumps(old))
    line = refused(runner.invoke(app, ["compare", str(baseline), str(BASELINE)]), f"BASELINE {baseline}")
    assert "no per-seed values (unit_values" in line


def test_require_identity_refuses_a_baseline_without_one(tmp_path, good):
    current = run_folder(tmp_path, good)
    baseline = tmp_path / "copied.json"
    baseline.write_text(json.dumps(_identityless(good)))
    lenient = runner.invoke(app, ["compare", str(baseline), str(current)])
    assert lenient.exit_code == 0, lenient.output
    assert "carries no benchmark identity" in lenient.stderr
    (current / "gate.json").unlink()
    before = files(tmp_path)
    strict = runner.invoke(app, ["compare", str(baseline), str(current), "--require-identity"])
    line = refused(strict, f"BASELINE {baseline}", "--require-identity")
    assert "no benchmark identity" in line and files(tmp_path) == before
    loose = tmp_path / "loose.json"  # a CURRENT without one is refused the same way
    loose.write_text(json.dumps(_identityless(good)))
    refused(
        runner.invoke(app, ["compare", str(BASELINE), str(loose), "--require-identity"]), f"CURRENT {loose}"
    )


def test_the_committed_baseline_passes_the_strict_gate(tmp_path, good):
    """reports/baselines/ci.json carries its identity ("benchmark", written by --update), so the CI
    gate's --require-identity finds it; against a run folder of the same benchmark it passes."""
    assert isinstance(good["benchmark"], dict) and good["schema"] == 2
    current = run_folder(tmp_path, good)
    result = runner.invoke(app, ["compare", str(BASELINE), str(current), "--require-identity"])
    assert result.exit_code == 0, result.output
    assert "All " in result.output and "checks passed" in result.output
    assert "identity" not in result.stderr


def gate_commands() -> list[tuple[str, str]]:
    """The `covbench compare` line of .ci/run and of both CI examples."""
    shells = {".ci/run": (ROOT / ".ci" / "run").read_text(), "github": github_shell(GITHUB)}
    shells["gitlab"] = gitlab_shell(GITLAB)
    return [
        (name, line) for name, text in shells.items() for line in covbench_lines(text) if " compare " in line
    ]


@pytest.mark.parametrize(("name", "line"), gate_commands(), ids=[n for n, _ in gate_commands()])
@pytest.mark.parametrize(
    "change", [_schemaless, _future, _identityless], ids=["no-schema", "future", "no-identity"]
)
def test_the_ci_gate_refuses_what_it_cannot_interpret(tmp_path, good, name, line, change):
    """The compare line of each CI script, run as written with the baseline swapped for a damaged
    copy (CURRENT: a run of the same benchmark), exits 2; with the committed baseline it passes."""
    current = run_folder(tmp_path, good)
    args = shlex.split(line.replace('"$BENCH_RUN"', str(current)))[1:]
    assert args[1] == "reports/baselines/ci.json"
    args[1] = str(ROOT / args[1])
    assert runner.invoke(app, args).exit_code == 0
    bad = tmp_path / "ci.json"
    bad.write_text(json.dumps(change(good)))
    args[1] = str(bad)
    refused(runner.invoke(app, args), f"BASELINE {bad}")


def test_an_implausible_schema_value_is_quoted_short(tmp_path, good):
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({**good, "schema": ["x" * 100_000] * 1000}))
    line = refused(runner.invoke(app, ["compare", str(baseline), str(BASELINE)]), f"BASELINE {baseline}")
    assert "..." in line


# --- 2, 3. the config file: keys that are not names, alias bombs, huge values -------------------


def bomb(levels: int = 8) -> str:
    """The issue's 353-byte "billion laughs": 9 ** 8 = 43 million strings once expanded."""
    parts = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "models: [" + ", ".join(parts) + "]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("? [a, b]\n: 1\n", "a key is a list, expected an option name at line 1"),
        ("? {a: 1}\n: 1\n", "a key is a mapping, expected an option name at line 1"),
        ("epochs: 2\n? [x]\n: 1\n", "a key is a list, expected an option name at line 2"),
        (bomb(), "more than 10000 values, aliases expanded"),
        ("models: &a [*a]\n", "nested more than 20 levels deep"),  # an alias that contains itself
        ("models: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 20 levels deep"),
        ("epochs: " + "x" * 200_000 + "\n", """key 'epochs': expected a whole number, got "xxx"""),
        ("models: [" + ", ".join(["[x]"] * 2000) + "]\n", "key 'models': expected text or a list of texts"),
        ("x" * 200_000 + ": 1\n", "not valid YAML"),
    ],
    ids=["list-key", "mapping-key", "list-key-2", "alias-bomb", "self-alias", "deep", "long", "wide", "key"],
)
def test_a_hostile_config_file_is_refused_in_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(text)
    started = time.monotonic()
    result = runner.invoke(app, ["run", "--config", str(config), "--dry-run"])
    refused(result, str(config), message)
    assert files(tmp_path) == {config}
    assert time.monotonic() - started < 60  # the unbounded bomb took 51 s and printed 351 MB


@pytest.mark.parametrize(
    "option",
    ["models", "preset", "augment", "loss", "amp", "split", "spacing", "track", "primary", "model-option"],
)
def test_a_huge_rejected_value_is_quoted_by_its_first_characters(tmp_path, monkeypatch, option):
    """Every text option of `covbench run` a file can set, given a 100,000-character bad value."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"{option}: {'q' * 100_000}\n")
    line = refused(runner.invoke(app, ["run", "--config", str(config), "--dry-run"]), str(config))
    assert "qqqq..." in line and files(tmp_path) == {config}


def test_a_huge_value_on_the_compare_command_line_is_quoted_short(tmp_path):
    for args in (["--tolerance", "d" * 50_000], ["--metrics", "m" * 50_000]):
        refused(runner.invoke(app, ["compare", str(BASELINE), str(BASELINE), *args]), args[0])


# --- 4, 5. the dry run makes the run's refusals; an implausible plan needs --max-trials ----------


def test_dry_run_refuses_folds_the_data_cannot_hold(tmp_path, monkeypatch):
    """The smoke phantom has 5 patients: --folds 100 is refused by the dry run as by the run, with
    the same line, before the data is pre-processed and after. An empty cache of its own: another
    test's pre-processed smoke phantom would let the dry run check everything."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COVBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--split", "kfold"]
    message = "--folds must be between 2 and the number of patients (5), got 100"
    refused(runner.invoke(app, [*args, "--folds", "100", "--dry-run"]), message, folder=tmp_path)
    dry = runner.invoke(app, [*args, "--folds", "5", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "not checked before the data is read: a lesion in every test set" in dry.output


def test_dry_run_checks_the_split_on_the_cached_data(tiny_run, tmp_path, monkeypatch):
    """With the data pre-processed (the session's tiny run), the dry run makes the run's own split
    checks on the cache: the fold count and nothing left unchecked."""
    import covbench.execution.runner as runner_module

    monkeypatch.chdir(tmp_path)
    cfg = json.loads((tiny_run / "config.json").read_text())
    args = ["run", "--preset", cfg["preset"], "--models", "unet", "--seeds", "1"]
    args += ["--epochs", str(cfg["epochs"]), "--image-size", str(cfg["image_size"]), "--split", "kfold"]
    calls = []
    real = runner_module.split_folds
    monkeypatch.setattr(runner_module, "split_folds", lambda *a: calls.append(a) or real(*a))
    ok = runner.invoke(app, [*args, "--folds", "2", "--dry-run"])
    assert ok.exit_code == 0, ok.output
    assert calls and "not checked" not in ok.output
    refused(runner.invoke(app, [*args, "--folds", "99", "--dry-run"]), "--folds must be between 2")


def test_an_implausible_plan_needs_max_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--preset", "smoke", "--models", "paper", "--seeds", "100000"]  # not `all`: plugins
    for extra in ([], ["--dry-run"]):
        line = refused(runner.invoke(app, [*args, *extra]), "--max-trials 1000", "--seeds", folder=tmp_path)
        assert "300,000 trials" in line and "at least 83.3 h" in line and "--max-trials 300000" in line
    lifted = runner.invoke(app, [*args, "--max-trials", "300000", "--dry-run"])
    assert lifted.exit_code == 0, lifted.output
    assert "trials: 300000 = 3 model(s) x 100000 seed(s)" in lifted.output


def test_the_trial_cap_holds_for_the_largest_plan_of_rounds_of_seeds(tmp_path, monkeypatch):
    """A first round of 3 seeds is small; growing to 500 seeds per model is not."""
    monkeypatch.chdir(tmp_path)
    args = ["run", "--preset", "smoke", "--models", "paper", "--seeds", "3", "--max-seeds", "500"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    line = refused(dry, "--max-trials 1000", "--max-seeds", folder=tmp_path)
    assert "up to 1,500 trials" in line and "--max-trials 1500" in line
    lifted = runner.invoke(app, [*args, "--max-trials", "1500", "--dry-run"])
    assert lifted.exit_code == 0, lifted.output
    refused(runner.invoke(app, [*args, "--max-trials", "0", "--dry-run"]), "--max-trials must be positive")
