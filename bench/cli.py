"""The `covbench` command. Commands translate options into library calls; the library decides.

Every user-fixable problem surfaces as a `CovbenchError`, printed as one line on stderr with exit
code 2 (1 when trials failed or a comparison found a regression).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from covbench import registry
from covbench.errors import CovbenchError, RunFailed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark COVID-19 lesion segmentation models: train from scratch over seeds, score, compare.",
)
console = Console()
err_console = Console(stderr=True)

PAPER_MODELS = ("unet", "unetpp", "resunet")


def _fail(exc: CovbenchError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


def resolve_models(text: str) -> list[str]:
    """`all`, `paper`, or a comma list of registered names (fnmatch patterns allowed)."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item == "all":
            found = registry.list_models()
        elif item == "paper":
            found = list(PAPER_MODELS)
        elif any(ch in item for ch in "*?["):
            found = registry.list_models(item)
        else:
            registry.get_model(item)  # raises with the list of valid names
            found = [item]
        if not found:
            raise CovbenchError(
                f"--models {item!r} matches no registered model; available: "
                f"{', '.join(registry.list_models())}"
            )
        names += [n for n in found if n not in names]
    if not names:
        raise CovbenchError("--models is empty")
    return names


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@app.command()
def run(
    models: Annotated[str, typer.Option(help="'all', 'paper' or a comma list of model names")] = "all",
    seeds: Annotated[int, typer.Option(help="number of random seeds per model (seeds 0..N-1)")] = 5,
    preset: Annotated[
        str, typer.Option(help="auto (paper on CUDA, cpu otherwise), paper, cpu or smoke")
    ] = "auto",
    epochs: Annotated[int | None, typer.Option(help="override the preset's epochs")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="override the preset's image size (multiple of 16)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="override the preset's batch size")] = None,
    lr: Annotated[float | None, typer.Option(help="override the preset's Adam learning rate")] = None,
    width: Annotated[
        int | None, typer.Option(help="scale every model to WIDTH/64 of its paper width (default: preset)")
    ] = None,
    dataset: Annotated[str, typer.Option(help="dataset adapter (see `covbench data list`)")] = "phantom",
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset lies")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<timestamp>)")] = None,
    address: Annotated[str | None, typer.Option(help="join a Ray cluster: 'auto' or ray://host:port")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial; torch threads follow")] = 1.0,
    gpus_per_trial: Annotated[
        float | None, typer.Option(help="GPUs per trial (default 1 when GPUs exist)")
    ] = None,
    max_retries: Annotated[int, typer.Option(help="retries of a trial whose worker died")] = 2,
    debug: Annotated[bool, typer.Option(help="run trials in this process, without Ray (for pdb)")] = False,
) -> None:
    """Train and evaluate every selected model over several seeds, then write the report."""
    from covbench.config import build_config, resolve_preset
    from covbench.runner import execute

    try:
        chosen = resolve_models(models)
        cfg = build_config(
            models=chosen,
            n_seeds=seeds,
            preset=resolve_preset(preset, _cuda_available()),
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            width=width,
            dataset=dataset,
            data_dir=str(data_dir) if data_dir else None,
        )
        registry.get_dataset(dataset)
        if cpus_per_trial <= 0:
            raise CovbenchError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
        run_dir = out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        console.print(
            f"covbench run → [bold]{run_dir}[/]  preset={cfg.preset} models={','.join(chosen)} "
            f"seeds={len(cfg.seeds)} epochs={cfg.epochs} size={cfg.image_size} width={cfg.width}"
        )
        with _RunProgress() as progress:
            outcome = execute(
                cfg,
                run_dir,
                address=address,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                max_retries=max_retries,
                debug=debug,
                on_event=progress.event,
            )
        _print_report(run_dir)
        console.print(
            f"wall time {outcome.wall_seconds:.0f} s; {len(outcome.done)} trials run, "
            f"{len(outcome.skipped)} already done; results in {run_dir}"
        )
        if outcome.failed:
            raise RunFailed(
                f"{len(outcome.failed)} trial(s) failed: "
                + "; ".join(f"{name}: {error}" for name, error in sorted(outcome.failed.items()))
            )
    except CovbenchError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: finished trials are kept; run the same command again to resume")
        raise typer.Exit(code=130) from None


class _RunProgress:
    """Live display: a bar over trials with queued / running / done / failed counts and an ETA."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.total = self.done = self.failed = 0
        self.slots = 1

    def __enter__(self) -> _RunProgress:
        self.progress.__enter__()
        self.task = self.progress.add_task("preparing data", total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _describe(self) -> str:
        left = self.total - self.done - self.failed
        running = min(left, self.slots)
        return f"trials: {left - running} queued, {running} running, {self.done} done, {self.failed} failed"

    def event(self, kind: str, info: dict) -> None:
        if kind == "start":
            self.total = info["total"]
            self.done = info["skipped"]
            self.slots = max(1, int(info["cpus"]))
            self.progress.update(
                self.task, total=self.total, completed=self.done, description=self._describe()
            )
        elif kind == "done":
            self.done += 1
            r = info["record"]
            self.progress.console.print(
                f"  ✓ {info['trial']}: test Dice {info['test_dice']:.3f}, best val Dice {r['best_val_dice']:.3f} "
                f"(epoch {r['best_epoch']}), {r['wall_seconds']:.0f} s on {r['device']}",
                highlight=False,
            )
        elif kind == "failed":
            self.failed += 1
            self.progress.console.print(f"  ✗ {info['trial']}: {info['error']}", highlight=False)
        if self.task is not None and kind in {"done", "failed"}:
            self.progress.update(self.task, completed=self.done + self.failed, description=self._describe())


def _print_report(run_dir: Path) -> None:
    from covbench.reports.report import write_report

    report = write_report(run_dir)
    console.print(report.markdown, highlight=False, markup=False)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a covbench run folder")]) -> None:
    """Write Table 1, significance tests and summary.json again from a stored run folder."""
    try:
        _print_report(run_dir)
    except CovbenchError as exc:
        raise _fail(exc) from None


@app.command("models")
def models_cmd(
    preset: Annotated[str, typer.Option(help="preset whose width to count parameters at")] = "auto",
) -> None:
    """List the registered architectures with their parameter counts."""
    import torch

    from covbench.config import resolve_preset

    try:
        chosen = resolve_preset(preset, _cuda_available())
    except CovbenchError as exc:
        raise _fail(exc) from None
    table = Table(title=f"covbench models (preset {chosen.name})")
    for col in ("name", "title", "reference", "params @ paper width", f"params @ {chosen.name}"):
        table.add_column(col)
    for name in registry.list_models():
        spec = registry.get_model(name)
        with torch.device("meta"):
            paper = registry.count_parameters(spec.create())
            small_width = spec.scaled_width(chosen.width)
            small = registry.count_parameters(spec.create(width=small_width))
        table.add_row(
            name,
            spec.title,
            spec.reference,
            f"{paper:,} (width {spec.paper_width})",
            f"{small:,} (width {small_width})",
        )
    console.print(table)
    for name, broken in sorted(registry.broken_models().items()):
        err_console.print(
            f"[red]broken plugin[/] {name} ({broken.entry_point}, from {broken.distribution}): "
            f"{broken.error}",
            highlight=False,
        )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
