"""Errors the CLI turns into one line and exit code 2.

A ``HarnessError`` is the user's mistake or the environment's (bad flag, missing
file, absent framework): it carries a message that says what happened, the
value received, what is expected and how to fix it. Anything else is a harness
bug and keeps its traceback.
"""


class HarnessError(Exception):
    """A user or environment error, reported as one line with exit code 2."""


class BackendUnavailable(HarnessError):
    """A backend whose framework is not installed, or a device it cannot use."""


class DataError(HarnessError):
    """A dataset that is missing, malformed or not what it claims to be."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured between steps: a checkpoint was written; the message says how to resume."""
