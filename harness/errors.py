"""Errors the CLI turns into one line and exit code 2.

A ``HarnessError`` is the user's mistake or the environment's (bad flag, missing
file, absent framework): it carries a message that says what happened, the
value received, what is expected and how to fix it. Anything else is a harness
bug and keeps its traceback.
"""

import errno


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


class WriteFailed(HarnessError):
    """A file or folder the disk refused to take: full, read-only, no permission, or a name too long.

    Attributes:
        errno: the refused write's errno (one of ``DISK_ERRNOS``).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


# The errnos that mean "this disk or folder will not take the write": the user's to fix, never a harness bug.
DISK_FIXES = {
    errno.ENOSPC: "free space on that disk, or write to a folder on another disk",
    errno.EDQUOT: "free space within your disk quota, or write to a folder on another disk",
    errno.EROFS: "that filesystem is mounted read-only: write to a folder on a writable disk",
    errno.EACCES: "you may not write there: fix the folder's permissions or write to a folder you own",
    errno.EPERM: "you may not write there: fix the folder's permissions or write to a folder you own",
    errno.ENAMETOOLONG: "a name in that path is too long for the filesystem: use a shorter folder path",
}
DISK_ERRNOS = frozenset(DISK_FIXES)


def write_failed(error: OSError, what: str) -> WriteFailed:
    """The one-line error for a write the disk refused: what, where, why (``ENOSPC`` ...), how to fix.

    Args:
        error: the OSError; its errno should be one of ``DISK_ERRNOS``.
        what: what could not be written and where, e.g. "runs/x/model.onnx".
    """
    name = errno.errorcode.get(error.errno, str(error.errno))
    fix = DISK_FIXES.get(error.errno, "check the disk and the folder, then try again")
    return WriteFailed(f"could not write {what}: {error.strerror or error} ({name}); {fix}", error.errno)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured between steps: a checkpoint was written; the message says how to resume."""
