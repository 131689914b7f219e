"""Model and dataset registries, filled from the entry-point groups `covbench.models`,
`covbench.families` and `covbench.datasets`.

The project registers its own architectures through the same entry points a third-party package
uses, so there is exactly one way in. Entry points are loaded lazily, once per process.

A *family* (group `covbench.families`) names many models at once: `smp:UnetPlusPlus:resnet34` is
resolved by the family `smp` into an ordinary `ModelSpec` whose name is the whole string. Families
are a separate group because their entry point resolves to a `ModelFamily`, not a `ModelSpec`, and
because `--models all` must not expand them into thousands of members.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from covbench.errors import CovbenchError, quote
from covbench.paths import folder_problem

MODEL_GROUP = "covbench.models"
FAMILY_GROUP = "covbench.families"
DATASET_GROUP = "covbench.datasets"
REFERENCE_WIDTH = 64  # `--width` is given in channels of a model whose paper width is 64
PAPER_MODELS = ("unet", "unetpp", "resunet")  # the three models of Salehi et al. 2023 (`--models paper`)


@dataclass(frozen=True)
class ModelSpec:
    """What a model plugin declares. `build` returns an `nn.Module` whose forward gives logits
    (B, classes, H, W); a deep-supervised model returns a list of such logits while training and
    one tensor in eval mode. Only `name` and `build` are required:

        SPEC = ModelSpec(name="tinynet", build=TinyNet)  # TinyNet(in_channels=1, classes=1)
    """

    name: str  # registry key, used on the command line (`--models unet`)
    build: Callable[..., Any]  # build(in_channels=1, classes=1, **options), + width=... if paper_width
    title: str = ""  # human name for tables; empty: the name
    reference: str = ""  # literature reference (authors, venue, year)
    paper_width: int = 0  # first-level channels at the paper's size; 0 = no width knob (`build` gets none)
    paper_params: int | None = None  # parameter count at paper width, 1 in / 1 out channel
    deep_supervision: bool = False  # forward returns a list of logits in training mode
    options: Mapping[str, Any] = field(default_factory=dict)  # documented default options

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)

    @property
    def has_width(self) -> bool:
        """Whether `build` takes a `width` (the run-level `--width` scales it)."""
        return self.paper_width > 0

    def create(self, in_channels: int = 1, classes: int = 1, width: int | None = None, **options: Any):
        """Build the model; `None` options fall back to the plugin's defaults (as timm does).
        `width` (None or 0: the paper width) is passed only to a model with a width knob."""
        kwargs = {k: v for k, v in {**self.options, **options}.items() if v is not None}
        if self.has_width:
            kwargs["width"] = width or self.paper_width
        elif width:
            raise CovbenchError(f"model {self.name!r} has no width knob (no paper_width in its spec)")
        return self.build(in_channels=in_channels, classes=classes, **kwargs)

    def scaled_width(self, width: int | None) -> int:
        """The width this model gets for a run-level `--width`: runs scale every model by the same
        fraction, `width / 64` of its paper width (so U-Net and Res-UNet get `width` first-level
        channels, U-Net++ with paper width 32 gets half), keeping the paper's relative sizes."""
        if width is None or not self.has_width:
            return self.paper_width
        return max(1, round(width * self.paper_width / REFERENCE_WIDTH))

    def run_arguments(self, run_width: int | None, options: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """(width, options) a run builds this model with: a `width` model option wins over the
        run-level `--width`; shared by the trial and the contract check so both build the same net."""
        options = dict(options)
        if "width" in options and not self.has_width:
            raise CovbenchError(
                f"--model-option {self.name}.width: this model has no width knob (no paper_width in its spec)"
            )
        width = options.pop("width", None) or self.scaled_width(run_width)
        return width, options


@dataclass(frozen=True)
class ModelFamily:
    """What a family plugin declares: one entry point that names many models, e.g. every
    segmentation_models_pytorch architecture with every encoder (`smp:<Arch>:<encoder>`)."""

    name: str  # prefix before the first ':' on the command line (`smp`)
    title: str  # human name for `covbench models --all`
    reference: str  # the library or paper the members come from
    pattern: str  # how members are named, e.g. "smp:<Arch>:<encoder>"
    resolve: Callable[[str], ModelSpec]  # text after "name:" -> spec named "name:text"; CovbenchError if bad
    axes: Callable[[], Mapping[str, Iterable[str]]]  # the choices per naming part, for `models --all`
    examples: tuple[str, ...] = ()  # full member names that work offline


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset adapter declares; every capability is a field, nothing is guessed from the
    adapter's module or signatures. Only `name` and `load` are required (see datasets/README.md)."""

    name: str  # registry key, used on the command line (`--dataset phantom`)
    load: Callable[..., Iterable[Any]]  # load(data_dir, **options) yields `covbench.datasets.Case`
    title: str = ""  # human name for `covbench data list`; empty: the name
    reference: str = ""  # where the data comes from (paper, record, licence)
    needs_data_dir: bool = True  # False for built-in data (the phantom): data_dir may be None
    default_split: str = "patient"  # the `--split` a run uses unless told otherwise
    # case_files(data_dir, **options) -> the files `load` reads, so the pre-processing cache can
    # fingerprint the data without reading it; None: every file under data_dir is hashed
    case_files: Callable[..., Iterable[Path]] | None = None
    # True: `load` also takes `skip_bad: bool` and `bad: list[str]`, and with skip_bad appends the
    # message of each unreadable input to `bad` instead of raising; False: bad input always raises
    skips_bad: bool = False
    # True: `load` also takes `spacing` ((row, col) mm) for slices whose files carry no pixel size,
    # which `covbench run --spacing` passes; False: `--spacing` is refused for this dataset
    takes_spacing: bool = False
    # how `covbench predict` reads new inputs for a run on this dataset
    # (`covbench.datasets.base.InputReader`); None: predict refuses runs on it, saying so
    read_input: Any = None

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)

    def check_data_dir(self, data_dir: str | Path | None) -> Path | None:
        """The data folder as a Path, or a CovbenchError when this dataset needs one and it is
        missing or not a folder. Called before anything is read."""
        if data_dir is None or str(data_dir) == "":
            if self.needs_data_dir:
                raise CovbenchError(f"dataset {self.name!r} needs a data folder (--data-dir)")
            return None
        path = Path(data_dir)
        problem = folder_problem(path)
        if problem and (self.needs_data_dir or problem != "does not exist"):  # a phantom creates it
            raise CovbenchError(f"{path}: data folder {problem}")
        return path

    def load_options(self, options: Mapping[str, Any], skip_bad: bool, bad: list[str]) -> dict[str, Any]:
        """The keyword arguments for `load`: `options`, plus `skip_bad`/`bad` if the adapter takes them."""
        return {**options, "skip_bad": skip_bad, "bad": bad} if self.skips_bad else dict(options)


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load; kept so `covbench models` can say why."""

    name: str
    entry_point: str
    distribution: str
    error: str


@dataclass(frozen=True)
class Origin:
    """Where a registered object came from, for error messages and the run folder."""

    entry_point: str  # "module:attr" (plus "[member]" for a family member)
    distribution: str  # the installed distribution that declared it
    version: str = ""


Group = tuple[dict[str, Any], dict[str, BrokenPlugin], dict[str, Origin]]


def _load_group(group: str, kind: type) -> Group:
    loaded: dict[str, Any] = {}
    origin: dict[str, Origin] = {}
    broken: dict[str, BrokenPlugin] = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        version = ep.dist.version if ep.dist is not None else ""
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
                f"{group}: {ep.name!r} from {dist} overrides the one from {origin[ep.name].distribution}",
                stacklevel=2,
            )
        loaded[ep.name] = obj
        origin[ep.name] = Origin(ep.value, dist, version)
    return loaded, broken, origin


@cache
def _models() -> Group:
    return _load_group(MODEL_GROUP, ModelSpec)


@cache
def _families() -> Group:
    return _load_group(FAMILY_GROUP, ModelFamily)


@cache
def _datasets() -> Group:
    return _load_group(DATASET_GROUP, DatasetSpec)


_members: dict[str, ModelSpec] = {}  # resolved family members, by full name


def reload() -> None:
    """Forget loaded entry points (after installing a plugin in the same process)."""
    _models.cache_clear()
    _families.cache_clear()
    _datasets.cache_clear()
    _members.clear()


def list_models(pattern: str = "*", exclude: Iterable[str] = ()) -> list[str]:
    """Registered model names matching an fnmatch pattern, sorted."""
    names = [n for n in _models()[0] if fnmatch.fnmatch(n, pattern)]
    return sorted(n for n in names if not any(fnmatch.fnmatch(n, e) for e in exclude))


def resolve_models(text: str) -> list[str]:
    """The model names a `--models` text selects, in order, without repeats: `all` (every
    registered model; family members only when named), `paper` (PAPER_MODELS), or a comma list of
    registered names (fnmatch patterns allowed) and family members such as `smp:UnetPlusPlus:resnet34`.
    Raises CovbenchError naming the valid models when an item selects none."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item == "all":
            found = list_models()
        elif item == "paper":
            found = list(PAPER_MODELS)
        elif any(ch in item for ch in "*?["):
            found = list_models(item)
        else:
            found = [get_model(item).name]  # raises with the list of valid names
        if not found:
            raise CovbenchError(
                f"--models {quote(item)} matches no registered model; available: {', '.join(list_models())}"
            )
        names += [n for n in found if n not in names]
    if not names:
        raise CovbenchError("--models is empty")
    return names


def broken_models() -> dict[str, BrokenPlugin]:
    return dict(_models()[1])


def get_model(name: str) -> ModelSpec:
    """The spec of a registered model or of a family member (`family:member`)."""
    if ":" in name:
        return _get_member(name)
    specs, broken, _ = _models()
    if name not in specs and name not in broken:
        # A package installed after the first lookup (a long-lived Ray worker, a notebook).
        reload()
        specs, broken, _ = _models()
    families = ", ".join(f.pattern for f in (_families()[0].values()))
    return _lookup(
        "model plugin", "model", name, specs, broken,
        f"{', '.join(list_models()) or 'none'}" + (f" (and family members {families})" if families else ""),
    )  # fmt: skip


def _lookup(kind: str, short: str, name: str, found: dict, broken: dict[str, BrokenPlugin], available: str):
    """The entry `name`, or a CovbenchError saying why not: which plugin failed to load (with its
    entry point and distribution), or which names exist."""
    if name in found:
        return found[name]
    if name in broken:
        b = broken[name]
        origin = f"{b.entry_point}, from {b.distribution}"
        raise CovbenchError(f"{kind} {quote(name)} ({origin}) failed to load: {b.error}")
    raise CovbenchError(f"unknown {short} {quote(name)}; available: {available}")


def _get_member(name: str) -> ModelSpec:
    if name in _members:
        return _members[name]
    family_name, member = name.split(":", 1)
    family = get_family(family_name)
    spec = family.resolve(member)
    if spec.name != name:
        raise CovbenchError(
            f"model family {family_name!r} resolved {quote(name)} to a spec named {spec.name!r}"
        )
    _members[name] = spec
    return spec


