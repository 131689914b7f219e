"""Model and dataset registries, filled from the entry-point groups `covbench.models` and
`covbench.datasets`.

The project registers its own architectures through the same entry points a third-party package
uses, so there is exactly one way in. Entry points are loaded lazily, once per process.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from covbench.errors import CovbenchError

MODEL_GROUP = "covbench.models"
DATASET_GROUP = "covbench.datasets"
REFERENCE_WIDTH = 64  # `--width` is given in channels of a model whose paper width is 64


@dataclass(frozen=True)
class ModelSpec:
    """What a model plugin declares. `build` returns an `nn.Module` whose forward gives logits
    (B, classes, H, W); a deep-supervised model returns a list of such logits while training and
    one tensor in eval mode."""

    name: str  # registry key, used on the command line (`--models unet`)
    build: Callable[..., Any]  # build(in_channels=1, classes=1, width=paper_width, **options)
    title: str  # human name for tables
    reference: str  # literature reference (authors, venue, year)
    paper_width: int  # channels of the first level at the paper's size
    paper_params: int | None = None  # parameter count at paper width, 1 in / 1 out channel
    deep_supervision: bool = False  # forward returns a list of logits in training mode
    options: Mapping[str, Any] = field(default_factory=dict)  # documented default options

    def create(self, in_channels: int = 1, classes: int = 1, width: int | None = None, **options: Any):
        """Build the model; `None` options fall back to the plugin's defaults (as timm does)."""
        kwargs = {k: v for k, v in {**self.options, **options}.items() if v is not None}
        return self.build(
            in_channels=in_channels,
            classes=classes,
            width=self.paper_width if width is None else width,
            **kwargs,
        )

    def scaled_width(self, width: int | None) -> int:
        """The width this model gets for a run-level `--width`: runs scale every model by the same
        fraction, `width / 64` of its paper width (so U-Net and Res-UNet get `width` first-level
        channels, U-Net++ with paper width 32 gets half), keeping the paper's relative sizes."""
        if width is None:
            return self.paper_width
        return max(1, round(width * self.paper_width / REFERENCE_WIDTH))


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset adapter declares. `load(data_dir, **options)` yields `covbench.datasets.Case`."""

    name: str
    load: Callable[..., Iterable[Any]]
    title: str
    reference: str = ""
    needs_data_dir: bool = True  # False for built-in data (the phantom)
    default_split: str = "patient"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load; kept so `covbench models` can say why."""

    name: str
    entry_point: str
    distribution: str
    error: str


def _load_group(group: str, kind: type) -> tuple[dict[str, Any], dict[str, BrokenPlugin]]:
    loaded: dict[str, Any] = {}
    origin: dict[str, str] = {}
    broken: dict[str, BrokenPlugin] = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        try:
            obj = ep.load()
            if not isinstance(obj, kind):
                raise TypeError(f"resolved to {type(obj).__name__}, expected {kind.__name__}")
            if obj.name != ep.name:
                raise ValueError(f"entry point name {ep.name!r} differs from spec name {obj.name!r}")
        except Exception as exc:  # a broken plugin must not hide the others
            broken[ep.name] = BrokenPlugin(ep.name, ep.value, dist, f"{type(exc).__name__}: {exc}")
            continue
        if ep.name in loaded:
            warnings.warn(
                f"{group}: {ep.name!r} from {dist} overrides the one from {origin[ep.name]}",
                stacklevel=2,
            )
        loaded[ep.name] = obj
        origin[ep.name] = dist
    return loaded, broken


@cache
def _models() -> tuple[dict[str, ModelSpec], dict[str, BrokenPlugin]]:
    return _load_group(MODEL_GROUP, ModelSpec)


@cache
def _datasets() -> tuple[dict[str, DatasetSpec], dict[str, BrokenPlugin]]:
    return _load_group(DATASET_GROUP, DatasetSpec)


def reload() -> None:
    """Forget loaded entry points (after installing a plugin in the same process)."""
    _models.cache_clear()
    _datasets.cache_clear()


def list_models(pattern: str = "*", exclude: Iterable[str] = ()) -> list[str]:
    """Registered model names matching an fnmatch pattern, sorted."""
    names = [n for n in _models()[0] if fnmatch.fnmatch(n, pattern)]
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, e) for e in exclude))


def broken_models() -> dict[str, BrokenPlugin]:
    return dict(_models()[1])


def get_model(name: str) -> ModelSpec:
    specs, broken = _models()
    if name in specs:
        return specs[name]
    if name in broken:
        b = broken[name]
        raise CovbenchError(
            f"model plugin {name!r} ({b.entry_point}, from {b.distribution}) failed to load: {b.error}"
        )
    raise CovbenchError(f"unknown model {name!r}; available: {', '.join(list_models()) or 'none'}")


def list_datasets() -> list[str]:
    return sorted(_datasets()[0])


def get_dataset(name: str) -> DatasetSpec:
    specs, broken = _datasets()
    if name in specs:
        return specs[name]
    if name in broken:
        b = broken[name]
        raise CovbenchError(
            f"dataset plugin {name!r} ({b.entry_point}, from {b.distribution}) failed: {b.error}"
        )
    raise CovbenchError(f"unknown dataset {name!r}; available: {', '.join(list_datasets()) or 'none'}")


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
