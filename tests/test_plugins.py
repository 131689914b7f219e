"""Plugins end to end: the external example package, a broken plugin, the smp family, model
selection and per-model options, through the library and the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from plugin_packages import pip_install, write_plugin
from typer.testing import CliRunner

from covbench import registry
from covbench.cli import app
from covbench.config import parse_model_options
from covbench.errors import CovbenchError
from covbench.registry import resolve_models

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "attention-unet"


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- model selection and options (no training) -------------------------------------------------


def test_all_is_every_registered_model_and_families_only_when_named():
    assert resolve_models("all") == registry.list_models()
    assert not any(":" in name for name in resolve_models("all"))
    assert resolve_models("paper") == ["unet", "unetpp", "resunet"]
    assert resolve_models("unet, smp:UnetPlusPlus:resnet34,unet") == ["unet", "smp:UnetPlusPlus:resnet34"]
    assert resolve_models("paper,smp:FPN:tu-convnext_atto")[-1] == "smp:FPN:tu-convnext_atto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smp:unet:resnet18", "unknown architecture 'unet' in 'smp:unet:resnet18'; did you mean 'Unet'?"),
        ("smp:Unet:resnet999", "unknown encoder 'resnet999'"),
        ("smp:FPN:tu-nosuchnet", "timm has no model 'nosuchnet'"),
        ("smp:Unet", "is not of the form smp:<Arch>:<encoder>"),
        ("nofamily:x:y", "unknown model family 'nofamily'"),
    ],
)
def test_bad_family_names_say_what_is_valid(text, message):
    with pytest.raises(CovbenchError, match=message):
        resolve_models(text)


def test_model_options_are_parsed_json_ish():
    models = ["unetpp", "unet", "smp:Unet:tu-vit_small_patch16_224.augreg_in21k"]
    options = parse_model_options(
        [
            "unetpp.deep_supervision=false",
            "unetpp.inference=prune",
            "unet.width=32",
            "unet.batch_norm=True",
            "smp:Unet:tu-vit_small_patch16_224.augreg_in21k.decoder_channels=[64, 32, 16, 8, 4]",
            "smp:Unet:tu-vit_small_patch16_224.augreg_in21k.encoder_depth=4.5",
        ],
        models,
    )
    assert options == {
        "unetpp": {"deep_supervision": False, "inference": "prune"},
        "unet": {"width": 32, "batch_norm": True},
        "smp:Unet:tu-vit_small_patch16_224.augreg_in21k": {
            "decoder_channels": [64, 32, 16, 8, 4],
            "encoder_depth": 4.5,
        },
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("unet", "expected MODEL.KEY=VALUE"),
        ("unet=3", "expected MODEL.KEY=VALUE"),
        ("resunet.width=8", "model 'resunet' is not selected by --models (unet)"),
    ],
)
def test_bad_model_options_name_the_option(item, message):
    with pytest.raises(CovbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_model_options([item], ["unet"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "unet", "--model-option", "unet.nope=1"], "failed the contract check at build"),
        (["--models", "unet", "--model-option", "resunet.width=8"], "is not selected by --models"),
        (  # a combination smp accepts by name but that can't run at this size; brackets survive
            ["--models", "smp:DPT:tu-vit_tiny_patch16_224"],
            "FAMILY [smp:DPT:tu-vit_tiny_patch16_224], from covbench 0.1.0) failed the contract check at "
            "training forward: AssertionError: Input height (32) doesn't match model (224)",
        ),
        (
            ["--models", "smp:Unet:resnet18", "--model-option", "smp:Unet:resnet18.width=8"],
            "--model-option smp:Unet:resnet18.width: this model has no width knob",
        ),
        (
            ["--models", "smp:Unet:resnet18", "--model-option", "smp:Unet:resnet18.encoder_weights=imagenet"],
            "not in the local Hugging Face cache and covbench never downloads weights",
        ),
        (
            ["--models", "smp:Unet:resnet18", "--model-option", "smp:Unet:resnet18.activation=sigmoid"],
            "Unet has no option 'activation'",
        ),
    ],
)
def test_run_refuses_bad_options_before_any_work(args, message, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--preset", "smoke", "--seeds", "1", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists()


def test_requested_weights_unavailable_offline_name_the_download(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    spec = registry.get_model("smp:Unet:resnet18")
    with pytest.raises(CovbenchError) as err:
        spec.create(encoder_weights="imagenet")
    text = str(err.value)
    assert text.startswith("--model-option smp:Unet:resnet18.encoder_weights=imagenet:")
    assert "huggingface-cli download smp-hub/resnet18.imagenet --revision" in text
    with pytest.raises(CovbenchError, match="encoder_weights='nosuch' does not exist for encoder 'resnet18'"):
        spec.create(encoder_weights="nosuch")


# --- the CLI: models --all and models check work offline -------------------------------------


def test_models_all_lists_families_and_how_to_name_members():
    result = runner.invoke(app, ["models", "--all", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "pattern smp:<Arch>:<encoder>" in text
    for arch in ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Segformer"):
        assert arch in text
    assert "resnet18" in text and "tu-<timm model" in text
    assert "examples smp:Unet:resnet18, smp:UnetPlusPlus:resnet34, smp:FPN:tu-convnext_atto" in text
    assert "unet" in text and "8,222,529" in text  # the registered models are still listed
    plain = runner.invoke(app, ["models", "--preset", "smoke"])
    assert plain.exit_code == 0 and "pattern smp" not in _flat(plain.output)


def test_models_check_smp_member_offline():
    result = runner.invoke(app, ["models", "check", "smp:Unet:resnet18", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "14,321,937" in text and "ok: 1 model(s) meet the covbench model contract" in text


def test_models_check_reports_a_bad_option_with_exit_2():
    result = runner.invoke(
        app, ["models", "check", "paper", "--preset", "smoke", "--model-option", "unetpp.inference=guess"]
    )
    assert result.exit_code == 2
    assert "model 'unetpp' (entry point covbench.plugins.unetpp:SPEC, from covbench" in _flat(result.output)
    assert "inference must be one of" in _flat(result.output)


# --- a broken plugin never starts a run ----------------------------------------------------------


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """Two plugins: one whose module fails to import, one that imports but returns two channels."""
    site = tmp_path / "site"
    pip_install(
        write_plugin(
            tmp_path,
            "covbench-import-broken",
            "import_broken",
            "import-broken",
            "raise ImportError('missing dependency xyz')\n",
        ),
        site,
    )
    pip_install(
        write_plugin(
            tmp_path,
            "covbench-shape-broken",
            "shape_broken",
            "shape-broken",
            """
            import torch
            from covbench.registry import ModelSpec

            def build(in_channels=1, classes=1, width=2):
                return torch.nn.Conv2d(in_channels, 2, 3, padding=1)  # ignores `classes`

            SPEC = ModelSpec(
                name="shape-broken", build=build, title="Broken", reference="none", paper_width=2
            )
            """,
        ),
        site,
    )
    monkeypatch.syspath_prepend(str(site))
    registry.reload()
    yield
    registry.reload()


def test_broken_plugins_stop_the_run_before_it_starts(broken_plugins, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["run", "--models", "unet,shape-broken", "--preset", "smoke", "--seeds", "1", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert (
        "model 'shape-broken' (entry point shape_broken:SPEC, from covbench-shape-broken 0.0.1) "
        "failed the contract check at training forward: output has shape (2, 2, 32, 32), "
        "expected (2, 1, 32, 32)"
    ) in text
    assert not (out / "trials").exists() and not out.exists()

    result = runner.invoke(app, ["run", "--models", "import-broken", "--preset", "smoke", "--out", str(out)])
    assert result.exit_code == 2
    assert (
        "model plugin 'import-broken' (import_broken:SPEC, from covbench-import-broken) failed to load: "
        "ImportError: missing dependency xyz"
    ) in _flat(result.output)
    assert not out.exists()


def test_models_still_lists_the_others_next_to_broken_plugins(broken_plugins):
    result = runner.invoke(app, ["models", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "U-Net" in text and "shape-broken" in text  # it builds; only the check catches its shape
    assert "broken plugin import-broken (import_broken:SPEC, from covbench-import-broken)" in text
    check = runner.invoke(app, ["models", "check", "shape-broken", "--preset", "smoke"])
    assert check.exit_code == 2 and "expected (2, 1, 32, 32)" in _flat(check.output)


# --- the external example package and a mixed run, through Ray ---------------------------------


@pytest.fixture(scope="module")
def attention_unet(plugin_site, tmp_path_factory):
    """Install examples/attention-unet into the session's plugin site: that folder has been on
    PYTHONPATH since before Ray started (conftest.plugin_site), so Ray workers import the package
    too; this process gets it on sys.path here. Removed again afterwards."""
    project = tmp_path_factory.mktemp("src") / "attention-unet"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    before = set(plugin_site.iterdir())
    pip_install(project, plugin_site)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_site))
        registry.reload()
        yield "attention-unet"
    for path in set(plugin_site.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for module in [m for m in sys.modules if m.startswith("covbench_attention_unet")]:
        del sys.modules[module]
    registry.reload()


@pytest.fixture(scope="module")
def mixed_run(attention_unet, ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mixed"
    args = ["run", "--preset", "smoke", "--seeds", "1", "--epochs", "1", "--out", str(out)]
    args += ["--models", "paper,attention-unet,smp:Unet:resnet18"]
    args += ["--model-option", "smp:Unet:resnet18.decoder_channels=[32,16,8,8,8]"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_installed_example_is_registered_with_its_distribution(attention_unet):
    spec = registry.get_model(attention_unet)
    assert spec.title == "Attention U-Net" and spec.paper_params == 32_081_925
    origin = registry.model_origin(attention_unet)
    assert (origin.entry_point, origin.distribution) == (
        "covbench_attention_unet:SPEC",
        "covbench-attention-unet",
    )
    result = runner.invoke(app, ["models", "check", attention_unet, "--preset", "smoke"])
    assert result.exit_code == 0, result.output


def test_example_plugin_trains_through_ray(mixed_run):
    record = json.loads((mixed_run / "trials" / "attention-unet__seed0__fold0" / "record.json").read_text())
    assert record["status"] == "done" and record["model"] == "attention-unet"
    assert record["width"] == 4 and record["parameters"] > 0


def test_mixed_run_records_params_and_flops_per_model(mixed_run):
    import segmentation_models_pytorch as smp

    models = json.loads((mixed_run / "models.json").read_text())
    assert set(models["models"]) == {"unet", "unetpp", "resunet", "attention-unet", "smp:Unet:resnet18"}
    assert models["image_size"] == 32 and models["batch_size"] == 8
    for name, entry in models["models"].items():
        record = json.loads(
            (mixed_run / "trials" / f"{name.replace(':', '_')}__seed0__fold0" / "record.json").read_text()
        )
        assert entry["parameters"] == record["parameters"], name  # the check built what the trial trained
        assert entry["flops_per_image"] > 0 and entry["activation_bytes_per_batch"] > 0, name
    smp_entry = models["models"]["smp:Unet:resnet18"]
    expected = smp.Unet(
        "resnet18", encoder_weights=None, in_channels=1, classes=1, decoder_channels=[32, 16, 8, 8, 8]
    )
    assert smp_entry["parameters"] == sum(p.numel() for p in expected.parameters())
    assert smp_entry["options"] == {"decoder_channels": [32, 16, 8, 8, 8]}
    assert models["models"]["attention-unet"]["distribution"] == "covbench-attention-unet"
    config = json.loads((mixed_run / "config.json").read_text())
    assert config["model_options"] == {"smp:Unet:resnet18": {"decoder_channels": [32, 16, 8, 8, 8]}}
