"""The `covbench` command. Commands translate options into library calls; the library decides.

Every user-fixable problem surfaces as a `CovbenchError`, printed as one line on stderr with exit
code 2 (1 when trials failed or a comparison found a regression).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
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
from covbench.config import DEFAULT_CHECKPOINT_SECONDS
from covbench.data_cli import data_app
from covbench.errors import CovbenchError, RunFailed, RunFolderWarning

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
    # escape: messages quote names such as `smp:Unet:resnet18` in brackets, which are not markup
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


@contextmanager
def _folder_warnings() -> Iterator[None]:
    """Show each RunFolderWarning (a damaged file set aside, a trial run again) as one line on
    stderr, every time; other warnings as Python shows them."""
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always", RunFolderWarning)
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, RunFolderWarning):
                text = f"[yellow]warning:[/] {escape(str(message))}"
                err_console.print(text, highlight=False, soft_wrap=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield


def resolve_models(text: str) -> list[str]:
    """`all` (every registered model; family members only when named), `paper` (the three
    reference models), or a comma list of registered names (fnmatch patterns allowed) and family
    members such as `smp:UnetPlusPlus:resnet34`."""
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
            found = [registry.get_model(item).name]  # raises with the list of valid names
        if not found:
            raise CovbenchError(
                f"--models {item!r} matches no registered model; available: "
                f"{', '.join(registry.list_models())}"
            )
        names += [n for n in found if n not in names]
    if not names:
        raise CovbenchError("--models is empty")
    return names


def _option_value(text: str) -> Any:
    """JSON-ish: true/false/null, numbers and JSON lists as such, anything else as a string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.strip().lower() in lowered:
        return lowered[text.strip().lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_model_options(items: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    """`--model-option MODEL.KEY=VALUE` (repeatable) -> {model: {key: value}}. The key follows
    the last dot, so member names with dots (`smp:Unet:tu-vit_small.augreg`) work."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not model or not key:
            raise CovbenchError(
                f"--model-option {item!r}: expected MODEL.KEY=VALUE, e.g. unetpp.deep_supervision=false"
            )
        if ":" in model:
            model = registry.get_model(model).name
        if model not in models:
            raise CovbenchError(
                f"--model-option {item!r}: model {model!r} is not selected by --models ({', '.join(models)})"
            )
        options.setdefault(model, {})[key] = _option_value(value)
    return options


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# Options that decide a run's numbers: `--resume DIR` takes them from DIR/config.json instead.
_CONFIG_OPTIONS = (
    "models", "seeds", "preset", "epochs", "image_size", "batch_size", "lr", "width",
    "augment", "loss", "val_fraction", "tta", "dataset", "data_dir", "split", "folds", "model_option",
    "deterministic",
)  # fmt: skip


@app.command()
def run(
    ctx: typer.Context,
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
    augment: Annotated[
        str | None,
        typer.Option(help="training augmentation: none (the paper's), flip or affine (default: preset)"),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="dice (the paper's) or dice_bce (default: preset)")] = None,
    dataset: Annotated[str, typer.Option(help="dataset adapter (see `covbench data list`)")] = "phantom",
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset lies")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<timestamp>)")] = None,
    address: Annotated[str | None, typer.Option(help="join a Ray cluster: 'auto' or ray://host:port")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial; torch threads follow")] = 1.0,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(help="GPUs per trial (default: as many trials per GPU as fit, see docs/performance.md)"),
    ] = None,
    max_retries: Annotated[int, typer.Option(help="retries of a trial whose worker died")] = 2,
    debug: Annotated[bool, typer.Option(help="run trials in this process, without Ray (for pdb)")] = False,
    split: Annotated[
        str | None,
        typer.Option(
            help="patient, kfold, ma2021, ma2021-limited, paper or predefined (default: the dataset's own)"
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option("--tta/--no-tta", help="average test predictions over four flips (default: preset)"),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="share of the non-test patients held out for validation (default: the split's own); "
            "0 = none, the final epoch's weights are evaluated"
        ),
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="number of folds for --split kfold (default 5); one trial per fold")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue the run in DIR with the configuration stored in DIR/config.json"),
    ] = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option(
            "--model-option",
            help="MODEL.KEY=VALUE for one model's build (repeatable), e.g. unetpp.deep_supervision=false",
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option(
            "--deterministic/--no-deterministic",
            help="deterministic cuDNN kernels, or cuDNN autotuning (faster on a GPU, results vary in the "
            "last digits); default: deterministic on a CPU, autotuned on CUDA (docs/performance.md)",
        ),
    ] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            help="seconds between a trial's resumable checkpoints (written in the background, always "
            "after the first epoch; 0 = every epoch)"
        ),
    ] = DEFAULT_CHECKPOINT_SECONDS,
    allow_version_change: Annotated[
        bool,
        typer.Option(
            help="continue a run folder trained by another covbench or model-plugin version "
            "(refused otherwise; the report then lists the change)"
        ),
    ] = False,
) -> None:
    """Train and evaluate every selected model over several seeds, then write the report."""
    from covbench.config import build_config, resolve_preset
    from covbench.lock import run_lock
    from covbench.runner import execute, load_run_config

    try:
        if resume is not None:
            given = [
                "--" + name.replace("_", "-")
                for name in _CONFIG_OPTIONS
                if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
            ]
            if given:
                raise CovbenchError(
                    f"--resume takes the configuration from {resume}/config.json; drop {', '.join(given)}"
                )
            if out is not None and out.resolve() != resume.resolve():
                raise CovbenchError(f"--resume {resume} and --out {out} name two run folders; give one")
            cfg = load_run_config(resume)
            chosen = list(cfg.models)
        else:
            chosen = resolve_models(models)
            split_name = split or registry.get_dataset(dataset).default_split
            cfg = build_config(
                models=chosen,
                n_seeds=seeds,
                preset=resolve_preset(preset, _cuda_available()),
                epochs=epochs,
                image_size=image_size,
                batch_size=batch_size,
                lr=lr,
                width=width,
                augment=augment,
                loss=loss,
                dataset=dataset,
                data_dir=str(data_dir) if data_dir else None,
                split=split_name,
                val_fraction=val_fraction,
                tta=tta,
                deterministic=deterministic if deterministic is not None else not _cuda_available(),
                folds=folds if folds is not None else (5 if split_name == "kfold" else 1),
                model_options=parse_model_options(model_option or [], chosen),
            )
        registry.get_dataset(cfg.dataset)
        if cpus_per_trial <= 0:
            raise CovbenchError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
        run_dir = resume or out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        console.print(
            f"covbench run → [bold]{run_dir}[/]  preset={cfg.preset} models={','.join(chosen)} "
            f"seeds={len(cfg.seeds)} epochs={cfg.epochs} size={cfg.image_size} width={cfg.width} "
            f"augment={cfg.augment} loss={cfg.loss} tta={cfg.tta} split={cfg.split} "
            f"deterministic={cfg.deterministic}"
            + (f" folds={cfg.folds}" if cfg.folds > 1 else "")
        )
        # One writer per run folder, from the configuration check to the last report file.
        with run_lock(run_dir), _folder_warnings():
            with _RunProgress() as progress:
                outcome = execute(
                    cfg,
                    run_dir,
                    allow_version_change=allow_version_change,
                    address=address,
                    cpus_per_trial=cpus_per_trial,
                    gpus_per_trial=gpus_per_trial,
                    max_retries=max_retries,
                    debug=debug,
                    checkpoint_every=checkpoint_every,
                    on_event=progress.event,
                )
            if outcome.done or outcome.skipped:  # a report of what completed, even when some trials failed
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
    """Live display: a bar over trials with queued / running / done / failed counts and an ETA.

    "running" counts trials whose attempt announced itself from a worker (the scheduler's
    heartbeat files), not an estimate from free slots; a retried attempt shows as a retry."""

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
        self.total = self.done = self.failed = self.retries = 0
        self.running: set[str] = set()

    def __enter__(self) -> _RunProgress:
        self.progress.__enter__()
        self.task = self.progress.add_task("preparing data", total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _describe(self) -> str:
        left = self.total - self.done - self.failed
        running = min(left, len(self.running))
        text = f"trials: {left - running} queued, {running} running, {self.done} done, {self.failed} failed"
        return text + (f", {self.retries} retried" if self.retries else "")

    def event(self, kind: str, info: dict) -> None:
        if kind == "status" and self.task is not None:  # "checking models", "preparing data"
            self.progress.update(self.task, description=info["message"])
        if kind == "start":
            self.total = info["total"]
            self.done = info["skipped"]
            self.progress.update(
                self.task, total=self.total, completed=self.done, description=self._describe()
            )
        elif kind in {"started", "retry"}:
            self.running.add(info["trial"])
            if kind == "retry":
                self.retries += 1
                self.progress.console.print(
                    f"  ↻ {info['trial']}: worker lost, attempt {info['attempt']}", highlight=False
                )
            self.progress.update(self.task, description=self._describe())
        elif kind == "done":
            self.done += 1
            self.running.discard(info["trial"])
            r = info["record"]
            gpus = f" GPU {','.join(r['gpu_ids'])}" if r.get("gpu_ids") else ""
            val = r["best_val_dice"]
            chosen = (
                f"final weights (epoch {r['best_epoch']}, no validation)"
                if val is None or math.isnan(val)
                else f"best val Dice {val:.3f} (epoch {r['best_epoch']})"
            )
            self.progress.console.print(
                f"  ✓ {info['trial']}: test Dice {info['test_dice']:.3f}, {chosen}, "
                f"{r['wall_seconds']:.0f} s on {r['device']}{gpus}",
                highlight=False,
            )
        elif kind == "failed":
            self.failed += 1
            self.running.discard(info["trial"])
            self.progress.console.print(f"  ✗ {info['trial']}: {info['error']}", highlight=False)
        if self.task is not None and kind in {"done", "failed"}:
            self.progress.update(self.task, completed=self.done + self.failed, description=self._describe())


def _print_report(run_dir: Path, unit: str = "slice", figures: bool = True) -> None:
    from covbench.reports.report import write_report

    report = write_report(run_dir, unit=unit, figures=figures)
    console.print(report.markdown, highlight=False, markup=False, soft_wrap=True)
    files = ", ".join(p.relative_to(run_dir).as_posix() for p in report.paths)
    console.print(f"report files in {run_dir}: {files}", highlight=False, soft_wrap=True)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder")],
    unit: Annotated[
        str, typer.Option(help="case unit: 'slice' (test slices) or 'patient' (reassembled test volumes)")
    ] = "slice",
    figures: Annotated[bool, typer.Option(help="draw the PNG/SVG figures")] = True,
) -> None:
    """Write Table 1 (Markdown, LaTeX, CSV, HTML), significance tests, figures and summary.json
    again from a stored run folder."""
    from covbench.lock import run_lock

    try:
        with run_lock(run_dir, create=False), _folder_warnings():  # not while a run writes the folder
            _print_report(run_dir, unit, figures)
    except CovbenchError as exc:
        raise _fail(exc) from None


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="baseline summary.json or run folder")],
    current: Annotated[Path, typer.Argument(help="current summary.json or run folder")],
    tolerance: Annotated[
        list[str] | None,
        typer.Option(help="METRIC=VALUE, repeatable; default per metric: max(floor, 2 x seed SD)"),
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="comma list of metrics to check (default: all)")] = None,
    update: Annotated[bool, typer.Option(help="after printing, replace BASELINE with CURRENT")] = False,
) -> None:
    """Compare a run with a baseline of the same benchmark. Exit 0: passed; 1: a metric got worse
    beyond its tolerance (or went missing); 2: bad input, or BASELINE is another benchmark.
    With GITHUB_STEP_SUMMARY set, the Markdown verdict is appended there too."""
    from covbench.reports.compare import (
        append_step_summary,
        load_summary,
        parse_metrics,
        parse_tolerances,
        record_gate,
        summary_path,
        update_baseline,
    )
    from covbench.reports.compare import compare as compare_summaries
    from covbench.reports.identity import Incomparable, check_comparable

    def step_summary(title: str, body: str) -> None:
        try:
            append_step_summary(f"### covbench compare: {title}\n\n{body}")
        except OSError as exc:  # the job page is a convenience; the exit code is the verdict
            err_console.print(f"warning: GITHUB_STEP_SUMMARY not written ({exc})", highlight=False)

    try:
        tolerances = parse_tolerances(tolerance)
        chosen = parse_metrics(metrics)
        cur = load_summary(current, "CURRENT")
        if update and not baseline.exists():  # the first baseline: nothing to compare with yet
            path = update_baseline(baseline, cur, current)
            console.print(f"baseline {path} created from {current}", highlight=False, soft_wrap=True)
            return
        base = load_summary(baseline, "BASELINE")
        cur_file = summary_path(current, "CURRENT")
        try:
            note = check_comparable(base, cur, summary_path(baseline, "BASELINE"), cur_file)
        except Incomparable as exc:
            if not update:
                raise
            path = update_baseline(baseline, cur, current)  # asked for: the benchmark itself changed
            console.print(
                f"baseline {path} replaced by {current}, a different benchmark ({exc.detail})",
                highlight=False,
                soft_wrap=True,
            )
            return
        if note:
            err_console.print(note, highlight=False, soft_wrap=True)
        result = compare_summaries(base, cur, tolerances, chosen, names=(str(baseline), str(current)))
        console.print(result.markdown(), highlight=False, markup=False, soft_wrap=True)
        try:
            record_gate(cur_file, cur, result)  # for `covbench track`: marks a flagged run in the history
        except OSError as exc:
            err_console.print(f"warning: gate record not written next to {cur_file} ({exc})", highlight=False)
        verdict = f"REGRESSION, {len(result.failed)} check(s) failed (exit 1)" if result.failed else "passed"
        step_summary(verdict, result.markdown())
        if update:
            path = update_baseline(baseline, cur, current)
            console.print(f"baseline {path} updated from {current}", highlight=False, soft_wrap=True)
            return
    except CovbenchError as exc:
        step_summary("refused (exit 2)", str(exc))
        raise _fail(exc) from None
    if result.failed:
        err_console.print(
            f"regression: {len(result.failed)} check(s) failed against {baseline}; if intended, refresh "
            f"it with `covbench compare {baseline} {current} --update`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


@app.command()
def track(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder with a summary.json")],
    history: Annotated[Path, typer.Option(help="SQLite history file (created if missing)")],
    benchmark: Annotated[
        str | None,
        typer.Option(help="series name (default: the series of this run's benchmark, else DATASET-PRESET)"),
    ] = None,
) -> None:
    """Append a run's summary, git commit, date and gate verdict to its benchmark's series in a
    history database; a name that stands for another benchmark is refused (docs/reports.md)."""
    from covbench.reports.history import track as track_run

    try:
        tracked = track_run(run_dir, history, benchmark)
    except CovbenchError as exc:
        raise _fail(exc) from None
    what = "new benchmark" if tracked.new_benchmark else "benchmark"
    gate = f"; gate: {tracked.gate}" if tracked.gate else ""
    note = f" ({tracked.note})" if tracked.note else ""
    console.print(
        f"tracked {run_dir} as run {tracked.run_id} of {what} {tracked.benchmark!r}{note} in {history}{gate}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def history(
    file: Annotated[Path, typer.Argument(help="SQLite history file written by `covbench track`")],
    plots: Annotated[
        Path | None, typer.Option(help="folder for the plots (default: next to FILE, '<stem>-plots')")
    ] = None,
    benchmark: Annotated[str | None, typer.Option(help="only this benchmark's series (default: all)")] = None,
    last: Annotated[int, typer.Option(help="runs printed per benchmark, most recent; 0 = all")] = 10,
) -> None:
    """Print each benchmark's trend per metric (never a change between two benchmarks) and draw one
    plot per metric, one panel per benchmark."""
    from covbench.reports.history import load_benchmarks, load_history, plot_history, trend_markdown

    try:
        if last < 0:
            raise CovbenchError(f"--last must be 0 (all runs) or a positive number, got {last}")
        points = load_history(file, benchmark)
        console.print(
            trend_markdown(points, load_benchmarks(file), last), highlight=False, markup=False, soft_wrap=True
        )
        if points:
            folder = plots or file.with_name(file.stem + "-plots")
            paths = plot_history(points, folder, load_benchmarks(file))
            console.print(f"{len(paths)} plot files in {folder}", highlight=False, soft_wrap=True)
    except CovbenchError as exc:
        raise _fail(exc) from None


models_app = typer.Typer(
    invoke_without_command=True,
    help="List the registered architectures with their parameter counts; `models check` tests them.",
)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")


@models_app.callback()
def models_cmd(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option(help="preset whose width to count parameters at")] = "auto",
    all_: Annotated[
        bool, typer.Option("--all", help="also list the model families and how to name their members")
    ] = False,
) -> None:
    """List the registered architectures with their parameter counts."""
    if ctx.invoked_subcommand is not None:
        return
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
        try:
            with torch.device("meta"):
                paper = registry.count_parameters(spec.create())
                small_width = spec.scaled_width(chosen.width)
                small = registry.count_parameters(spec.create(width=small_width))
        except Exception as exc:  # a plugin whose build fails must not hide the others
            origin = registry.model_origin(name)
            err_console.print(
                f"[red]broken plugin[/] {name} ({origin.entry_point}, from {origin.distribution}): "
                f"build failed: {type(exc).__name__}: {escape(str(exc))}",
                highlight=False,
            )
            continue
        table.add_row(
            name,
            spec.title,
            spec.reference,
            f"{paper:,} (width {spec.paper_width})",
            f"{small:,} (width {small_width})",
        )
    console.print(table)
    if all_:
        _print_families()
    for name, broken in sorted({**registry.broken_models(), **registry.broken_families()}.items()):
        err_console.print(
            f"[red]broken plugin[/] {name} ({broken.entry_point}, from {broken.distribution}): "
            f"{escape(broken.error)}",
            highlight=False,
        )


def _print_families() -> None:
    """Families as text, not a table: their choice lists are long and must not be truncated."""
    console.print("\nmodel families: name a member on the command line, e.g. --models smp:Unet:resnet18")
    for name in registry.list_families():
        family = registry.get_family(name)
        console.print(f"  [bold]{name}[/]  {family.title}; {family.reference}", highlight=False)
        console.print(f"    pattern   {family.pattern}", highlight=False)
        for axis, values in family.axes().items():
            values = list(values)
            console.print(f"    <{axis}> ({len(values)}): {', '.join(values)}", highlight=False)
        console.print(f"    examples  {', '.join(family.examples)}", highlight=False)
    console.print(
        "  family members are trained from scratch and not scaled by --width (see docs/plugins.md); "
        "test one with `covbench models check NAME`",
        highlight=False,
    )


@models_app.command("check")
def models_check(
    names: Annotated[str, typer.Argument(help="'paper', 'all' or a comma list: unet,smp:Unet:resnet18")],
    preset: Annotated[str, typer.Option(help="preset whose image size, batch and width to use")] = "auto",
    image_size: Annotated[int | None, typer.Option(help="override the preset's image size")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size the per-batch numbers are for")] = None,
    width: Annotated[int | None, typer.Option(help="override the preset's width (as in `run`)")] = None,
    model_option: Annotated[
        list[str] | None, typer.Option("--model-option", help="MODEL.KEY=VALUE, as in `run` (repeatable)")
    ] = None,
) -> None:
    """Contract check: import, build, forward + backward at the run size; parameters, FLOPs, memory."""
    from covbench.checks import check_models
    from covbench.config import build_config, resolve_preset

    try:
        chosen = resolve_models(names)
        cfg = build_config(
            models=chosen,
            n_seeds=1,
            preset=resolve_preset(preset, _cuda_available()),
            image_size=image_size,
            batch_size=batch_size,
            width=width,
            model_options=parse_model_options(model_option or [], chosen),
        )
        checks = check_models(
            cfg.models,
            image_size=cfg.image_size,
            batch_size=cfg.batch_size,
            run_width=cfg.width,
            model_options=cfg.model_options,
        )
    except CovbenchError as exc:
        raise _fail(exc) from None
    console.print(f"contract check at {cfg.image_size}x{cfg.image_size}, batch {cfg.batch_size}, on the CPU:")
    for name, c in checks.items():
        outputs = f"{len(c.output_shapes)} x {tuple(c.output_shapes[0])}"
        console.print(
            f"  [bold]{escape(name)}[/]  {escape(c.entry_point)} ({c.distribution} {c.version})".rstrip()
            + f"\n    width {c.width or '-'}, {c.parameters:,} parameters, "
            f"{c.flops_per_image / 1e9:.3f} GFLOPs per image, "
            f"{c.train_flops_per_batch / 1e9:.2f} GFLOPs per training batch, "
            f"{c.activation_bytes_per_batch / 2**20:.1f} MiB activations per batch, "
            f"training outputs {outputs}",
            highlight=False,
        )
    console.print(f"ok: {len(checks)} model(s) meet the covbench model contract", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
