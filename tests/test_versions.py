"""Code versions are part of what a run is: resuming with another covbench or model-plugin version
is refused unless the user allows it, and then the report says so."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
from plugin_packages import pip_install, write_plugin
from typer.testing import CliRunner

from covbench import registry
from covbench.cli import app
from covbench.config import PRESETS, build_config
from covbench.errors import CovbenchError
from covbench.folder.key import RunKey
from covbench.folder.manifest import code_versions
from covbench.folder.state import check_run_dir
from covbench.folder.stored_config import StoredConfig, read_stored_config

runner = CliRunner()
COVBENCH = version("covbench")

TOY = """
import torch
from covbench.registry import ModelSpec

def build(in_channels=1, classes=1):
    return torch.nn.Conv2d(in_channels, classes, 1)

SPEC = ModelSpec(name="toyversioned", build=build)
"""


def test_a_plugins_distribution_version_is_recorded(tmp_path, monkeypatch):
    """The distribution is found from the model's entry point (a real installed package)."""
    target = tmp_path / "site"
    pip_install(write_plugin(tmp_path, "toy-versioned", "toy_versioned", "toyversioned", TOY), target)
    monkeypatch.syspath_prepend(str(target))  # this process only: Ray workers never see it
    registry.reload()
    try:
        assert code_versions(["unet", "toyversioned"]) == {"covbench": COVBENCH, "toy-versioned": "0.0.1"}
    finally:
        monkeypatch.undo()
        registry.reload()
    assert code_versions(["unet", "resunet"]) == {"covbench": COVBENCH}  # built-ins ship with covbench


def test_other_versions_are_refused_unless_allowed(tmp_path):
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    key = f"{cfg.key()}-aaaaaaaaaaaa"
    old = {"covbench": "0.0.9", "toy-versioned": "1.0"}
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": key, "_versions": old}))
    now = {"covbench": "0.1.0", "toy-versioned": "1.0"}
    with pytest.raises(CovbenchError) as err:
        check_run_dir(tmp_path, cfg, now)
    message = str(err.value)
    assert "trained with covbench 0.0.9; this install has covbench 0.1.0" in message
    assert "--allow-version-change" in message and "toy-versioned" not in message  # only what changed
    check_run_dir(tmp_path, cfg, old)  # same versions: fine
    stored = check_run_dir(tmp_path, cfg, now, allow_version_change=True)
    stored.continued(cfg, RunKey.parse(key), now, None).write(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["_versions"] == now and record["_key"] == key
    (change,) = record["_version_changes"]
    assert change["from"] == {"covbench": "0.0.9"} and change["to"] == {"covbench": "0.1.0"}

    # a folder written before versions were recorded has nothing to compare: accepted
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": key}))
    stored = check_run_dir(tmp_path, cfg, now)
    assert "_version_changes" not in stored.continued(cfg, RunKey.parse(key), now, None).to_dict()


def test_stored_config_reads_back_what_it_writes_and_refuses_what_is_no_configuration(tmp_path):
    """config.json keeps its format (the private entries beside the configuration), round trips
    exactly, and a file that is JSON but no covbench configuration is damaged, naming the file."""
    from covbench.errors import DamagedFile

    cfg = build_config(models=["unet"], n_seeds=2, preset=PRESETS["smoke"])
    key = RunKey.of(cfg.key(), "f" * 64)
    amp = {"requested": "auto", "resolved": "off", "device": "cpu"}
    first = StoredConfig.new(cfg).continued(cfg, key, {"covbench": "0.0.9"}, amp)
    first.write(tmp_path)
    again = read_stored_config(tmp_path)
    assert again == first and again.config.key() == cfg.key() and again.key == key
    assert StoredConfig.from_dict(again.to_dict()) == again
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["_key"] == f"{cfg.key()}-{'f' * 12}" and on_disk["_amp"] == amp
    later = again.continued(cfg, key, {"covbench": "0.1.0"}, amp)  # a change is appended, not replaced
    assert [c["to"] for c in later.version_changes] == [{"covbench": "0.1.0"}]
    (tmp_path / "config.json").write_text(json.dumps({"models": ["unet"], "not_a_field": 1}))
    with pytest.raises(DamagedFile, match="config.json is damaged .not a covbench configuration"):
        read_stored_config(tmp_path)


@pytest.mark.slow
def test_allowed_version_change_is_recorded_and_reported(ray_session, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--epochs", "1"]
    args += ["--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["_versions"] == {"covbench": COVBENCH}
    record = json.loads((out / "trials/unet__seed0__fold0/record.json").read_text())
    assert record["versions"] == {"covbench": COVBENCH}  # which code trained this trial
    config["_versions"] = {"covbench": "0.0.9"}  # as if an older covbench had trained it
    (out / "config.json").write_text(json.dumps(config))

    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    assert f"trained with covbench 0.0.9; this install has covbench {COVBENCH}" in said

    allowed = runner.invoke(app, [*args, "--allow-version-change"])
    assert allowed.exit_code == 0, allowed.output
    assert "0 trials run, 1 already done" in allowed.output  # nothing retrained: the user said so
    text = " ".join(allowed.output.split())
    assert f"(covbench 0.0.9 before, covbench {COVBENCH} after; --allow-version-change)" in text
    config = json.loads((out / "config.json").read_text())
    assert config["_versions"] == {"covbench": COVBENCH} and len(config["_version_changes"]) == 1
    assert "--allow-version-change" in (out / "report.md").read_text()
    assert runner.invoke(app, args).exit_code == 0  # the folder now carries the new versions
