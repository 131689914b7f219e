"""Why a path cannot serve as a folder, in words a user can act on.

`Path.exists()` and `Path.is_dir()` answer False for a missing path, a file, a device, a symbolic
link loop and a folder one may not enter alike; a message built on them ("does not exist") is
wrong for all but the first. `folder_problem` asks the file system once and names the real case.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def folder_problem(path: str | Path) -> str | None:
    """None when `path` is a folder; otherwise what it is instead ("does not exist", "is a file,
    not a folder", "is a device, not a folder", "is a symbolic link loop", ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a part of its path is a file, not a folder)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a folder"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "is a pipe or socket, not a folder"
    return "is a file, not a folder"
