"""One run of a sweep, where it runs (a local pool process or a Ray worker): reuse, resume or train, then pack.

A run folder is found again by its config hash, so a task that runs twice (Ray retrying a worker that was
killed, a sweep started again after Ctrl-C) takes up where the first attempt stopped: a completed run is
reused, an unfinished one with a checkpoint is resumed (its final weights are byte-identical to an
uninterrupted run's on the same CPU type and thread count), anything else is trained afresh.

Where the run folder lives: the driver's ``--out`` when this worker sees it (the local pool, or storage the
cluster shares), else a scratch folder on the worker (``$HARNESS_SWEEP_SCRATCH``, default
``<tmp>/harness-sweep``), from where the completed folder travels back packed, with a sha256 the driver checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..backend import get_backend
from ..compare.session import find_reusable
from ..config import RunConfig, config_from_dict
from ..errors import DISK_ERRNOS, HarnessError, one_line, write_failed
from ..machine import keep_freed_memory
from ..runs.folder import read_run_config, read_run_info
from ..training.checkpoint import CHECKPOINT_NAME
from ..training.run import execute, resume

SCRATCH_ENV = "HARNESS_SWEEP_SCRATCH"
PACK_MAGIC = b"harness-run-folder/1\n"
MAX_PACKED_FILES = 64  # a run folder holds about ten files
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # what a run folder and its files are called


@dataclass(frozen=True)
class Job:
    """What the driver sends a worker for one run (plain values: it crosses processes and machines).

    Attributes:
        key: the task's key in the plan.
        label: what progress lines and Ray's process titles call the run.
        config: ``RunConfig.to_dict()`` of the run.
        folder: sub-folder of the output folder ("" or "control").
        out: the driver's ``--out``, absolute.
        storage: "shared" (write into ``out``), "ship" (scratch, then packed back) or "auto" (shared when
            ``out/marker`` exists here: the driver wrote it, so this worker sees the driver's folder).
        marker: the name of the driver's marker file in ``out`` (auto).
        scratch_key: names this sweep's scratch folder on a worker (the same on every attempt).
        reuse: take a completed run with this config (false under ``--fresh``; unfinished ones still resume).
        data_dir: where datasets are on the worker (None: its $HARNESS_DATA_DIR or ./data).
        threads: CPU threads of the framework (None: its default).
        checkpoint_every: also checkpoint every this many steps (0: at each epoch's end).
        command: the driver's command line, recorded in run.json.
    """

    key: str
    label: str
    config: dict
    folder: str
    out: str
    storage: str
    marker: str | None
    scratch_key: str
    reuse: bool
    data_dir: str | None
    threads: int | None
    checkpoint_every: int
    command: tuple[str, ...]


def scratch_root(key: str) -> Path:
    """This worker's scratch folder for a sweep whose runs travel back to the driver."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "harness-sweep") / key


def find_resumable(out: Path, config: RunConfig) -> Path | None:
    """The newest unfinished run folder under ``out`` of this backend, device request and config hash that holds a
    checkpoint (a run whose process was killed, or that Ctrl-C stopped), or None."""
    found = None
    for run_dir in sorted(Path(out).glob(f"*-{config.backend}-{config.config_hash[:8]}*")):
        if not (run_dir / CHECKPOINT_NAME).is_file():
            continue
        try:
            info, saved = read_run_info(run_dir), read_run_config(run_dir)
        except HarnessError:
            continue  # a broken folder is never resumed
        # running: its process was killed; interrupted: Ctrl-C. A failed run (diverged, full disk) would fail again.
        if info.get("status") in ("running", "interrupted") and info.get("config_hash") == config.config_hash \
                and info.get("backend") == config.backend and saved.device == config.device:
            found = run_dir
    return found


def obtain(config: RunConfig, out: Path, reuse: bool, data_dir: Path | None, checkpoint_every: int) -> tuple[Path, str]:
    """A completed run folder of ``config`` under ``out`` and how it came: reused, resumed or trained.

    Raises:
        HarnessError: the run could not be made (bad device, missing data, divergence ...).
        RunInterrupted: Ctrl-C (or a Ray cancel) stopped it after a checkpoint.
    """
    if reuse and (found := find_reusable(out, config)):
        return found, "reused"
    if unfinished := find_resumable(out, config):
        try:
            return resume(unfinished, data_dir, quiet=True, checkpoint_every=checkpoint_every).run_dir, "resumed"
        except HarnessError as error:
            print(f"note: could not resume {unfinished} ({error}); training it afresh", file=sys.stderr)
    return execute(config, out, data_dir, quiet=True, checkpoint_every=checkpoint_every).run_dir, "trained"


@contextmanager
def _command_line(command: tuple[str, ...]):
    """run.json records ``sys.argv``: make it the driver's command, not the pool's or Ray's worker command."""
    saved = sys.argv
    sys.argv = list(command) or saved
    try:
        yield
    finally:
        sys.argv = saved


def shared_here(job: Job) -> bool:
    """Whether this worker writes into the driver's ``--out`` (else scratch, packed back)."""
    if job.storage != "auto":
        return job.storage == "shared"
    return bool(job.marker) and (Path(job.out) / job.marker).is_file()


def run_job(job: Job) -> dict:
    """Obtain one run; never raises (a failed run is a result): the sweep goes on.

    Returns:
        ``key``, ``status`` (completed, failed, interrupted), ``how`` (reused, resumed, trained), ``run_name``,
        ``test_accuracy``, ``error``, ``seconds`` (this call), ``host``, ``pid``, ``started_at``,
        ``harness_version``, ``shipped``; with ``payload`` (``pack_folder``), ``sha256`` and ``bytes`` when the
        folder travels back.
    """
    started, clock = time.time(), time.perf_counter()
    result = {"key": job.key, "status": "failed", "how": None, "run_name": None, "error": None,
              "host": socket.gethostname(), "pid": os.getpid(), "started_at": started, "harness_version": __version__,
              "shipped": False}
    try:
        config = config_from_dict(job.config)
        shared = shared_here(job)
        root = Path(job.out) if shared else scratch_root(job.scratch_key)
        target = root / job.folder if job.folder else root
        if job.threads:
            get_backend(config.backend).set_threads(job.threads)  # process-wide, before the run's first kernel
        keep_freed_memory()  # a worker process trains as the CLI's does
        with _command_line(job.command):
            run_dir, how = obtain(config, target, job.reuse, Path(job.data_dir) if job.data_dir else None,
                                  job.checkpoint_every)
        info = read_run_info(run_dir)
        result.update(status="completed", how=how, run_name=run_dir.name, test_accuracy=info.get("test_accuracy"))
        if not shared:
            payload = pack_folder(run_dir)
            result.update(shipped=True, payload=payload, sha256=hashlib.sha256(payload).hexdigest(),
                          bytes=len(payload))
    except KeyboardInterrupt as error:  # RunInterrupted (a checkpoint was written), or a Ray cancel
        # `harness run --resume` is RunInterrupted's advice; a sweep resumes its runs itself when run again
        result.update(status="interrupted", error=str(error).split("; continue with:")[0] or "Ctrl-C")
    except HarnessError as error:
        result.update(error=" ".join(str(error).split()))
    except Exception as error:  # a harness bug: the sweep goes on, the traceback goes into sweep_runs.csv
        result.update(error=f"harness bug: {one_line(error, 400)}", traceback=traceback.format_exc())
    result["seconds"] = time.perf_counter() - clock
    return result


def pack_folder(run_dir: Path) -> bytes:
    """A run folder's files as one byte string: magic, header length, JSON header (names, sizes, sha256), bytes.

    Only the folder's regular files travel (no sub-folders, links or ``.``-temporaries); run.json goes last, so
    a folder being unpacked has no run.json, and is never taken for a completed run, until every file is in.
    """
    files = [path for path in sorted(Path(run_dir).iterdir(), key=lambda p: (p.name == "run.json", p.name))
             if path.is_file() and not path.is_symlink() and not path.name.startswith(".")]
    contents = [path.read_bytes() for path in files]
    header = json.dumps({"name": Path(run_dir).name, "files": [
        [path.name, len(data), hashlib.sha256(data).hexdigest()] for path, data in zip(files, contents)]}).encode()
    return b"".join([PACK_MAGIC, struct.pack(">Q", len(header)), header, *contents])


def _damaged(what: str) -> HarnessError:
    return HarnessError(f"a run folder came back from its worker damaged ({what}); run the sweep again to fetch it "
                        "once more (the worker keeps its copy)")


def _header(payload: bytes) -> tuple[str, list, int]:
    """(folder name, [[name, size, sha256], ...], offset of the first file) of a packed folder, checked."""
    start = len(PACK_MAGIC) + 8
    if not payload.startswith(PACK_MAGIC) or len(payload) < start:
        raise _damaged("it does not start as a packed run folder")
    (length,) = struct.unpack(">Q", payload[len(PACK_MAGIC):start])
    try:
        header = json.loads(payload[start:start + length])
        name, files = header["name"], header["files"]
        if not (isinstance(name, str) and FILE_NAME.fullmatch(name) and isinstance(files, list)
                and len(files) <= MAX_PACKED_FILES):
            raise ValueError("bad name or file list")
        for entry in files:
            ok = isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) \
                and FILE_NAME.fullmatch(entry[0]) and type(entry[1]) is int and entry[1] >= 0
            if not ok:
                raise ValueError(f"bad entry {str(entry)[:60]}")
    except (ValueError, KeyError, TypeError) as error:
        raise _damaged(f"its header: {one_line(error, 100)}") from None
    if len({entry[0] for entry in files}) < len(files) or start + length + sum(e[1] for e in files) != len(payload):
        raise _damaged("its header does not match its length")
    return name, files, start + length


def unpack_folder(payload: bytes, sha256: str, into: Path) -> Path:
    """Check a packed run folder against its sha256 and write it under ``into`` (a new folder, never over one).

    Returns:
        The new run folder: ``into/<its name>``, or ``<its name>-N`` where that is taken.

    Raises:
        HarnessError: the checksum or the layout is wrong (nothing is written then).
        WriteFailed: the disk refused a file (the half-written folder is removed).
    """
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise _damaged(f"sha256 {hashlib.sha256(payload).hexdigest()[:16]}... is not the worker's {sha256[:16]}...")
    name, files, offset = _header(payload)
    for entry_name, size, digest in files:
        if hashlib.sha256(payload[offset:offset + size]).hexdigest() != digest:
            raise _damaged(f"{entry_name} does not match its sha256")
        offset += size
    into = Path(into)
    staging = None
    try:
        into.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.ship-", suffix=".tmp", dir=into))
        offset = _header(payload)[2]
        for entry_name, size, _ in files:
            (staging / entry_name).write_bytes(payload[offset:offset + size])
            offset += size
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it 0700; a run folder is shared like any other
        for attempt in range(1000):
            final = into / (name if attempt == 0 else f"{name}-{attempt}")
            if not final.exists():  # rename would replace an empty folder of that name: look first
                staging.rename(final)
                staging = None
                return final
        raise HarnessError(f"could not place run folder {name} under {into}: 1000 names taken; clean up {into}")
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise write_failed(error, f"run folder {name} under {into}") from None
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
