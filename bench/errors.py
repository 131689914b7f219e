"""The one exception family the library raises; the CLI turns it into a message and an exit code."""


class CovbenchError(Exception):
    """A problem the user can fix: bad option, bad input file, unknown model. CLI exit code 2."""

    exit_code = 2


class RunFailed(CovbenchError):
    """Some trials failed; the rest were reported. CLI exit code 1."""

    exit_code = 1
