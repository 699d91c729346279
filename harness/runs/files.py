"""Atomic writes: a reader never sees a half-written file, nor a set of files from two writers.

Every file is written to a temporary name in the same folder and renamed into place (atomic on POSIX).
A set of files that belong together (a report set) is written into a staging folder and swapped in as one
unit (``replaced_set``). A write the disk refuses (full, read-only, no permission, name too long) becomes a
one-line ``WriteFailed`` naming the file and the fix.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import DISK_ERRNOS, HarnessError, WriteFailed, write_failed

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name ends in ``path``'s own suffix, because some writers
    (MindSpore's checkpoint and ONNX exporters) append one when it is missing.

    Raises:
        WriteFailed: the disk refused the temporary file, the block's writes to it, or the rename.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as error:
        raise _refused(error, path)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:  # also what the block's own writer raised: np.savez, to_csv, savefig on a full disk
        raise _refused(error, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)  # a refused write leaves no half file behind, and gives its space back


def _refused(error: OSError, what) -> OSError:
    """``WriteFailed`` for an errno the disk uses to refuse a write, else the error itself (a bug keeps it)."""
    return write_failed(error, str(what)) if error.errno in DISK_ERRNOS else error


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    """Atomically write pretty JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and check it can be written, or raise HarnessError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise write_failed(error, f"to the {what} {path}") from None
        raise HarnessError(f"{what} {path} is not writable ({error.strerror}); "
                           "pass a folder you can write to") from None
    return path


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove the ``.<name>.*.tmp*`` files ``atomic_path`` left in ``folder`` when its process was killed.

    Only for a folder no other process writes into now (a run folder being resumed or just completed).
    Best effort: a file that cannot be removed is left, never an error.

    Returns:
        The files removed.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # e.g. a read-only disk: the leftover costs space, not correctness
    return removed


@contextmanager
def locked_folder(folder: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself) while the block runs.

    Writers of a shared folder (the report set, ``harness parity``, ``harness bench`` into one reports/)
    take it around their renames, so a report set swapped in never drops a file another command wrote
    at that moment. The folder may itself be swapped while a writer waits: the lock is retaken until it
    is held on the folder the path names now.
    """
    folder = Path(folder)
    while True:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, now = os.fstat(fd), os.stat(folder)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass  # swapped out and not yet back: take the lock again on what the path names
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield folder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where this system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False  # not Linux, or a C library before glibc 2.28
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, errno.EBUSY):
        return False  # a filesystem without exchange, a mount point: renamed file by file instead
    raise OSError(code, os.strerror(code), str(b))


def _staging_pattern(live: Path) -> list[str]:
    return [f".{live.name}.set-*.tmp", ".set-*.tmp"]  # beside the folder, or inside it (see replaced_set)


def _alive(staging: Path) -> bool:
    """Whether the process that made a staging folder (its name holds the pid) still runs."""
    try:
        pid = int(staging.name.split(".set-")[1].split("-")[0])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _other_stagings(live: Path, own: Path) -> list[Path]:
    """Staging folders of other writers of ``live``; those of dead processes are removed on the way."""
    found = []
    for folder, pattern in zip((live.parent, live), _staging_pattern(live)):
        for path in folder.glob(pattern):
            if path == own or not path.is_dir():
                continue
            if _alive(path):
                found.append(path)
            else:
                shutil.rmtree(path, ignore_errors=True)  # left by a killed writer
    return found


def _set_identity(live: Path, belongs: Callable[[str], bool]) -> frozenset:
    """Which files of the set ``live`` holds now: every published set brings new inodes."""
    try:
        entries = list(os.scandir(live))
    except FileNotFoundError:
        return frozenset()
    return frozenset((e.name, e.inode(), e.stat(follow_symlinks=False).st_mtime_ns)
                     for e in entries if belongs(e.name))


def _is_temporary(name: str) -> bool:
    # Another writer's temporaries: never carried into a new folder (they would outlive their writer).
    return name.startswith(".") and (".tmp" in name or name.startswith(".write-test-"))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)  # same inode: nothing copied, nothing that can fill a disk
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _carry_over(live: Path, staging: Path, belongs: Callable[[str], bool]) -> None:
    """Put into ``staging`` everything of ``live`` that is not the old set (README, other commands' files)."""
    for entry in os.scandir(live):
        if belongs(entry.name) or _is_temporary(entry.name) or (staging / entry.name).exists():
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, staging / entry.name, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), staging / entry.name)
        else:
            _link_or_copy(entry.path, str(staging / entry.name))


