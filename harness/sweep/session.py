"""``harness sweep`` end to end: reuse what exists, run the rest on an executor, compare each seed, judge, report.

1. Every run of the plan that ``--out`` already holds completed (same config hash, backend and device, as
   ``harness compare`` finds them) is reused; nothing else is asked of the executor.
2. The rest go to the executor (a local pool, or a Ray cluster) as ``Job``s. A finished run is a line on
   stderr; one that travelled back from a Ray worker is checked against its sha256 and unpacked into ``--out``.
3. As soon as every run of a config at one seed is in, that seed is compared as ``harness compare`` does
   (``compare.session.build_report``: same-weights checks, trained pair against the control), and its report is
   written to ``<reports>/sweep/<config>-seed<N>/``. A seed whose runs and tolerances have not changed since the
   last sweep takes its rows from there instead of comparing again.
4. Across seeds: sweep.csv, sweep_pairs.csv, the verdict (``stats``), summary.md and sweep.png (``report``).

Ctrl-C drops the runs not started, lets the running ones stop at a step with a checkpoint, keeps every
finished run, and says which command continues (exit 130).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .. import __version__
from ..compare.session import build_report, find_reusable, write
from ..errors import EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_USER_ERROR, HarnessError
from ..machine import cores
from ..progress import Progress, format_seconds
from ..report.tables import outcome
from ..runs.files import ensure_writable_dir, write_json
from ..runs.folder import read_run_info
from ..tolerances import policies
from .executors import LocalPool, RayCluster
from .plan import Group, Plan, Task
from .report import SEED_REPORTS, SweepReport, console_lines, write_sweep_reports
from .stats import ERROR, FAIL, INCONCLUSIVE, PASS, backend_table, overall, pair_table
from .worker import Job, unpack_folder

EXIT_CODES = {PASS: 0, FAIL: EXIT_FAILED, INCONCLUSIVE: EXIT_INCONCLUSIVE, ERROR: EXIT_USER_ERROR}
SEED_CACHE = "sweep_seed.json"  # beside a seed's compare report: what it was built from, and its rows
STORAGES = ("auto", "shared", "ship")


@dataclass
class Options:
    """How to run a sweep (the CLI's flags).

    Attributes:
        executor: "local" or "ray".
        address: the Ray head (ray; else $RAY_ADDRESS).
        workers: local: worker processes (default min(4, cores)); ray: tasks in flight at once (default all).
        threads: CPU threads per run (local default cores // workers; ray default 1, and that many CPUs asked).
        out: run folders (reused by config hash).
        reports: the report set; each seed's compare report under ``<reports>/sweep/``.
        fresh: train again even where a completed run exists (unfinished ones still resume: same result).
        data_dir: where datasets are (on the workers too).
        quiet: no progress lines or bar.
        storage: ray only: "auto" (workers that see --out write there, others ship), "shared" or "ship".
        retries: times a run whose worker process died is started again.
        checkpoint_every: also checkpoint every this many steps (0: each epoch's end).
        seed_reports: write (and reuse) each seed's compare report.
    """

    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    out: Path = Path("runs")
    reports: Path = Path("reports")
    fresh: bool = False
    data_dir: Path | None = None
    quiet: bool = False
    storage: str = "auto"
    retries: int = 3
    checkpoint_every: int = 0
    seed_reports: bool = True


def local_shape(workers: int | None, threads: int | None) -> tuple[int, int]:
    """(worker processes, threads each) of the local pool: the cores divided between the workers.

    The thread count must not depend on how many runs are left: a run's floating-point results depend on it,
    and a sweep continued later must give the bytes it would have given in one go.
    """
    workers = workers or max(1, min(4, cores()))
    return workers, threads or max(1, cores() // workers)


@dataclass
class _Progress:
    """A line per finished run (``[3/8] config seed 1 mindspore: trained, accuracy 91.41%, 12.3 s, ETA 40 s``) and
    an overall bar on a terminal; plain lines in a log."""

    total: int
    done: int
    quiet: bool
    started: float = field(default_factory=time.perf_counter)
    counted: int = 0

    def __post_init__(self) -> None:
        self.bar = Progress("sweep", self.total, self.quiet, initial=self.done, unit="run")

    def say(self, text: str) -> None:
        """One line on stderr (above the bar on a terminal); nothing when quiet."""
        if self.quiet:
            return
        if self.bar.on_terminal:
            tqdm.write(f"sweep: {text}", file=sys.stderr)
        else:
            print(f"sweep: {text}", file=sys.stderr, flush=True)

    def finished(self, text: str) -> None:
        """A run finished: move the bar, say ``[done/total] text`` with the ETA of the rest."""
        self.done, self.counted = self.done + 1, self.counted + 1
        self.bar.update(1)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.counted * (self.total - self.done)
        self.say(f"[{self.done}/{self.total}] {text}" + (f", ETA {format_seconds(eta)}" if self.done < self.total
                                                          else ""))

    def close(self) -> None:
        """Remove the bar."""
        self.bar.close()


def _base_row(task: Task) -> dict:
    config = task.config
    return {"variant": task.variant.key, "config": task.variant.label, "model": config.model.model,
            "dataset": config.data.dataset, **dict(task.variant.values), "seed": task.seed,
            "backend": config.backend, "device": config.device, "role": task.role, "config_hash": config.config_hash}


def _info_columns(run_dir: Path) -> dict:
    info = read_run_info(run_dir)
    return {"test_accuracy": info.get("test_accuracy"), "train_seconds": info.get("train_seconds"),
            "images_per_s": info.get("images_per_s"), "run_dir": str(run_dir)}


@dataclass
class _Sweep:
    """The state of one sweep while it runs: each task's row and run folder (or error), each group's rows."""

    plan: Plan
    options: Options
    out: Path
    progress: _Progress | None = None
    rows: dict = field(default_factory=dict)  # task key -> sweep_runs row
    paths: dict = field(default_factory=dict)  # task key -> run folder, or why there is none
    seed_rows: dict = field(default_factory=dict)  # group index -> sweep_seeds rows
    noted_versions: set = field(default_factory=set)

    def reuse(self) -> list[Task]:
        """Take every completed run already in ``--out``; returns the tasks still to run."""
        todo = []
        for task in self.plan.tasks:
            found = None if self.options.fresh else find_reusable(self.out / task.folder, task.config)
            if found is None:
                todo.append(task)
                continue
            self.paths[task.key] = found
            self.rows[task.key] = {**_base_row(task), "status": "completed", "how": "reused", **_info_columns(found)}
        return todo

    def record(self, task: Task, result: dict, wall: float | None, attempts: int) -> None:
        """A finished job: its row, and its run folder unpacked here when it travelled."""
        row = {**_base_row(task), "status": result.get("status"), "how": result.get("how"),
               "test_accuracy": result.get("test_accuracy"), "seconds": result.get("seconds"), "wall_seconds": wall,
               "attempts": attempts, "bytes_shipped": result.get("bytes"),
               "host": result.get("host"), "error": result.get("error")}
        version = result.get("harness_version")
        if version and version != __version__ and version not in self.noted_versions:
            self.noted_versions.add(version)
            self.progress.say(f"note: {result.get('host')} runs harness {version}, this machine {__version__}")
        if row["status"] == "completed":
            try:
                folder = self.out / task.folder if task.folder else self.out
                if result.get("shipped"):
                    run_dir = unpack_folder(result["payload"], result["sha256"], folder)
                else:
                    run_dir = folder / result["run_name"]
                    if not (run_dir / "run.json").is_file():
                        raise HarnessError(f"{result.get('host')} wrote {run_dir}, which this machine does not see; "
                                           "its --out is not shared storage: use --storage ship (or auto)")
                row.update(_info_columns(run_dir))
                self.paths[task.key] = run_dir
            except HarnessError as error:
                row.update(status="failed", error=" ".join(str(error).split()))
        if row["status"] != "completed":
            self.paths[task.key] = f"{task.config.backend} {task.role} run {row['status']}: {row['error']}"
        self.rows[task.key] = row
        how = row["how"] or row["status"]
        text = f"{task.label}: {how}"
        if row["status"] == "completed":
            text += f", accuracy {float(row['test_accuracy']):.2%}" if row.get("test_accuracy") is not None else ""
            text += f", {format_seconds(row['seconds'])}" if row.get("seconds") is not None else ""
        else:
            text += f": {row['error']}"
        self.progress.finished(text)

    def complete_groups(self) -> list[int]:
        """Groups whose runs are all in and that are not compared yet."""
        return [i for i, group in enumerate(self.plan.groups)
                if i not in self.seed_rows and all(task.key in self.paths for task in group.tasks)]

    def compare(self, index: int) -> None:
        """Compare one group as ``harness compare`` does, or take its rows from the last sweep's report."""
        group = self.plan.groups[index]
        runs = {task.config.backend: self.paths[task.key] for task in group.runs}
        first = group.runs[0].config.backend
        control = self.paths.get(group.control.key) if group.control else None
        controls = {first: control} if isinstance(control, Path) and isinstance(runs[first], Path) else {}
        folder = Path(self.options.reports) / SEED_REPORTS / f"{group.variant.key}-seed{group.seed}"
        key = _cache_key(group, self.plan.backends, runs, controls)
        cached = _cached_rows(folder, key) if self.options.seed_reports else None
        if cached is not None:
            self.seed_rows[index] = cached
            return
        try:
            report = build_report(group.config, runs, self.options.data_dir, controls)
        except HarnessError as error:  # e.g. the dataset is on the workers but not here
            self.seed_rows[index] = _seed_rows(self.plan, group, runs, None, None, f"comparison failed: {error}")
            return
        link = None
        if self.options.seed_reports:
            write(report, group.config, folder)
            link = f"{SEED_REPORTS}/{folder.name}/summary.md"
        rows = self.seed_rows[index] = _seed_rows(self.plan, group, runs, report, link, None)
        if self.options.seed_reports:
            write_json(folder / SEED_CACHE, {"key": key, "rows": rows})


def _cache_key(group: Group, backends: tuple[str, ...], runs: dict, controls: dict) -> str:
    """What a seed's rows depend on: its run folders (named by time and hash) or errors, the tolerances, and how
    the sweep names the config (its axes may have changed while the runs stayed)."""
    names = {name: (run.name if isinstance(run, Path) else run) for name, run in runs.items()}
    identity = {"runs": names, "controls": {n: p.name for n, p in controls.items()}, "harness": __version__,
                "tolerances": repr(policies()), "backends": backends, "config": group.variant.label,
                "values": group.variant.values}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _cached_rows(folder: Path, key: str) -> list[dict] | None:
    try:
        saved = json.loads((folder / SEED_CACHE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("rows"), list) \
            or not (folder / "summary.md").is_file():
        return None
    return saved["rows"]


def _backend_of(evaluator) -> str:
    return str(evaluator).split(":")[0]


def _seed_rows(plan: Plan, group: Group, runs: dict, report, link: str | None, failure: str | None) -> list[dict]:
    """sweep_seeds rows of one group: one per pair of backends, from its compare report's agreement rows."""
    rows = report.tables["agreement"].to_dict("records") if report is not None else []
    trained = {(_backend_of(r["evaluator_a"]), _backend_of(r["evaluator_b"])): r for r in rows
               if r.get("kind") == "trained"}
    checks = [r for r in rows if r.get("kind") not in ("trained", "run")]
    failed = [f"{r.get('evaluator_a')} vs {r.get('evaluator_b')} ({r.get('inputs')})" for r in checks
              if outcome(r) == "FAIL"]
    base = {"variant": group.variant.key, "config": group.variant.label, "model": group.config.model.model,
            "dataset": group.config.data.dataset, **dict(group.variant.values), "seed": group.seed,
            "checks": len(checks), "checks_failed": len(failed), "failed_checks": "; ".join(failed),
            "compare_verdict": report.verdict.upper() if report is not None else None, "report": link}
    out = []
    for a, b in itertools.combinations(plan.backends, 2):
        row = {**base, "backend_a": a, "backend_b": b}
        missing = [runs[name] for name in (a, b) if not isinstance(runs[name], Path)]
        if missing or failure:
            out.append({**row, "status": "error", "error": "; ".join([*map(str, missing), *filter(None, [failure])])})
            continue
        pair = trained.get((a, b), {})
        out.append({**row, "status": pair.get("status", "error"), "accuracy_a": pair.get("accuracy_a"),
                    "accuracy_b": pair.get("accuracy_b"), "accuracy_delta": pair.get("accuracy_delta"),
                    "top1_agree": pair.get("top1_agree"), "control_top1_agree": pair.get("control_top1_agree"),
                    "min_top1_agree": pair.get("min_top1_agree"), "reason": pair.get("reason"),
                    "error": None if pair else "compare made no trained row for this pair"})
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in out]  # NaN -> null


def _jobs(tasks: list[Task], options: Options, out: Path, storage: str, marker: str | None, threads: int,
          command: tuple[str, ...]) -> list[Job]:
    scratch = hashlib.sha256(f"{socket.gethostname()}:{out}".encode()).hexdigest()[:12]
    data_dir = str(Path(options.data_dir).resolve()) if options.data_dir else None
    return [Job(task.key, task.label, task.config.to_dict(), task.folder, str(out), storage, marker, scratch,
                not options.fresh, data_dir, threads, options.checkpoint_every, command) for task in tasks]


def _executor(options: Options, plan: Plan, jobs: list[Job], threads: int, workers: int | None):
    if options.executor == "local":
        return LocalPool(workers, options.retries)
    cluster = RayCluster(options.address, options.retries, threads, options.workers)
    try:
        cluster.check_feasible(jobs, plan.devices)
    except BaseException:
        cluster.close()
        raise
    return cluster


def run_sweep(plan: Plan, options: Options, command: tuple[str, ...], continue_with: str) -> int:
    """Run a sweep and write its reports.

    Args:
        plan: the sweep file, read (``plan.read_plan``).
        options: the flags.
        command: the command line, recorded in each new run's run.json.
        continue_with: the command that continues this sweep (printed on Ctrl-C).

    Returns:
        0 every pair passed, 1 one failed, 2 a run could not be made, 3 inconclusive (errors.py).

    Raises:
        HarnessError: an unusable --out or --reports, Ray missing or unreachable, resources no node offers.
        KeyboardInterrupt: Ctrl-C, with what was kept and the command that continues.
    """
    started = time.perf_counter()
    if options.storage not in STORAGES:
        raise HarnessError(f"--storage {options.storage!r}: expected one of {', '.join(STORAGES)}")
    out = Path(options.out).resolve()
    sweep = _Sweep(plan, options, out)
    todo = sweep.reuse()
    if options.executor == "local":
        workers, threads = local_shape(options.workers, options.threads)
        count = min(workers, len(todo))
        storage, where = "shared", (f"local ({count} worker{'s' * (count != 1)} x {threads} "
                                    f"thread{'s' * (threads != 1)})")
    else:
        workers, threads = options.workers, options.threads or 1
        storage, where = options.storage, f"Ray at {options.address or os.environ.get('RAY_ADDRESS')}"
    where = where if todo else "this machine (nothing to run)"
    marker = f".sweep-{uuid.uuid4().hex}.marker" if storage == "auto" else None
    jobs = _jobs(todo, options, out, storage, marker, threads, command)
    by_key = {task.key: task for task in todo}
    # Connected (and the cluster's resources checked) before anything is written: a refusal leaves no folder.
    executor = _executor(options, plan, jobs, threads, workers) if jobs else None
    try:
        ensure_writable_dir(out, "output folder")
        ensure_writable_dir(Path(options.reports), "reports folder")
        sweep.progress = _Progress(len(plan.tasks), len(plan.tasks) - len(todo), options.quiet)
        sweep.progress.say(f"{plan.source}: {plan.describe()}; {len(plan.tasks) - len(todo)} reused from "
                           f"{options.out}, {len(todo)} to run" + (f" on {where}" if todo else ""))
        if marker:
            (out / marker).write_bytes(b"")  # a worker that sees this file sees --out: it writes there directly
        if executor is not None:
            executor.submit(jobs)
        for index in sweep.complete_groups():
            sweep.compare(index)
        for done in (executor.results() if executor else ()):
            sweep.record(by_key[done.job.key], done.result, done.received - done.dispatched, done.attempts)
            for index in sweep.complete_groups():
                sweep.compare(index)
    except KeyboardInterrupt:
        _stop(sweep, executor, by_key, continue_with)
    finally:
        if sweep.progress is not None:
            sweep.progress.close()
        if executor is not None:
            executor.close()
        if marker:
            (out / marker).unlink(missing_ok=True)
    return _finish(sweep, time.perf_counter() - started, where)


def _stop(sweep: _Sweep, executor, by_key: dict, continue_with: str) -> None:
    """Ctrl-C: cancel what has not started, collect what was running (it stops at a step, checkpointed)."""
    dropped = executor.cancel() if executor is not None else 0
    if sweep.progress is None:
        sweep.progress = _Progress(len(sweep.plan.tasks), len(sweep.rows), sweep.options.quiet)
    sweep.progress.say(f"interrupted: {dropped} run(s) not started; waiting for the running ones to stop at a step "
                       "(Ctrl-C again to end them now)")
    try:
        for done in (executor.results() if executor else ()):
            sweep.record(by_key[done.job.key], done.result, done.received - done.dispatched, done.attempts)
    except KeyboardInterrupt:
        executor.kill()
    finished = sum(row.get("status") == "completed" for row in sweep.rows.values())
    raise KeyboardInterrupt(f"{finished} of {len(sweep.plan.tasks)} runs are complete and kept in "
                            f"{sweep.options.out}; continue with: {continue_with}") from None


def _finish(sweep: _Sweep, wall: float, where: str) -> int:
    """Tables, verdict, report set, console lines, exit code."""
    plan, options = sweep.plan, sweep.options
    for index in sweep.complete_groups():  # none left in a normal run; kept for safety
        sweep.compare(index)
    runs = pd.DataFrame([sweep.rows[task.key] for task in plan.tasks])
    seeds = pd.DataFrame([row for index in sorted(sweep.seed_rows) for row in sweep.seed_rows[index]])
    band = policies().trained.accuracy_band
    pairs = pair_table(seeds, band, plan.axis_names)
    run_seconds = pd.to_numeric(runs.get("seconds"), errors="coerce").sum() if "seconds" in runs else 0.0
    timing = {"wall_seconds": wall, "run_seconds": float(run_seconds), "executor": where}
    verdict = overall(pairs)
    report = SweepReport(f"{plan.source.name} ({plan.describe()})",
                         {"sweep_runs": runs, "sweep_seeds": seeds, "sweep": backend_table(runs, plan.axis_names),
                          "sweep_pairs": pairs}, verdict, plan.axis_names, timing)
    write_sweep_reports(report, Path(options.reports), {"config_hash": None})
    for line in console_lines(report):
        print(line)
    print(f"reports: {options.reports}/ (summary.md, sweep.csv, sweep_pairs.csv, sweep_seeds.csv, sweep_runs.csv, "
          f"sweep.png; each seed's compare report under {options.reports}/{SEED_REPORTS}/)")
    return EXIT_CODES[verdict]

