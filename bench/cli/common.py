"""What every command shares: the two consoles, the one error path and the warning printer.

Every user-fixable problem surfaces as a `CovbenchError`; `fail` prints it as one line on stderr
and turns it into the exit code it carries (2, or 1 when trials failed or a comparison found a
regression). Messages are printed escaped: they quote paths and names such as `[smp:Unet:resnet18]`
or `/data/x[/y]`, which are not rich markup.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from covbench.errors import CovbenchError, RunFolderWarning

console = Console()
err_console = Console(stderr=True)


def fail(exc: CovbenchError) -> typer.Exit:
    """Print `exc` as one `error:` line on stderr; raise the returned Exit (`raise fail(exc) from None`)."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


def say(text: str, *, err: bool = False) -> None:
    """Print `text` as it is (no markup, no highlighting): for lines that quote paths and messages."""
    (err_console if err else console).print(text, markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """One `warning:` line on stderr."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def folder_warnings() -> Iterator[None]:
    """Show each RunFolderWarning (a damaged file set aside, a trial run again) as one line on
    stderr, every time; other warnings as Python shows them."""
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always", RunFolderWarning)
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, RunFolderWarning):
                warn(str(message))
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield
