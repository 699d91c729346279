"""``harness compare`` and ``harness report``: obtain runs of one config, cross-check them, write the report.

A backend that fails (not installed, unusable device, crash in training)
becomes an error row; the rest of the report is still written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..errors import EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_USER_ERROR, HarnessError
from ..report.folder import write_reports
from ..report.tables import Report, overall_verdict, provenance
from ..runs.files import ensure_writable_dir
from ..runs.folder import completed_runs, read_run_config, read_run_info
from ..training.run import execute, load_data
from .matrix import LoadedRun, cross_check, load_run

CONTROL_FOLDER = "control"


def find_reusable(out: Path, config: RunConfig) -> Path | None:
    """The newest completed run under ``out`` with this backend, device request and config hash."""
    matches = [run_dir for run_dir, info in completed_runs(out)
               if info.get("config_hash") == config.config_hash and info.get("backend") == config.backend
               and _requested_device(run_dir) == config.device]
    return matches[-1] if matches else None


def _requested_device(run_dir: Path) -> str | None:
    try:
        return read_run_config(run_dir).device
    except HarnessError:
        return None  # a broken folder is never reused


def _obtain(config: RunConfig, out: Path, fresh: bool, data_dir: Path | None, quiet: bool) -> Path | str:
    """A completed run folder of ``config`` (reused or freshly trained), or why there is none."""
    reused = None if fresh else find_reusable(out, config)
    if reused:
        return reused
    try:
        return execute(config, out, data_dir, quiet=quiet).run_dir
    except HarnessError as error:
        return str(error)


def obtain_runs(config: RunConfig, backends: list[str], out: Path, fresh: bool, data_dir: Path | None,
                quiet: bool) -> dict[str, Path | str]:
    """Backend -> run folder (reused or freshly trained), or the error message of a backend that failed."""
    return {name: _obtain(replace(config, backend=name), out, fresh, data_dir, quiet) for name in backends}


def control_config(config: RunConfig, backend: str) -> RunConfig:
    """``config`` on ``backend`` from initial weights one float32 step up: the control run."""
    return replace(config, backend=backend, model=replace(config.model, init_ulps=config.model.init_ulps + 1))


def obtain_control(config: RunConfig, backend: str, out: Path, fresh: bool, data_dir: Path | None,
                   quiet: bool) -> Path | str:
    """The control run of ``backend`` under ``out/control/`` (apart, so `harness report` never takes
    one for a backend's own run), reused or trained, or why there is none."""
    return _obtain(control_config(config, backend), out / CONTROL_FOLDER, fresh, data_dir, quiet)


def saved_controls(config: RunConfig, backends: list[str], out: Path) -> dict[str, Path]:
    """The completed control runs already under ``out/control/`` for these backends."""
    found = {name: find_reusable(out / CONTROL_FOLDER, control_config(config, name)) for name in backends}
    return {name: path for name, path in found.items() if path is not None}


def differing_fields(configs: list[RunConfig]) -> list[str]:
    """Settings (other than backend and device) whose values differ between configs."""
    flats = [c.flat() for c in configs]
    return sorted(k for k in flats[0] if k not in ("backend", "device") and len({repr(f[k]) for f in flats}) > 1)


def check_comparable(run_dirs: list[Path]) -> RunConfig:
    """The shared config of run folders, or HarnessError naming the settings that differ."""
    configs = []
    for run_dir in run_dirs:
        read_run_info(run_dir)
        configs.append(read_run_config(run_dir))
    fields = differing_fields(configs)
    if fields:
        raise HarnessError(f"runs differ in {', '.join(fields)}, not only backend/device: they are not comparable; "
                           "compare runs made with the same settings")
    return configs[0]


def label_runs(run_dirs: list[Path]) -> dict[str, Path]:
    """``compare --runs``: a label per run folder (its backend, or ``backend@device`` where two runs share a
    backend), after checking there is something to compare.

    Raises:
        HarnessError: fewer than two distinct folders, the same folder twice, or two runs of one backend on one
            device; or a run.json without a backend or device name.
    """
    where, kinds = {}, {}
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in where:
            raise HarnessError(f"--runs names {run_dir} twice; compare two different run folders, one per backend")
        where[resolved] = run_dir = Path(run_dir)
        info = read_run_info(run_dir)  # a folder that is not a run says so before anything is counted
        backend, device = info.get("backend"), info.get("device")
        if not isinstance(backend, str) or not isinstance(device, str):
            raise HarnessError(f"{run_dir}/run.json names no backend and device (backend={backend!r}, "
                               f"device={device!r}); pass a folder written by `harness run`")
        if (backend, device) in kinds.values():
            other = next(d for d, kind in kinds.items() if kind == (backend, device))
            raise HarnessError(f"--runs {other} and {run_dir} are both {backend} on {device}: nothing to compare; "
                               "pass runs of different backends (or of one backend on different devices)")
        kinds[run_dir] = (backend, device)
    if len(kinds) < 2:
        raise HarnessError(f"--runs needs at least two run folders to compare, got {len(kinds)} ({run_dirs[0]}); "
                           "pass one run of each backend, e.g. --runs runs/<pytorch run> runs/<mindspore run>")
    backends = [backend for backend, _ in kinds.values()]
    return {(backend if backends.count(backend) == 1 else f"{backend}@{device}"): run_dir
            for run_dir, (backend, device) in kinds.items()}


# speed.csv's phases and the run.json field each one's images/s comes from (older runs lack the inference ones).
SPEED_PHASES = {"train": "images_per_s", "train-first-epoch": "first_epoch_images_per_s",
                "infer-native": "infer_native_images_per_s", "infer-onnxruntime": "infer_onnx_images_per_s"}


def speed_table(tables: dict) -> pd.DataFrame:
    """One row per backend and phase with images/s, the ratio to PyTorch's in the same phase, and whether the
    run was timed while other processes took more than half the cores (``under_load``). ``train`` is the
    steady state; ``train-first-epoch`` includes graph compilation and warm-up."""
    runs = tables["runs"]
    frames = []
    load = [column for column in ("under_load", "other_cores_busy", "cores") if column in runs]
    for phase, column in SPEED_PHASES.items():
        if runs.empty or column not in runs:
            continue
        speed = runs[["backend", "model", column, *load]].rename(columns={column: "images_per_s"})
        speed = speed.assign(images_per_s=pd.to_numeric(speed.images_per_s, errors="coerce")).dropna()
        base = speed.loc[speed.backend == "pytorch", "images_per_s"]
        reference = float(base.iloc[0]) if len(base) else float("nan")
        frames.append(speed.assign(phase=phase, ratio_to_pytorch=speed.images_per_s / reference))
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_report(config: RunConfig, runs: dict[str, Path | str], data_dir: Path | None,
                 controls: dict[str, Path] | None = None) -> Report:
    """Evaluate the runs of one config, and the control runs given, into a Report."""
    spec, dataset = load_data(config, data_dir)
    loaded: dict[str, LoadedRun | str] = {}
    for name, run in runs.items():
        if isinstance(run, str):
            loaded[name] = run
            continue
        info = read_run_info(run)
        loaded[name] = load_run(run, spec, dataset) if info.get("status") == "completed" else \
            f"run {run} is {info.get('status')}: {info.get('error', 'not finished')}"
    loaded_controls = {name: load_run(path, spec, dataset) for name, path in (controls or {}).items()}
    tables, diffs = cross_check(spec, dataset, loaded, loaded_controls)
    tables["speed"] = speed_table(tables)
    verdict = overall_verdict(tables["agreement"].to_dict("records"))
    title = (f"{spec.name} on {config.data.dataset}, {config.train.epochs} epochs, "
             f"config {config.config_hash[:8]}")
    return Report(tables=tables, logit_diffs=diffs, verdict=verdict, title=title)


def write(report: Report, config: RunConfig, reports_dir: Path) -> list[Path]:
    """Write the report files with provenance columns."""
    ensure_writable_dir(reports_dir, "reports folder")
    return write_reports(report, reports_dir, provenance(config))


def exit_code(report: Report) -> int:
    """0 all checks passed, 1 a check failed, 2 a backend could not run, 3 inconclusive (errors.py)."""
    codes = {"passed": 0, "failed": EXIT_FAILED, "inconclusive": EXIT_INCONCLUSIVE}
    return codes.get(report.verdict, EXIT_USER_ERROR)


def latest_runs_by_backend(runs_dir: Path) -> dict[str, Path]:
    """For ``harness report``: the newest completed run of each backend under ``runs_dir``."""
    found = completed_runs(runs_dir)
    if not found:
        raise HarnessError(f"no completed runs under {runs_dir}; run `harness run` or `harness compare` first")
    hashes = {info["config_hash"] for _, info in found}
    newest_hash = found[-1][1]["config_hash"]
    chosen = {info["backend"]: run_dir for run_dir, info in found if info["config_hash"] == newest_hash}
    if len(hashes) > 1:
        print(f"note: {len(hashes)} configs under {runs_dir}; reporting the newest ({newest_hash[:8]})")
    return chosen
