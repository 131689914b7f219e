"""The smallest plugins that work: a model declared with only a name and a builder, and a
third-party dataset adapter declaring its capabilities on its spec, installed as throwaway
packages and run end to end through `covbench run` (in-process, `--debug`, to spare a Ray start;
tests/test_plugins.py runs an installed plugin through Ray)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_packages import pip_install, write_plugin
from typer.testing import CliRunner

from covbench import registry
from covbench.cli import app
from covbench.config import PRESETS, build_config
from covbench.datasets.phantom import patient_volumes
from covbench.datasets.prepare import prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.errors import CovbenchError

runner = CliRunner()

TINYNET = """
import torch
from covbench.registry import ModelSpec


def build(in_channels=1, classes=1):
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, classes, 1)
    )


SPEC = ModelSpec(name="tinynet", build=build)
"""

TOY_DATA = """
from pathlib import Path

import numpy as np
from covbench.datasets import Case
from covbench.errors import CovbenchError
from covbench.registry import DatasetSpec


def case_files(data_dir, **_):
    return sorted(Path(data_dir).glob("*.npz"))


def load(data_dir, *, skip_bad=False, bad=None):
    for path in case_files(data_dir):
        try:
            with np.load(path) as z:
                case = Case(path.stem, z["image"], z["lesion"], z["lung"], tuple(z["spacing"]), "toy",
                            files=(str(path),))
        except (OSError, ValueError, KeyError) as exc:
            if not skip_bad:
                raise CovbenchError(f"{path}: unreadable ({exc})") from None
            bad.append(f"{path}: unreadable")
            continue
        yield case


SPEC = DatasetSpec(name="toy-npz", load=load, case_files=case_files, skips_bad=True)
"""


@pytest.fixture(scope="module")
def minimal_plugins(tmp_path_factory):
    """tinynet (covbench.models) and toy-npz (covbench.datasets), installed into a private folder."""
    root, site = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    pip_install(write_plugin(root, "covbench-tinynet", "tinynet", "tinynet", TINYNET), site)
    project = write_plugin(
        root, "covbench-toy-npz", "toy_npz", "toy-npz", TOY_DATA, group="covbench.datasets"
    )
    pip_install(project, site)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        registry.reload()
        yield
    for module in [m for m in sys.modules if m in ("tinynet", "toy_npz")]:
        del sys.modules[module]
    registry.reload()


@pytest.fixture()
def toy_data(tmp_path) -> Path:
    """Six small phantom patients as the toy format: one .npz per patient."""
    folder = tmp_path / "toy"
    folder.mkdir()
    for i in range(6):
        hu, lesion, lung, spacing = patient_volumes(np.random.default_rng([7, i]), 48, 12)
        np.savez(
            folder / f"p{i}.npz", image=hu, lesion=lesion, lung=(lung > 0).astype(np.uint8), spacing=spacing
        )
    return folder


def test_a_name_and_a_builder_make_a_model(minimal_plugins):
    spec = registry.get_model("tinynet")
    assert (spec.title, spec.reference, spec.paper_width, spec.has_width) == ("tinynet", "", 0, False)
    assert spec.create().__class__.__name__ == "Sequential"  # built without any width argument
    with pytest.raises(CovbenchError, match="model 'tinynet' has no width knob"):
        spec.create(width=8)
    with pytest.raises(CovbenchError, match="--model-option tinynet.width: this model has no width knob"):
        spec.run_arguments(8, {"width": 8})
    assert spec.run_arguments(8, {}) == (0, {})  # a run-level width leaves it at its own size
    check = runner.invoke(app, ["models", "check", "tinynet", "--preset", "smoke"])
    assert check.exit_code == 0, check.output
    listing = runner.invoke(app, ["models", "--preset", "smoke"])
    assert listing.exit_code == 0 and "tinynet" in listing.output and "broken" not in listing.output


def test_an_explicit_width_on_a_model_without_a_width_knob_is_refused(minimal_plugins, tmp_path):
    """A preset's width leaves tinynet at its own size (the end-to-end run below); `--width` given
    on the command line is a one-line error naming the model, from the library and from the CLI."""
    message = "--width 8: model 'tinynet' has no width knob"
    with pytest.raises(CovbenchError, match=message):
        build_config(models=["unet", "tinynet"], n_seeds=1, preset=PRESETS["smoke"], width=8)
    assert build_config(models=["tinynet"], n_seeds=1, preset=PRESETS["smoke"]).width == 4  # the preset's
    out = tmp_path / "run"
    for args in (["run", "--models", "tinynet", "--out", str(out)], ["models", "check", "tinynet"]):
        result = runner.invoke(app, [*args, "--preset", "smoke", "--width", "8"])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_the_dataset_spec_declares_its_capabilities(minimal_plugins, toy_data, tmp_path):
    spec = registry.get_dataset("toy-npz")
    assert spec.title == "toy-npz" and spec.skips_bad and spec.case_files is not None
    cfg = PreprocessConfig(image_size=32)
    first = prepare_slices("toy-npz", toy_data, cfg, cache_dir=tmp_path / "cache")
    assert first.n_cases == 6 and not first.cache_hit and set(first.slices.source) == {"toy"}
    again = prepare_slices("toy-npz", toy_data, cfg, cache_dir=tmp_path / "cache")
    assert again.cache_hit and again.fingerprint == first.fingerprint  # case_files keyed the cache
    (toy_data / "p9.npz").write_bytes(b"not a zip")
    with pytest.raises(CovbenchError, match=r"p9\.npz: unreadable"):
        prepare_slices("toy-npz", toy_data, cfg, cache_dir=tmp_path / "cache")
    skipped = prepare_slices("toy-npz", toy_data, cfg, cache_dir=tmp_path / "cache", skip_bad=True)
    assert skipped.n_cases == 6 and len(skipped.skipped) == 1 and "p9.npz" in skipped.skipped[0]
    with pytest.raises(CovbenchError, match="dataset 'toy-npz' needs a data folder"):
        prepare_slices("toy-npz", None, cfg)


def test_both_minimal_plugins_run_end_to_end(minimal_plugins, toy_data, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--models", "tinynet", "--dataset", "toy-npz", "--data-dir", str(toy_data)]
    args += ["--preset", "smoke", "--seeds", "1", "--epochs", "1", "--debug", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "trials" / "tinynet__seed0__fold0" / "record.json").read_text())
    assert record["status"] == "done" and record["width"] == 0 and record["parameters"] == 45
    models = json.loads((out / "models.json").read_text())["models"]
    assert models["tinynet"]["title"] == "tinynet"
    assert json.loads((out / "config.json").read_text())["dataset"] == "toy-npz"
    assert (out / "report.md").is_file()
