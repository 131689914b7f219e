"""`covbench models` (the registered architectures and their sizes) and `covbench models check`
(the contract check); the work is in `covbench.registry` and `covbench.checks`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from covbench import registry
from covbench.cli.common import ERRORS, console, err_console, fail

models_app = typer.Typer(
    invoke_without_command=True,
    help="List the registered architectures with their parameter counts; `models check` tests them.",
)


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
    from covbench.checks import model_sizes
    from covbench.config import resolve_preset

    try:
        chosen = resolve_preset(preset)
    except ERRORS as exc:
        raise fail(exc) from None
    sizes, broken = model_sizes(chosen.width)
    table = Table(title=f"covbench models (preset {chosen.name})")
    for col in ("name", "title", "reference", "params @ paper width", f"params @ {chosen.name}"):
        table.add_column(col)
    for s in sizes:
        table.add_row(
            escape(s.name),
            escape(s.title),
            escape(s.reference),
            f"{s.paper_parameters:,} (width {s.paper_width})",
            f"{s.parameters:,} (width {s.width})",
        )
    console.print(table)
    if all_:
        _print_families()
    for b in broken:
        where = f"{b.name} ({b.entry_point}, from {b.distribution}): {b.error}"
        err_console.print(f"[red]broken plugin[/] {escape(where)}", highlight=False)


def _print_families() -> None:
    """Families as text, not a table: their choice lists are long and must not be truncated."""
    console.print("\nmodel families: name a member on the command line, e.g. --models smp:Unet:resnet18")
    for name in registry.list_families():
        family = registry.get_family(name)
        console.print(
            f"  [bold]{escape(name)}[/]  {escape(family.title)}; {escape(family.reference)}", highlight=False
        )
        console.print(f"    pattern   {family.pattern}", highlight=False, markup=False)
        for axis, values in family.axes().items():
            values = list(values)
            console.print(f"    <{axis}> ({len(values)}): {', '.join(values)}", highlight=False, markup=False)
        console.print(f"    examples  {', '.join(family.examples)}", highlight=False, markup=False)
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
    from covbench.checks import check_config
    from covbench.config import DEFAULT_STALL_SECONDS, build_config, parse_model_options, resolve_preset

    try:
        chosen = registry.resolve_models(names)
        cfg = build_config(
            models=chosen,
            n_seeds=1,
            preset=resolve_preset(preset),
            image_size=image_size,
            batch_size=batch_size,
            width=width,
            model_options=parse_model_options(model_option or [], chosen),
        )
        checks = check_config(cfg, timeout=DEFAULT_STALL_SECONDS)  # a blocking plugin cannot hang it
    except ERRORS as exc:
        raise fail(exc) from None
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
