"""The `smp` model family: every segmentation_models_pytorch architecture with any of its encoders
(timm's `tu-` encoders included), usable as `--models smp:<Arch>:<encoder>` without writing a plugin.

Members are trained from scratch (`encoder_weights=None`), with 1 input channel and 1 class, like
the three reference models. Pretrained weights are opt-in (`--model-option
smp:Unet:resnet18.encoder_weights=imagenet`) and must already be in the local Hugging Face cache:
covbench never downloads weights, so a benchmark can't silently depend on the network.

Width: smp networks have no single "first-level channels" knob (the encoder fixes its own
widths), so the run-level `--width` does not apply to them; their spec sets no `paper_width` and a
`width` model option is refused. Size a member with its own options instead (`decoder_channels`,
`encoder_depth`, or a smaller encoder).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from covbench.errors import CovbenchError, quote
from covbench.registry import ModelFamily, ModelSpec

# The architecture's paper, per smp class name (smp's docstrings give the same links).
REFERENCES: dict[str, str] = {
    "Unet": "Ronneberger, Fischer, Brox. U-Net. MICCAI 2015",
    "UnetPlusPlus": "Zhou et al. UNet++: A Nested U-Net Architecture. DLMIA 2018",
    "MAnet": "Fan et al. MA-Net: A Multi-Scale Attention Network for Liver and Tumor Segmentation. "
    "IEEE Access 2020",
    "Linknet": "Chaurasia, Culurciello. LinkNet. VCIP 2017",
    "FPN": "Kirillov, Girshick, He, Dollar. Panoptic Feature Pyramid Networks. CVPR 2019",
    "PSPNet": "Zhao et al. Pyramid Scene Parsing Network. CVPR 2017",
    "DeepLabV3": "Chen et al. Rethinking Atrous Convolution for Semantic Image Segmentation. arXiv 2017",
    "DeepLabV3Plus": "Chen et al. Encoder-Decoder with Atrous Separable Convolution. ECCV 2018",
    "PAN": "Li et al. Pyramid Attention Network for Semantic Segmentation. BMVC 2018",
    "UPerNet": "Xiao et al. Unified Perceptual Parsing for Scene Understanding. ECCV 2018",
    "Segformer": "Xie et al. SegFormer. NeurIPS 2021",
    "DPT": "Ranftl, Bochkovskiy, Koltun. Vision Transformers for Dense Prediction. ICCV 2021",
}

# Options covbench sets itself or that would break the logits contract (one head, no activation).
RESERVED = {"in_channels", "classes", "encoder_name", "activation", "aux_params", "kwargs"}


def _smp():
    import segmentation_models_pytorch as smp  # imported late: `covbench models` stays quick

    return smp


def architectures() -> dict[str, type]:
    """smp class name -> class, for every architecture this smp version has."""
    return {cls.__name__: cls for cls in _smp().MODEL_ARCHITECTURES_MAPPING.values()}


def encoders() -> list[str]:
    """smp's own encoder names; any timm model with `features_only` support works as `tu-<name>`."""
    return sorted(_smp().encoders.get_encoder_names())


def option_names(arch: str) -> list[str]:
    """Constructor arguments a user may set with `--model-option`."""
    params = inspect.signature(architectures()[arch]).parameters
    return sorted(p for p in params if p not in RESERVED)


def _pick(kind: str, value: str, choices: list[str], example: str) -> str:
    if value in choices:
        return value
    near = [c for c in choices if c.lower() == value.lower()]
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise CovbenchError(
        f"smp family: unknown {kind} {quote(value)} in {quote(example)}{hint} valid: {', '.join(choices)}"
    )


def _check_encoder(encoder: str, name: str) -> None:
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise CovbenchError(
                f"smp family: {quote(name)}: timm has no model {encoder[3:]!r} (see timm.list_models())"
            )
        return
    _pick("encoder", encoder, encoders(), name)


def _weights_cached(encoder: str, weights: Any) -> tuple[bool, str]:
    """Whether the requested encoder weights are in the local Hugging Face cache, and the
    `huggingface-cli download` arguments that would put them there."""
    from huggingface_hub import try_to_load_from_cache

    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            raise CovbenchError(f"encoder_weights: timm knows no Hugging Face weights for {encoder[3:]!r}")
        found = any(
            isinstance(try_to_load_from_cache(repo, f), str)
            for f in ("model.safetensors", "pytorch_model.bin")
        )
        return found, repo
    settings = _smp().encoders.encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise CovbenchError(
            f"encoder_weights={weights!r} does not exist for encoder {encoder!r}; "
            f"available: {', '.join(settings)}"
        )
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    found = isinstance(try_to_load_from_cache(repo, "model.safetensors", revision=revision), str)
    return found, f"{repo} --revision {revision}"


def build(
    arch: str,
    encoder: str,
    name: str,
    in_channels: int = 1,
    classes: int = 1,
    **options: Any,
):  # no `width`: smp members have no width knob (see the module docstring)
    """Build one member from scratch unless `encoder_weights` is given and cached locally."""
    bad = sorted(set(options) - set(option_names(arch)))
    if bad:
        raise CovbenchError(
            f"--model-option {name}.{bad[0]}: {arch} has no option {bad[0]!r}; "
            f"valid: {', '.join(option_names(arch))}"
        )
    weights = options.pop("encoder_weights", None)
    if weights is not None:
        found, where = _weights_cached(encoder, weights)
        if not found:
            raise CovbenchError(
                f"--model-option {name}.encoder_weights={weights}: the weights are not in the local "
                "Hugging Face cache and covbench never downloads weights; fetch them beforehand "
                f"(`huggingface-cli download {where}`) or drop the option to train from scratch"
            )
        if encoder.startswith("tu-"):
            weights = True  # smp's timm-universal encoders take True for "timm's default weights"
    return _smp().create_model(
        arch,
        encoder_name=encoder,
        encoder_weights=weights,
        in_channels=in_channels,
        classes=classes,
        **options,
    )


def resolve(member: str) -> ModelSpec:
    """`<Arch>:<encoder>` -> the spec of `smp:<Arch>:<encoder>`."""
    name = f"smp:{member}"
    parts = member.split(":")
    if len(parts) != 2 or not all(parts):
        raise CovbenchError(
            f"smp family: {quote(name)} is not of the form smp:<Arch>:<encoder>, e.g. smp:Unet:resnet18"
        )
    arch = _pick("architecture", parts[0], sorted(architectures()), name)
    encoder = parts[1]
    _check_encoder(encoder, name)
    return ModelSpec(
        name=name,
        build=functools.partial(build, arch, encoder, name),
        title=f"smp {arch} ({encoder})",
        reference=f"{REFERENCES.get(arch, arch)}; segmentation_models_pytorch {_smp().__version__}",
    )  # no paper_width: no width knob


def axes() -> Mapping[str, list[str]]:
    return {
        "Arch": sorted(architectures()),
        "encoder": [*encoders(), "tu-<timm model with features_only, e.g. tu-convnext_atto>"],
    }


FAMILY = ModelFamily(
    name="smp",
    title="segmentation_models_pytorch architectures x encoders (from scratch)",
    reference="Iakubovskii, Segmentation Models PyTorch, github.com/qubvel-org/segmentation_models.pytorch",
    pattern="smp:<Arch>:<encoder>",
    resolve=resolve,
    axes=axes,
    examples=("smp:Unet:resnet18", "smp:UnetPlusPlus:resnet34", "smp:FPN:tu-convnext_atto"),
)
