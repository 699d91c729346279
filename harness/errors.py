"""Errors the CLI turns into one line and exit code 2.

A ``HarnessError`` is the user's mistake or the environment's (bad flag, missing
file, absent framework): it carries a message that says what happened, the
value received, what is expected and how to fix it. Anything else is a harness
bug and keeps its traceback.
"""


# The process's exit codes, the same for every command.
EXIT_FAILED = 1  # a check failed
EXIT_USER_ERROR = 2  # a HarnessError: bad input, missing file or framework, a backend that could not run
EXIT_INCONCLUSIVE = 3  # no check failed, but one could not decide (e.g. models that have not learned)
EXIT_INTERRUPTED = 130  # Ctrl-C


def one_line(error: BaseException, limit: int | None = None) -> str:
    """``Type: message`` on one line (the CLI prints one line per error), cut at ``limit`` characters."""
    message = " ".join(str(error).split())
    if limit is not None and len(message) > limit:
        message = message[:limit] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class HarnessError(Exception):
    """A user or environment error, reported as one line with exit code 2."""


class BackendUnavailable(HarnessError):
    """A backend whose framework is not installed, or a device it cannot use."""


class DataError(HarnessError):
    """A dataset that is missing, malformed or not what it claims to be."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured between steps: a checkpoint was written; the message says how to resume."""
