"""The one exception family the library raises; the CLI turns it into a message and an exit code.

`quote` is how a message shows the value it rejects: a short prefix, never the whole value (a
353-byte YAML alias bomb expands to a list of 43 million items; quoted whole it made a 351 MB line).
"""

import json
from typing import Any

QUOTE_CHARS = 60  # the longest quotation of a rejected value in a message


class _Full(Exception):
    """The quotation reached its length: stop walking the value."""


def quote(value: Any, limit: int = QUOTE_CHARS, *, as_json: bool = False) -> str:
    """`value` as a message quotes it: its repr (or its JSON spelling with `as_json`), cut to
    `limit` characters ending in '...'. Written piece by piece and stopped at the limit, so a huge,
    deeply nested or self-containing value costs no more than its first characters."""
    pieces: list[str] = []
    left = [limit + 1]

    def put(text: str) -> None:
        pieces.append(text[: left[0]])
        left[0] -= len(text)
        if left[0] <= 0:
            raise _Full

    def scalar(v: Any) -> str:
        if isinstance(v, str):
            v = v[: limit + 1]  # the rest would be cut anyway
            return json.dumps(v) if as_json else repr(v)
        if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 4 * limit:
            return f"<an integer of {v.bit_length()} bits>"  # str() of a huge int is slow, or refused
        if as_json and (v is None or isinstance(v, bool | int | float)):
            return json.dumps(v)
        return repr(v)[: limit + 1]

    def walk(v: Any, depth: int) -> None:
        if depth > limit:  # a value that contains itself
            put("...")
        elif isinstance(v, dict):
            put("{")
            for i, (k, x) in enumerate(v.items()):
                put(", " if i else "")
                walk(k, depth + 1)
                put(": ")
                walk(x, depth + 1)
            put("}")
        elif isinstance(v, list | tuple):
            put("[" if as_json or isinstance(v, list) else "(")
            for i, x in enumerate(v):
                put(", " if i else "")
                walk(x, depth + 1)
            put("]" if as_json or isinstance(v, list) else ")")
        else:
            put(scalar(v))

    try:
        walk(value, 0)
    except _Full:
        pass
    text = "".join(pieces)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CovbenchError(Exception):
    """A problem the user can fix: bad option, bad input file, unknown model. CLI exit code 2."""

    exit_code = 2


class RunFailed(CovbenchError):
    """Some trials failed; the rest were reported. CLI exit code 1."""

    exit_code = 1


class DamagedFile(CovbenchError, ValueError):
    """A run-folder file that exists but cannot be read back (zero-length after a crash, truncated,
    not what covbench wrote). Callers that can heal catch it; anything else ends as one line, exit 2."""

    def __init__(self, path: object, why: str):
        super().__init__(f"{path} is damaged ({why})")
        self.path = path
        self.why = why


class RunLocked(CovbenchError):
    """Another process holds the run folder's lock (covbench.folder.lock). CLI exit code 2."""


class RunFolderWarning(UserWarning):
    """Something in a run folder was damaged and healed (set aside, rerun or ignored)."""


class TrialFailure(RuntimeError):
    """A trial that ends for a reason the run records by name (failure.json's `reason`). The
    scheduler reads `reason` off the exception, also when Ray wraps it, so no message is parsed."""

    reason = "error"
