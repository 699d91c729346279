"""Run folders: created exclusively (two runs started at once never share one), read back, listed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import RunConfig, config_from_dict
from ..errors import HarnessError
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


def read_run_info(run_dir: Path) -> dict:
    """run.json of a run folder, or HarnessError saying what is wrong with the folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"run folder {run_dir} does not exist; pass a folder written by `harness run`")
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as error:  # ValueError: bad JSON, and bytes that are not UTF-8
        raise HarnessError(f"{run_dir}/run.json is missing or corrupt ({error}); re-run or delete {run_dir}") from None
    if not isinstance(info, dict):
        raise HarnessError(f"{run_dir}/run.json holds a {type(info).__name__}, not a JSON object; re-run or delete {run_dir}")
    return info


def read_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig a run folder was made with, or HarnessError naming the broken config.json."""
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
