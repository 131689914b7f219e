"""What every command shares: the two consoles, the one error path and the warning printer.

Every user-fixable problem surfaces as a `CovbenchError`; `fail` prints it as one line on stderr
and turns it into the exit code it carries (2, or 1 when trials failed or a comparison found a
regression). An `OSError` that reaches a command (a full disk, a read-only file system, a denied
permission, a link loop, a file where a folder belongs) is the environment's problem, not a bug:
`fail` prints it the same way, naming the path and what the error number means, with exit code 2.
Commands catch `ERRORS`. Messages are printed escaped: they quote paths and names such as
`[smp:Unet:resnet18]` or `/data/x[/y]`, which are not rich markup.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from covbench.errors import CovbenchError, RunFolderWarning

console = Console()
err_console = Console(stderr=True)

ERRORS = (CovbenchError, OSError)  # what a command turns into one line and an exit code

# What to do about the environmental errors users meet; others get their system message only.
_ADVICE = {
    errno.ENOSPC: "free some space, then run the same command again (finished work is kept)",
    errno.EDQUOT: "free some space, then run the same command again (finished work is kept)",
    errno.EROFS: "the file system is mounted read-only; use a writable folder",
    errno.EACCES: "check the permissions, or use another folder",
    errno.EPERM: "check the permissions, or use another folder",
    errno.ELOOP: "a symbolic link points back to itself",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
}


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: the path(s), the system's words and the errno name, and advice."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    name = errno.errorcode.get(exc.errno or -1)
    what = exc.strerror or str(exc) or type(exc).__name__
    text = f"{' -> '.join(paths)}: {what}" if paths else what
    if name:
        text += f" ({name})"
    advice = _ADVICE.get(exc.errno or -1)
    return f"{text}; {advice}" if advice else text


def fail(exc: CovbenchError | OSError) -> typer.Exit:
    """Print `exc` as one `error:` line on stderr; raise the returned Exit (`raise fail(exc) from None`)."""
    text = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
    text = " ".join(text.split())  # one line, whatever the message held
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code if isinstance(exc, CovbenchError) else 2)


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