def list_families() -> list[str]:
    return sorted(_families()[0])


def broken_families() -> dict[str, BrokenPlugin]:
    return dict(_families()[1])


def get_family(name: str) -> ModelFamily:
    families, broken, _ = _families()
    return _lookup(
        "model family", "model family", name, families, broken,
        f"{', '.join(list_families()) or 'none'} (in {quote(name + ':...')})",
    )  # fmt: skip


def model_origin(name: str) -> Origin:
    """Entry point and distribution that declared a model (a member's is its family's)."""
    if ":" in name:
        family = name.split(":", 1)[0]
        o = _families()[2].get(family, Origin("?", "<unknown>"))
        return Origin(f"{o.entry_point} [{name}]", o.distribution, o.version)
    specs, broken, origins = _models()
    if name in broken:
        return Origin(broken[name].entry_point, broken[name].distribution)
    return origins.get(name, Origin("?", "<unknown>"))


def list_datasets() -> list[str]:
    return sorted(_datasets()[0])


def get_dataset(name: str) -> DatasetSpec:
    specs, broken, _ = _datasets()
    return _lookup("dataset plugin", "dataset", name, specs, broken, ", ".join(list_datasets()) or "none")


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class BuiltModel:
    """A model as a run builds it, with the width and options it got: what the trial records."""

    model: Any  # a torch.nn.Module if the plugin keeps its contract (covbench.checks checks it)
    width: int
    options: dict[str, Any]

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)


def build_model(spec: ModelSpec, run_width: int | None, options: Mapping[str, Any]) -> BuiltModel:
    """The one front door from a run's `--width` and `--model-option`s to a network: the trial and
    the contract check both build through it, so the net that is checked is the net that trains."""
    width, opts = spec.run_arguments(run_width, options)
    model = spec.create(in_channels=1, classes=1, width=width, **opts)
    return BuiltModel(model, width, opts)
