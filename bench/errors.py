"""The one exception family the library raises; the CLI turns it into a message and an exit code."""


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
    """Another process holds the run folder's lock (covbench.lock). CLI exit code 2."""


class RunFolderWarning(UserWarning):
    """Something in a run folder was damaged and healed (set aside, rerun or ignored)."""
