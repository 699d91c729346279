"""Run folders: created exclusively (two runs started at once never share one), read back, listed."""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path

from ..config import RunConfig, config_from_dict
from ..errors import HarnessError, one_line
from .files import ensure_writable_dir


def create_run_dir(out: Path, backend: str, model: str, config_hash: str) -> Path:
    """A new, exclusively created ``<out>/<timestamp>-<model>-<backend>-<hash8>[-n]`` folder."""
    out = ensure_writable_dir(out, "output folder")
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{backend}-{config_hash[:8]}"
    for attempt in range(1000):
        candidate = out / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()  # exclusive: fails if another run took the name first
            return candidate
        except FileExistsError:
            continue
    raise HarnessError(f"could not create a run folder under {out}: 1000 names taken; clean up {out}")


REQUIRED_FILES = ("config.json", "run.json", "weights.npz", "predictions.npz", "model.onnx", "metrics.csv")


# run.json's fields that every reader relies on, and the type each must have.
RUN_INFO_FIELDS = {"run_id": str, "backend": str, "config_hash": str, "status": str}
_NOT_A_RUN = "pass a folder written by `harness run`"


def _not_a_run(run_dir: Path, name: str) -> HarnessError | None:
    """The error for a folder that holds neither run.json nor config.json (a runs folder, a dataset folder):
    it is no run, so nothing may suggest re-running or deleting it. None where either file is there."""
    if any((run_dir / f).exists() for f in ("run.json", "config.json")):
        return None
    return HarnessError(f"{run_dir} is not a run folder: it has no {name}; {_NOT_A_RUN}")


def read_run_info(run_dir: Path, known_backends: Collection[str] = ()) -> dict:
    """run.json of a run folder, its fields checked, or HarnessError naming the file and the field.

    Args:
        run_dir: the run folder.
        known_backends: where given, ``backend`` must be one of them (this package sits below the backend
            registry, so its callers pass the names).

    Raises:
        HarnessError: not a run folder, run.json unreadable, or a field missing or of the wrong type.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"run folder {run_dir} does not exist; {_NOT_A_RUN}")
    if error := _not_a_run(run_dir, "run.json"):
        raise error
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as error:  # ValueError: bad JSON, and bytes that are not UTF-8
        raise HarnessError(f"{run_dir}/run.json is missing or corrupt ({one_line(error, 200)}); it is not a run "
                           f"folder harness can read: {_NOT_A_RUN}, or start this run again") from None
    if not isinstance(info, dict):
        raise HarnessError(f"{run_dir}/run.json holds a {type(info).__name__}, not a JSON object; {_NOT_A_RUN}")
    for key, kind in RUN_INFO_FIELDS.items():
        if not isinstance(info.get(key), kind):
            got = "no such field" if key not in info else f"a {type(info[key]).__name__}: {str(info[key])[:40]!r}"
            raise HarnessError(f"{run_dir}/run.json: field {key!r} should be a {kind.__name__}, got {got}; "
                               f"the file was edited or not written by `harness run`; {_NOT_A_RUN}")
    if known_backends and info["backend"] not in known_backends:
        raise HarnessError(f"{run_dir}/run.json: field 'backend' is {info['backend'][:40]!r}, expected one of: "
                           f"{', '.join(known_backends)}; {_NOT_A_RUN}")
    return info


def read_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig a run folder was made with, or HarnessError naming the broken config.json."""
    if error := _not_a_run(Path(run_dir), "config.json"):
        raise error
    try:
        saved = json.loads((Path(run_dir) / "config.json").read_text())
        config, saved_hash = config_from_dict(saved["config"]), saved["config_hash"]
    except (OSError, KeyError, TypeError, ValueError) as error:  # ValueError: bad JSON or not UTF-8
        raise HarnessError(f"{run_dir}/config.json is missing or corrupt ({error}); re-run it") from None
    if saved_hash != config.config_hash:
        raise HarnessError(f"{run_dir}/config.json was edited: its settings hash to {config.config_hash[:12]}, "
                           f"but it records {str(saved_hash)[:12]}; re-run instead of editing a run folder")
    return config


def completed_runs(out: Path) -> list[tuple[Path, dict]]:
    """Every completed run folder under ``out`` with its run.json, oldest first."""
    found = []
    for run_json in sorted(Path(out).glob("*/run.json")):
        try:
            info = read_run_info(run_json.parent)
        except HarnessError:
            continue  # a folder being written or broken: never reused
        if info.get("status") == "completed" and all((run_json.parent / f).exists() for f in REQUIRED_FILES):
            found.append((run_json.parent, info))
    return found