def _publish_files(staging: Path, live: Path, belongs: Callable[[str], bool]) -> None:
    """The fallback: rename the new set's files in one by one (in the order written), then drop the old set's rest."""
    new = sorted(staging.iterdir(), key=lambda path: path.stat().st_mtime_ns)
    for path in new:
        os.replace(path, live / path.name)
    names = {path.name for path in new}
    for entry in os.scandir(live):
        if belongs(entry.name) and entry.name not in names:
            os.unlink(entry.path)


def _make_staging(live: Path) -> tuple[Path, bool]:
    """An empty staging folder and whether it is beside ``live`` (so the whole folder can be swapped)."""
    prefix = f"set-{os.getpid()}-"
    same_disk = os.stat(live.parent).st_dev == os.stat(live).st_dev  # not when live is a mount point
    if same_disk:
        try:
            return Path(tempfile.mkdtemp(prefix=f".{live.name}.{prefix}", suffix=".tmp", dir=live.parent)), True
        except OSError as error:
            if error.errno not in DISK_ERRNOS:
                raise
            # The parent is not ours to write (or full): stage inside and rename file by file.
    return Path(tempfile.mkdtemp(prefix=f".{prefix}", suffix=".tmp", dir=live)), False


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


@contextmanager
def replaced_set(folder: Path, belongs: Callable[[str], bool], what: str = "report") -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds, what it wrote there replaces ``folder``'s set whole.

    The set is the files of ``folder`` whose names ``belongs`` accepts; other files there (a README, another
    command's output) are kept. Readers see the old set or the new one, never a mix:

    - the staging folder is made beside ``folder`` (same parent, same disk); once every file is written, the
      entries of ``folder`` outside the old set are hard-linked into it, and the two folders are exchanged in
      one ``renameat2(RENAME_EXCHANGE)``; the old folder is then removed;
    - where that cannot be (a parent that is not writable, ``folder`` a mount point, no ``renameat2``), the
      staging folder is made inside ``folder`` and its files are renamed in one by one (each atomic; the set
      whole only once the last is in, a few milliseconds later).

    Both take ``locked_folder(folder)``, so two writers publish one after the other: the last to finish wins
    whole, and each prints a ``note:`` line on stderr when another writer overlapped it.

    Args:
        folder: the shared folder (created if needed).
        belongs: whether a file name in ``folder`` is part of the set being replaced.
        what: the set's name in messages, e.g. "report".

    Raises:
        WriteFailed: the disk refused a write; ``folder`` holds the previous set unchanged, and no staging
            folder is left.
    """
    live = Path(folder)
    try:
        live.mkdir(parents=True, exist_ok=True)
        live = live.resolve()  # a symlinked folder: stage beside the real one
        before = _set_identity(live, belongs)
        staging, beside = _make_staging(live)
    except OSError as error:
        raise _refused(error, f"the {what} set to {folder}/") from None
    try:
        yield staging
        with locked_folder(live):
            if _set_identity(live, belongs) != before:
                _note(f"another {what} was written to {folder}/ while this one was; {folder}/ holds this one, "
                      "the one that finished last")
            if _other_stagings(live, staging):
                _note(f"another {what} is being written to {folder}/ at the same time; {folder}/ will hold the "
                      "one that finishes last, whole")
            if beside:
                _carry_over(live, staging, belongs)
                os.chmod(staging, stat.S_IMODE(os.stat(live).st_mode))  # mkdtemp made it 0700
            if not (beside and _exchange(staging, live)):
                _publish_files(staging, live, belongs)
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            raise
        raise _set_refused(error, what, folder) from None
    except WriteFailed as error:
        # Raised by an atomic write inside the staging folder: name the set, not a file of a folder that is gone.
        raise _set_refused(OSError(error.errno, os.strerror(error.errno or 0)), what, folder) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after an exchange: the old folder


def _set_refused(error: OSError, what: str, folder: Path) -> WriteFailed:
    failed = write_failed(error, f"the {what} set to {folder}/")
    return WriteFailed(f"{failed}; {folder}/ still holds the previous {what}, unchanged", failed.errno)
