"""Where a sweep's runs execute: a local pool of worker processes, or tasks on an existing Ray cluster.

Both take ``Job``s and hand back ``Done``s as runs finish, in any order; both retry a run whose worker process
died (the retry resumes from the run's last checkpoint: its folder is found again by config hash), and both
stop on Ctrl-C by dropping what has not started and letting what runs stop at its next step, checkpointed.

Ray is optional: it is imported only when a ``RayCluster`` is made, and its absence is a one-line error.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Iterator

from ..errors import HarnessError, one_line
from .worker import Job, run_job

RAY_INSTALL = "pip install -c constraints.txt '.[ray]'"
DRAIN_SECONDS = 120  # after Ctrl-C: how long running tasks get to stop at a step boundary and answer


@dataclass
class Done:
    """A finished job: the worker's result (``run_job``'s dict) and the driver's clock around it.

    Attributes:
        job: what was asked.
        result: ``run_job``'s result, or one made here for a worker that never answered.
        dispatched: when the driver handed the job to a worker or to Ray (``time.time()``).
        received: when the result was back at the driver.
        attempts: how many times it was started (more than 1 after a worker died).
    """

    job: Job
    result: dict
    dispatched: float
    received: float
    attempts: int = 1


def _lost(job: Job, why: str) -> dict:
    return {"key": job.key, "status": "failed", "how": None, "run_name": None, "error": why, "seconds": None,
            "shipped": False}


def task_resources(device: str, threads: int) -> dict:
    """Ray's resource request for a run on ``device``: a GPU for cuda/gpu, the custom ``NPU`` resource for
    ascend/npu (one CPU beside either), else ``threads`` CPUs (cpu and auto)."""
    kind = device.split(":")[0].strip().lower()
    if kind in ("cuda", "gpu"):
        return {"num_cpus": 1, "num_gpus": 1}
    if kind in ("ascend", "npu"):
        return {"num_cpus": 1, "resources": {"NPU": 1}}
    return {"num_cpus": threads}


def _serve(conn, cancelled) -> None:
    """A pool worker: run jobs in the order they come until told to stop (None) or the driver goes away.

    It leaves the terminal's process group, so Ctrl-C reaches the driver alone, which forwards exactly one
    SIGINT to each busy worker: a second one would make the training loop stop without its checkpoint. A job
    that comes after Ctrl-C (``cancelled`` is set) is answered without being run.
    """
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training loop takes SIGINT while it trains, and only then
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        if cancelled.is_set():
            conn.send({**_lost(job, "Ctrl-C came before it started"), "status": "not started"})
            continue
        conn.send(run_job(job))


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: object
    jobs: deque = field(default_factory=deque)  # (job, attempt, sent): sent to it, answered in order; first runs


@dataclass
class LocalPool:
    """``workers`` processes on this machine, each running one job at a time; spawned, not forked, so no
    framework state is copied into them.

    Each worker is sent its next job before it finishes the current one (``AHEAD``), so it never waits while
    the driver compares a seed that just completed.

    Args:
        workers: processes at most (only as many as there are jobs are started).
        retries: how many times a job whose worker died is started again.
    """

    workers: int
    retries: int = 3
    pending: deque = field(default_factory=deque)  # (job, attempt)
    cancelled: bool = False
    _pool: list = field(default_factory=list)
    _event: object = None

    AHEAD = 1  # jobs sent to a worker beyond the one it runs

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs, in order, and send each worker its first ones."""
        self.pending.extend((job, 1) for job in jobs)
        self._dispatch()

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("spawn")
        if self._event is None:
            self._event = context.Event()
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, self._event), daemon=True,
                                  name="harness-sweep-worker")
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self._pool.append(worker)
        return worker

    def _next_worker(self) -> _Worker | None:
        """An idle worker, else a new one while there are fewer than ``workers``, else one with room ahead."""
        idle = [w for w in self._pool if not w.jobs]
        if idle:
            return idle[0]
        if len(self._pool) < self.workers:
            return self._spawn()
        roomy = [w for w in self._pool if len(w.jobs) <= self.AHEAD]
        return min(roomy, key=lambda w: len(w.jobs)) if roomy else None

    def _dispatch(self) -> None:
        while self.pending and not self.cancelled:
            worker = self._next_worker()
            if worker is None:
                return
            job, attempt = self.pending.popleft()
            try:
                worker.conn.send(job)
            except OSError:  # it died: the job goes back to the queue; its death is handled in results()
                self.pending.appendleft((job, attempt))
                return
            worker.jobs.append((job, attempt, time.time()))

    def results(self) -> Iterator[Done]:
        """Each finished job, as it finishes; the state lives on the pool, so a new call continues after Ctrl-C."""
        while any(w.jobs for w in self._pool) or (self.pending and not self.cancelled):
            self._dispatch()
            busy = [w for w in self._pool if w.jobs]
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn.poll():  # also true once the worker is gone: then recv raises
                    try:
                        result = worker.conn.recv()
                    except (EOFError, OSError):
                        result = None
                elif worker.process.is_alive():
                    continue
                else:
                    result = None
                if result is not None:
                    job, attempt, sent = worker.jobs.popleft()
                    started = result.get("started_at") or sent  # a job sent ahead waited for the one before it
                    yield Done(job, result, started, time.time(), attempt)
                    continue
                yield from self._buried(worker)

    def _buried(self, worker: _Worker) -> Iterator[Done]:
        """A worker that died: its running job is retried (it resumes from its checkpoint), those sent ahead go back
        to the queue; a job that died on every attempt is a failed Done."""
        self._pool.remove(worker)
        worker.conn.close()
        if worker.process.is_alive():  # its pipe broke but it runs on: end it, it holds nothing we need
            worker.process.terminate()
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        (job, attempt, sent), ahead = worker.jobs[0], list(worker.jobs)[1:]
        if not self.cancelled:
            self.pending.extendleft(reversed([(j, a) for j, a, _ in ahead]))
        if attempt <= self.retries and not self.cancelled:
            self.pending.appendleft((job, attempt + 1))
            return
        yield Done(job, _lost(job, f"its worker process died ({how}) on each of {attempt} attempt(s)"), sent,
                   time.time(), attempt)

    def cancel(self) -> int:
        """Ctrl-C: drop the jobs not sent, answer those sent ahead unrun, ask each running one to stop after its
        current step.

        Returns:
            How many jobs will not run.
        """
        dropped = len(self.pending) + sum(max(0, len(w.jobs) - 1) for w in self._pool)
        self.cancelled = True
        self.pending.clear()
        if self._event is not None:
            self._event.set()
        for worker in self._pool:
            if worker.jobs:
                try:
                    os.kill(worker.process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        return dropped

    def kill(self) -> None:
        """A second Ctrl-C: end the running workers now (their runs resume from their last checkpoint)."""
        for worker in self._pool:
            if worker.jobs and worker.process.is_alive():
                worker.process.terminate()
            worker.jobs.clear()

    def close(self) -> None:
        """Stop every worker process (asked first, then ended)."""
        for worker in self._pool:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in self._pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._pool.clear()


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(f"--executor ray needs Ray, an optional extra that is not installed; install it with "
                           f"{RAY_INSTALL}") from None
    return ray


def _reachable(address: str) -> None:
    """Fail in seconds, not minutes, on a cluster address nothing listens at (ray.init retries for long)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise HarnessError(f"--address {address!r} is not HOST:PORT; pass the head's address, e.g. 10.0.0.5:6379 "
                           "(what `ray start --head` printed)")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise HarnessError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}); start its head "
                           "there with `ray start --head --port PORT`, or fix --address / RAY_ADDRESS") from None


def _offers(node: dict, demand: dict) -> bool:
    have = node.get("Resources", {})
    wanted = {"CPU": demand.get("num_cpus", 0), "GPU": demand.get("num_gpus", 0), **demand.get("resources", {})}
    return all(have.get(name, 0) >= amount for name, amount in wanted.items() if amount)


def _describe(demand: dict) -> str:
    parts = [f"{demand['num_cpus']} CPU"] if demand.get("num_cpus") else []
    parts += [f"{demand['num_gpus']} GPU"] if demand.get("num_gpus") else []
    parts += [f"{amount} {name}" for name, amount in demand.get("resources", {}).items()]
    return " + ".join(parts)


class RayCluster:
    """Runs as tasks on an existing Ray cluster, one task per run, resources by device (``task_resources``).

    Args:
        address: HOST:PORT of the head (else $RAY_ADDRESS).
        retries: Ray's ``max_retries``: a task whose worker died is run again, and resumes.
        threads: the CPU threads of every run (a cpu run asks Ray for as many CPUs).
        max_in_flight: tasks submitted at once (None: all).

    Raises:
        HarnessError: Ray is not installed, no address, or nothing answers there.
    """

    def __init__(self, address: str | None, retries: int, threads: int, max_in_flight: int | None = None) -> None:
        ray = import_ray()
        address = address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise HarnessError("--executor ray needs a running cluster: pass --address HOST:PORT or set RAY_ADDRESS "
                               "(start one with `ray start --head --port 6379`)")
        _reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise HarnessError(f"cannot connect to the Ray cluster at {address} ({one_line(error, 200)}); check "
                               "that it runs the same Ray version as here (`ray --version`)") from None
        self.ray, self.address, self.retries, self.threads = ray, address, retries, threads
        self.max_in_flight = max_in_flight
        self.remote = ray.remote(run_job)
        self.pending: deque = deque()
        self.running: dict = {}  # ObjectRef -> (job, dispatched)
        self.cancelled = False

    def check_feasible(self, jobs: list[Job], devices: dict[str, str]) -> None:
        """Refuse, before anything runs, jobs no node of the cluster can take (Ray would keep them pending forever).

        Args:
            jobs: the jobs to run.
            devices: backend -> device, for the message.
        """
        nodes = [node for node in self.ray.nodes() if node.get("Alive")]
        for backend, device in devices.items():
            demand = task_resources(device, self.threads)
            if not any(_offers(node, demand) for node in nodes):
                offered = "; ".join(", ".join(f"{k} {v:g}" for k, v in sorted(node.get("Resources", {}).items())
                                              if not k.startswith(("node:", "memory", "object_store"))) or "nothing"
                                    for node in nodes) or "no live node"
                raise HarnessError(f"no node of the Ray cluster at {self.address} offers {_describe(demand)}, which "
                                   f"each {backend} run on {device} asks for (nodes offer: {offered}); add a node "
                                   f"that has it, e.g. `ray start --address {self.address} "
                                   + ("--resources '{\"NPU\": 1}'`" if "resources" in demand else
                                      "--num-gpus 1`" if "num_gpus" in demand else f"--num-cpus {self.threads}`")
                                   + ", or lower --threads")

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs; they go to Ray now, as many as ``max_in_flight`` allows."""
        self.pending.extend(jobs)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.pending and not self.cancelled and (self.max_in_flight is None
                                                       or len(self.running) < self.max_in_flight):
            job = self.pending.popleft()
            device = job.config.get("device", "cpu")
            options = {**task_resources(device, self.threads), "max_retries": self.retries,
                       "retry_exceptions": False, "name": f"harness-run {job.label}"}
            self.running[self.remote.options(**options).remote(job)] = (job, time.time())

    def results(self) -> Iterator[Done]:
        """Each finished task, as it finishes (a new call continues after Ctrl-C)."""
        ray = self.ray
        while self.running or (self.pending and not self.cancelled):
            self._dispatch()
            ready, _ = ray.wait(list(self.running), num_returns=1,
                                timeout=DRAIN_SECONDS if self.cancelled else None)
            if not ready:  # cancelled and still running after the drain time: give up on them
                for job, dispatched in self.running.values():
                    yield Done(job, {**_lost(job, "did not stop in time"), "status": "interrupted"},
                               dispatched, time.time())
                self.running.clear()
                return
            ref = ready[0]
            job, dispatched = self.running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                result = {**_lost(job, "cancelled before it finished"), "status": "interrupted"}
            except ray.exceptions.RayError as error:  # worker died more than max_retries times, node lost, ...
                result = _lost(job, f"Ray: {one_line(error, 400)}")
            yield Done(job, result, dispatched, time.time())

    def cancel(self) -> int:
        """Ctrl-C: drop what is not submitted, cancel what is (a running task stops at its next step)."""
        dropped = len(self.pending)
        self.cancelled = True
        self.pending.clear()
        for ref in list(self.running):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - already finished, or the cluster is gone: nothing to cancel
                pass
        return dropped

    def kill(self) -> None:
        """A second Ctrl-C: end the running tasks now (they resume from their last checkpoint next time)."""
        for ref in list(self.running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - as in cancel
                pass
        self.running.clear()

    def close(self) -> None:
        """Disconnect from the cluster (it keeps running)."""
        self.ray.shutdown()
