"""The model contract check: run before any trial starts, and as `covbench models check NAME`.

A plugin is held to what `ModelSpec` promises: its entry point imports, `build` returns an
`nn.Module`, a training-mode forward pass on a (2, 1, S, S) batch at the run's image size gives
logits (2, 1, S, S) (or a list of them when deep-supervised), a backward pass reaches its
parameters, and an eval-mode forward pass gives one such tensor. A failure names the stage, the
entry point and the distribution, so a broken plugin stops the run before it costs GPU hours.

Measured on the way, always on the CPU so numbers don't depend on the driver's devices:
- parameters: `registry.count_parameters` of the model as the run builds it;
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2 FLOPs; only
  convolutions, matmuls and attention are counted, as in fvcore/ptflops), for one eval-mode
  forward pass per image, and for forward + backward of one training batch;
- activation memory: the bytes of the distinct tensors autograd saves for backward during one
  training forward pass (found with `torch.autograd.graph.saved_tensors_hooks`, parameters
  excluded). That is what a batch holds at the peak between forward and backward, independent of
  the allocator and device; weights, gradients, optimizer state and transient workspaces come on top.
The probe batch is 2 (BatchNorm needs more than one sample in training mode); per-batch numbers
are scaled linearly to the run's batch size, which is exact for convolutional networks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from covbench import registry
from covbench.errors import CovbenchError

if TYPE_CHECKING:
    from covbench.config import RunConfig

PROBE_BATCH = 2
FLOPS_NOTE = (
    "torch.utils.flop_counter.FlopCounterMode on CPU, one multiply-add = 2 FLOPs; flops_per_image: "
    "eval-mode forward of one image; train_flops_per_batch: forward + backward of one training batch"
)
ACTIVATION_NOTE = (
    "bytes of distinct tensors autograd saves for backward in one training forward pass "
    "(saved_tensors_hooks, parameters excluded), measured on a batch of 2 and scaled to the batch size"
)


class ContractError(CovbenchError):
    """A model plugin broke its contract (import, options, build, forward, output, backward)."""


@dataclass(frozen=True)
class ModelCheck:
    """One model's passed contract check, with its size and cost at the run's image size."""

    name: str
    title: str
    reference: str
    entry_point: str
    distribution: str
    version: str
    width: int  # first-level channels it was built with (0: the model has no width knob)
    options: dict[str, Any]
    deep_supervision: bool  # the training forward returned a list of heads
    image_size: int
    batch_size: int  # the run's batch size, which the per-batch numbers are scaled to
    parameters: int
    paper_params: int | None
    flops_per_image: int  # eval-mode forward, one image
    train_flops_per_image: int  # training forward + backward, per image
    activation_bytes_per_image: int
    output_shapes: list[list[int]] = field(default_factory=list)  # training-mode outputs, probe batch
    unused_parameters: int = 0  # parameter tensors that got no gradient (reported, not an error)
    seconds: float = 0.0

    @property
    def flops_per_batch(self) -> int:
        return self.flops_per_image * self.batch_size

    @property
    def train_flops_per_batch(self) -> int:
        return self.train_flops_per_image * self.batch_size

    @property
    def activation_bytes_per_batch(self) -> int:
        return self.activation_bytes_per_image * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "flops_per_batch": self.flops_per_batch,
            "train_flops_per_batch": self.train_flops_per_batch,
            "activation_bytes_per_batch": self.activation_bytes_per_batch,
        }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:600]


class _Stage:
    """Turns any exception inside a `with` block into a ContractError naming model and stage."""

    def __init__(self, name: str, origin: registry.Origin | None = None) -> None:
        self.name = name
        self.origin = origin
        self.stage = "import"

    def fail(self, message: str) -> ContractError:
        o = self.origin or registry.model_origin(self.name)
        dist = f"{o.distribution} {o.version}".strip()
        return ContractError(
            f"model {self.name!r} (entry point {o.entry_point}, from {dist}) failed the contract check "
            f"at {self.stage}: {message}"
        )

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, ContractError | KeyboardInterrupt):
            return False
        if self.stage == "import" and isinstance(exc, CovbenchError):
            return False  # unknown name or broken entry point: the registry's message says it all
        raise self.fail(str(exc) if isinstance(exc, CovbenchError) else _one_line(exc)) from exc


def _outputs(out: Any, stage: _Stage, expected: tuple[int, ...], allow_list: bool) -> list[Any]:
    import torch

    if isinstance(out, list | tuple):
        if not allow_list:
            raise stage.fail(
                f"returned a {type(out).__name__} of {len(out)} outputs; only a deep-supervised model "
                "(ModelSpec(deep_supervision=True)) may, and only in training mode"
            )
        outs = list(out)
        if not outs:
            raise stage.fail("returned an empty list of outputs")
    else:
        outs = [out]
    for k, o in enumerate(outs):
        label = f"output {k}" if len(outs) > 1 else "output"
        if not isinstance(o, torch.Tensor):
            raise stage.fail(f"{label} is a {type(o).__name__}, expected a logits tensor")
        if tuple(o.shape) != expected:
            raise stage.fail(
                f"{label} has shape {tuple(o.shape)}, expected {expected} (batch, classes, height, width)"
            )
        if not o.is_floating_point():
            raise stage.fail(f"{label} has dtype {o.dtype}, expected floating-point logits")
        if not torch.isfinite(o).all():
            raise stage.fail(f"{label} holds NaN or infinite values")
    return outs


def _spec_origin(spec: registry.ModelSpec) -> registry.Origin:
    """Origin of a spec object handed in directly (a plugin's own tests, before installing)."""
    module = getattr(spec.build, "__module__", "?")
    return registry.Origin(f"{module} (spec object, not installed)", "<not installed>")


def check_model(
    name: str | registry.ModelSpec,
    *,
    image_size: int,
    batch_size: int,
    run_width: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> ModelCheck:
    """Build `name` as a run would (run width, model options) and test its contract on the CPU.
    `name` may also be a `ModelSpec` object, so a plugin's tests can check it before installing.

    Raises ContractError (a CovbenchError, exit code 2) naming the entry point, the distribution
    and the failing stage.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    started = time.perf_counter()
    given = name if isinstance(name, registry.ModelSpec) else None
    name = given.name if given else str(name)
    origin = _spec_origin(given) if given else None
    stage = _Stage(name, origin)
    with stage:
        spec = given or registry.get_model(name)
        stage.stage = "build"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            built = registry.build_model(spec, run_width, options or {})
        model, width, opts = built.model, built.width, built.options
        if not isinstance(model, torch.nn.Module):
            raise stage.fail(f"build returned {type(model).__name__}, expected a torch.nn.Module")
        model = model.to("cpu").float()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        n_params = built.parameters
        expected = (PROBE_BATCH, 1, image_size, image_size)
        x = torch.rand(*expected, generator=torch.Generator().manual_seed(0))

        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        stage.stage = "training forward"
        model.train()
        with FlopCounterMode(display=False) as train_counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(x)
            outs = _outputs(out, stage, expected, allow_list=spec.deep_supervision)
            stage.stage = "backward"
            loss = torch.stack([o.float().mean() for o in outs]).mean()
            if not loss.requires_grad:
                raise stage.fail("the output does not depend on any parameter (no gradient can flow)")
            loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        unused = sum(p.grad is None for p in trainable)
        if trainable and unused == len(trainable):
            raise stage.fail("no parameter received a gradient (is the output detached from the model?)")

        stage.stage = "eval forward"
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as eval_counter:
            _outputs(model(x), stage, expected, allow_list=False)

    o = origin or registry.model_origin(name)
    return ModelCheck(
        name=name,
        title=spec.title,
        reference=spec.reference,
        entry_point=o.entry_point,
        distribution=o.distribution,
        version=o.version,
        width=width,
        options=opts,
        deep_supervision=isinstance(out, list | tuple),
        image_size=image_size,
        batch_size=batch_size,
        parameters=n_params,
        paper_params=spec.paper_params,
        flops_per_image=eval_counter.get_total_flops() // PROBE_BATCH,
        train_flops_per_image=train_counter.get_total_flops() // PROBE_BATCH,
        activation_bytes_per_image=sum(saved.values()) // PROBE_BATCH,
        output_shapes=[list(t.shape) for t in outs],
        unused_parameters=unused,
        seconds=time.perf_counter() - started,
    )


def _within(timeout: float | None, name: str, check: Callable[[], ModelCheck]) -> ModelCheck:
    """`check()` in a daemon thread, given up after `timeout` seconds: a plugin whose build or
    forward pass blocks must not hang the run at "checking models". The blocked thread cannot be
    killed; it is left behind (a daemon, it ends with the process) and the run stops with exit 2."""
    if timeout is None:
        return check()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["check"] = check()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"covbench-check-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        o = registry.model_origin(name)
        raise ContractError(
            f"model {name!r} (entry point {o.entry_point}, from {o.distribution} {o.version}) did not "
            f"finish the contract check within {timeout:g} s (--stall-timeout): its build or forward "
            "pass blocks"
        )
    if "error" in box:
        raise box["error"]
    return box["check"]


def check_models(
    names: Iterable[str],
    *,
    image_size: int,
    batch_size: int,
    run_width: int | None = None,
    model_options: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float | None = None,
) -> dict[str, ModelCheck]:
    """Check every model; all failures are gathered into one ContractError, so a run with two
    broken plugins says so at once. `timeout`: seconds one model's check may take (None: no limit)."""
    model_options = model_options or {}
    checks: dict[str, ModelCheck] = {}
    errors: list[str] = []
    for name in names:
        try:
            checks[name] = _within(
                timeout,
                name,
                lambda name=name: check_model(
                    name,
                    image_size=image_size,
                    batch_size=batch_size,
                    run_width=run_width,
                    options=model_options.get(name, {}),
                ),
            )
        except CovbenchError as exc:
            errors.append(str(exc))
    if errors:
        raise ContractError("; ".join(errors))
    return checks


def check_config(cfg: RunConfig, timeout: float | None = None) -> dict[str, ModelCheck]:
    """`check_models` for a run configuration: its models at its image size, batch size, width and
    model options, built as its trials will build them; each check bounded by `timeout` seconds."""
    return check_models(
        cfg.models,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        run_width=cfg.width,
        model_options=cfg.model_options,
        timeout=timeout,
    )


def models_record(checks: Mapping[str, ModelCheck]) -> dict[str, Any]:
    """The content of the run folder's `models.json`: one entry per model plus how it was measured."""
    first = next(iter(checks.values()), None)
    return {
        "image_size": first.image_size if first else None,
        "batch_size": first.batch_size if first else None,
        "probe_batch": PROBE_BATCH,
        "device": "cpu",
        "flops_method": FLOPS_NOTE,
        "activation_method": ACTIVATION_NOTE,
        "models": {name: check.to_dict() for name, check in checks.items()},
    }


@dataclass(frozen=True)
class ModelSize:
    """A registered model's parameter count at its paper width and at a run width (`covbench models`)."""

    name: str
    title: str
    reference: str
    paper_width: int  # 0: no width knob
    paper_parameters: int
    width: int  # the width a run with this run width builds it at
    parameters: int


def model_sizes(run_width: int | None) -> tuple[list[ModelSize], list[registry.BrokenPlugin]]:
    """Every registered model's size, built on the meta device (no memory, no weights), and the
    plugins that could not be counted: entry points that failed to load, and builds that failed."""
    import torch

    sizes: list[ModelSize] = []
    broken = {**registry.broken_models(), **registry.broken_families()}
    for name in registry.list_models():
        spec = registry.get_model(name)
        try:
            with torch.device("meta"):
                paper = registry.count_parameters(spec.create())
                width = spec.scaled_width(run_width)
                scaled = registry.count_parameters(spec.create(width=width))
        except Exception as exc:  # a plugin whose build fails must not hide the others
            origin = registry.model_origin(name)
            error = f"build failed: {_one_line(exc)}"
            broken[name] = registry.BrokenPlugin(name, origin.entry_point, origin.distribution, error)
            continue
        sizes.append(ModelSize(name, spec.title, spec.reference, spec.paper_width, paper, width, scaled))
    return sizes, [broken[name] for name in sorted(broken)]
