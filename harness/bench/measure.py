"""``harness bench``: how fast each backend trains and infers, with and without the harness around it.

Four phases per backend, model and batch size, each on the same images in the same order:

- ``train``: ``harness.training.loop.train`` driving the backend's Trainer (batching, learning-rate schedule,
  loss checks: everything a real run does except checkpoints and the per-epoch evaluation).
- ``train-bare``: the framework's minimal loop (``backends/<name>/bare.py``) on the same model.
- ``infer-native``: ``backend.predict``.
- ``infer-onnxruntime``: the backend's own ONNX export in ONNX Runtime.

Each phase is warmed up first (MindSpore compiles its graphs there), then timed once per repeat. A repeat
interleaves the two phases of a compared pair (train with train-bare, native with ONNX Runtime) in segments,
ABBA ABBA ..., so a machine whose speed drifts over seconds slows both alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..backend import get_backend
from ..config import build_config
from ..data.batches import epoch_permutation
from ..data.fit import Dataset, prepare
from ..data.locate import search_dataset
from ..data.registry import load_raw
from ..errors import HarnessError
from ..evaluators.onnxrt import run_session, session
from ..machine import LoadMeter
from ..model.resolve import initial_weights, model_spec, native_shape
from ..model.zoo import MODELS
from ..progress import Progress
from ..training.loop import train
from ..training.schedule import decayed_names

PHASES = ("train", "train-bare", "infer-native", "infer-onnxruntime")
COMPARED_PAIRS = (("train", "train-bare"), ("infer-native", "infer-onnxruntime"))
DEFAULT_STEPS, SLOW_STEPS = 200, 5  # timed steps per measurement; VGG11 on a 2-core CPU takes ~4 s a step at 64
DEFAULT_WARMUP, SLOW_WARMUP = 5, 2  # untimed steps first: the first one holds MindSpore's compilation
# A repeat's steps are timed in up to SEGMENTS pieces of at least SEGMENT_STEPS, the two phases of a pair taking
# turns ABBA ABBA. This VM's speed drifts by several percent over seconds: one loop's 128-step means over 24 blocks
# ranged 18.3-19.9 ms (PyTorch simple-cnn, batch 64, one thread), so two loops timed one after the other differ by
# chance; split so, two identical 256-step halves of that series differed by 2.1% (standard deviation), in 8
# segments each by 0.4%.
SEGMENTS, SEGMENT_STEPS = 8, 25
SYNTHETIC_IMAGES = 8192  # synthetic pool; more steps than it holds cycle through it epoch by epoch
EVAL_IMAGES = 256  # the loop evaluates after every epoch (outside its timing); keep that cheap
# The bare loops' settings too: their lr is fixed, so the harness loop's is.
SETTINGS = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "schedule": "constant", "seed": 0}


@dataclass
class BenchSettings:
    """What ``harness bench`` measures (the CLI's flags)."""

    backends: list[str]
    models: list[str]
    batch_sizes: list[int]
    repeats: int = 3
    steps: int | None = None  # None: DEFAULT_STEPS, SLOW_STEPS for the 32x32 three-channel nets
    warmup: int | None = None  # None: DEFAULT_WARMUP, SLOW_WARMUP for the 32x32 three-channel nets
    dataset: str | None = None  # None: the model's real dataset if present, else synthetic
    device: str = "cpu"
    data_dir: Path | None = None
    threads: int | None = None  # None: each framework's default
    quiet: bool = False  # no bars and no lines while measuring


def parse_positive_ints(text: str, flag: str) -> list[int]:
    """``"1,64,256"`` as ints, each >= 1, or a one-line HarnessError naming ``flag``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HarnessError(f"{flag} {text!r} must be comma-separated integers, e.g. 1,64,256") from None
    if not values or min(values) < 1:
        raise HarnessError(f"{flag} {text!r}: every value must be an integer >= 1")
    return values


def parse_models(text: str) -> list[str]:
    """``"lenet5,vgg11"`` as registry names, or a one-line HarnessError listing the valid ones."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        raise HarnessError(f"unknown model(s) {unknown} in --models {text!r}; expected a comma-separated "
                           f"subset of {', '.join(MODELS)}")
    return names


def default_counts(model: str) -> tuple[int, int]:
    """(timed steps, warm-up steps) per measurement when ``--steps`` and ``--warmup`` are not given."""
    # The 32x32 three-channel nets (VGG, ResNet, MobileNetV2) take 0.15-4 s a step at batch 64 on a 2-core CPU.
    return (SLOW_STEPS, SLOW_WARMUP) if MODELS[model].channels == 3 else (DEFAULT_STEPS, DEFAULT_WARMUP)


def default_dataset(model: str, data_dir: Path | None) -> str:
    """The real dataset the model is made for when its files are found (mnist, cifar10), else synthetic."""
    wanted = "mnist" if MODELS[model].channels == 1 else "cifar10"
    return wanted if search_dataset(wanted, data_dir)[0] is not None else "synthetic"


def load_bench_data(model: str, dataset: str, data_dir: Path | None, synthetic_images: int = SYNTHETIC_IMAGES,
                    seed: int = 0) -> tuple[Any, Dataset]:
    """The model's spec and the prepared data; ``synthetic`` is drawn with ``synthetic_images`` training images."""
    raw = load_raw(dataset, data_dir, synthetic_shape=native_shape(model),
                   synthetic_sizes=(synthetic_images, EVAL_IMAGES), seed=seed)
    spec = model_spec(model, raw.train_images.shape[1], raw.info.num_classes)
    return spec, prepare(raw, spec.input_shape)


@dataclass(frozen=True)
class Plan:
    """How one batch size is timed: per repeat, ``segments`` times ``epochs`` passes over ``images`` images from
    image ``start`` of the pool (each segment on the next window), no partial batch."""

    batch_size: int
    images: int
    epochs: int
    pool: int = 0  # the images windows are taken from (``window``); 0: only the first ``images``
    start: int = 0
    segments: int = 1

    @property
    def steps(self) -> int:
        """Steps timed per repeat, all segments together."""
        return self.segments * self.epochs * self.images // self.batch_size

    def window(self, index: int) -> "Plan":
        """The same plan on the ``index``-th run of ``images`` images of the pool, cycling where the pool ends.

        Each timed segment takes the next window, so the models keep meeting images they have not fitted, as in a
        run. A model that fits its images stops learning, and its momentum buffers decay through the subnormal
        floats, where CPU arithmetic is slow: MindSpore's simple-cnn at batch 1 on 2,048 synthetic images (fitted
        within ~400 steps) held 600,000 subnormal momentum values after 800 steps and took 45 ms a step
        instead of 2.6.
        """
        windows = max(self.pool // self.images, 1)
        return dataclasses.replace(self, start=(index % windows) * self.images)


def make_plan(pool: int, batch_size: int, steps: int) -> Plan:
    """At least ``steps`` full batches from a pool of ``pool`` images (a partial batch would be a new
    shape, and MindSpore would compile it inside the timing), in segments of at least ``SEGMENT_STEPS``."""
    segments = min(max(steps // SEGMENT_STEPS, 1), SEGMENTS)
    segment_steps = math.ceil(steps / segments)
    per_epoch = min(pool // batch_size, segment_steps)
    if per_epoch == 0:
        raise HarnessError(f"batch size {batch_size} is larger than the {pool} training images; "
                           "use a smaller --batch-sizes value or a larger --dataset")
    return Plan(batch_size, per_epoch * batch_size, math.ceil(segment_steps / per_epoch), pool, segments=segments)


class _WarmTrainer:
    """The backend, except that ``make_trainer`` hands out one trainer, made and warmed up beforehand,
    so the timed loop measures steps, not trainer construction and graph compilation."""

    def __init__(self, backend, trainer) -> None:
        self._backend, self._trainer = backend, trainer

    def make_trainer(self, model, train_config, decay_names):
        return self._trainer

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


class Subject:
    """One backend and one model: the four timed things, each on its own model built from the same weights."""

    def __init__(self, name: str, spec, data: Dataset, device: str, workdir: Path, threads: int | None) -> None:
        self.name, self.spec, self.data = name, spec, data
        self.backend = get_backend(name)
        self.device = self.backend.resolve_device(device)
        if threads is not None:
            self.backend.set_threads(threads)  # before the first kernel: MindSpore reads it once
        self.threads = self.backend.threads()
        self.weights = initial_weights(spec.name, spec, SETTINGS["seed"])  # bench's models are registry names
        self.train_model = self.backend.build(spec, self.device)
        self.versions = self.backend.versions()  # after the first build: MindSpore settles its ISA cap there
        self.bare_model = self.backend.build(spec, self.device)
        self.restart()
        self.infer_model = self.backend.build(spec, self.device)
        self.backend.set_weights(self.infer_model, self.weights)
        onnx_path = self.backend.export_onnx(self.infer_model, workdir / f"{name}-{spec.name}.onnx")
        self.session = session(onnx_path, threads=threads)

    def restart(self) -> None:
        """Both training models at the initial weights again, each with a new optimizer (the harness's trainer
        and the bare loop), so every batch size is timed from the same start as the first.

        Carried over, batch 64 inherited a thousand steps at batch 1 and whatever state they left, such as
        momentum buffers of stalled units decaying through the slow subnormal floats (``Plan.window``); with
        Dropout the two models' paths differ, so they need not pass through it together. MindSpore simple-cnn at
        batch 64 after batch 1 read harness/bare 0.68 (harness 1,834-3,130 images/s over 5 repeats), 1.05 in a
        process of its own.
        """
        for model in (self.train_model, self.bare_model):
            self.backend.set_weights(model, self.weights)
        config = self.config(1, 1)
        decayed = decayed_names(self.spec, config.train.decay_scope)
        self.harness = _WarmTrainer(self.backend, self.backend.make_trainer(self.train_model, config.train, decayed))
        self.bare = self.backend.bare_loop(self.bare_model, self.data.train_x, self.data.train_y,
                                           SETTINGS["learning_rate"], SETTINGS["momentum"])
        # Each loop draws its Dropout masks from a random stream of its own, both seeded alike (the trainer seeded
        # it above). PyTorch has one stream for the process: taken in turn, the two loops drew different masks,
        # their models parted, and a model whose units stall computes on slow subnormal floats; simple-cnn's two
        # loops at batch 1 read 215 and 207 images/s in one repeat, ~650 in the others. With a stream each they
        # stay the same model, bit for bit.
        self.streams = {"train": self.backend.rng_state(self.train_model),
                        "train-bare": self.backend.rng_state(self.bare_model)}

    def config(self, batch_size: int, epochs: int):
        """The run settings of the harness loop (the bare loops use the same optimizer settings)."""
        return build_config({"model": self.spec.name, "backend": self.name, "device": self.device,
                             "batch_size": batch_size, "epochs": epochs, **SETTINGS})

    def _subset(self, window: slice) -> Dataset:
        d = self.data
        return dataclasses.replace(d, train_x=d.train_x[window], train_y=d.train_y[window],
                                   test_x=d.test_x[:EVAL_IMAGES], test_y=d.test_y[:EVAL_IMAGES])

    def timers(self, plan: Plan) -> dict[str, Callable[[], float]]:
        """Phase -> a function that runs one segment of ``plan`` (its window) and returns the seconds its steps
        took."""
        window = slice(plan.start, plan.start + plan.images)
        data, b, x = self._subset(window), plan.batch_size, self.data.train_x[window]
        config = self.config(b, plan.epochs)
        # The bare loop walks the harness's own epoch orders over the same window, so both see the same batches.
        order = plan.start + np.concatenate([epoch_permutation(plan.images, SETTINGS["seed"], e)
                                             for e in range(plan.epochs)])
        return {
            "train": self._on_own_stream("train", self.train_model, lambda: train(
                self.harness, self.train_model, self.spec, data, config, quiet=True).train_seconds),
            "train-bare": self._on_own_stream("train-bare", self.bare_model, lambda: self.bare.run(order, b)),
            "infer-native": lambda: _timed(plan.epochs, lambda: self.backend.predict(self.infer_model, x, b)),
            "infer-onnxruntime": lambda: _timed(plan.epochs, lambda: run_session(self.session, x, b)),
        }

    def _on_own_stream(self, phase: str, model, timed: Callable[[], float]) -> Callable[[], float]:
        """``timed`` run from where ``phase``'s random stream stopped last time (outside its timing)."""
        def run() -> float:
            self.backend.set_rng_state(model, self.streams[phase])
            seconds = timed()
            self.streams[phase] = self.backend.rng_state(model)
            return seconds
        return run


def _timed(passes: int, work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(passes):
        work()
    return time.perf_counter() - started


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """Peak resident memory of the process since the last reset (VmHWM), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def result_row(subject: Subject, phase: str, plan: Plan, seconds: list[float], peak: float, scope: str) -> dict:
    """bench.csv's row of one phase: median, min and max images/s over the repeats, ms per step, peak RSS."""
    rates = [plan.steps * plan.batch_size / s for s in seconds]
    median = statistics.median(rates)
    versions = dict(subject.versions)
    if phase == "infer-onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    threads = subject.session.get_session_options().intra_op_num_threads if phase == "infer-onnxruntime" \
        else subject.threads
    return {"backend": subject.name, "device": subject.device, "model": subject.spec.name,
            "dataset": subject.data.info.name, "data_source": subject.data.source, "phase": phase,
            "batch_size": plan.batch_size, "steps": plan.steps, "repeats": len(seconds), "images_per_s": median,
            "images_per_s_min": min(rates), "images_per_s_max": max(rates),
            "ms_per_step": 1000 * plan.batch_size / median,
            "peak_rss_mib": round(peak, 1), "peak_rss_scope": scope, "threads": threads or "default",
            "versions": json.dumps(versions, sort_keys=True)}


def measure(subject: Subject, plan: Plan, repeats: int, warmup: int, progress: Progress | None = None) -> list[dict]:
    """Warm each compared pair up on ``warmup`` batches of the plan's shape, then time it ``repeats`` times.

    Returns:
        One row per phase: median, min and max images/s over the repeats, ms per step, peak RSS, and the
        machine's load while the repeats ran (``harness.machine``); the train row also ``harness_to_bare``: the
        median (and min, max) over the repeats of train's speed over train-bare's in the same repeat.
    """
    meter = LoadMeter().start()
    seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
    peaks = dict.fromkeys(PHASES, 0.0)
    scope = "measurement"
    # Each compared pair is timed on its own, interleaved (a noisy neighbour slows both alike) and in alternating
    # order (neither always runs second). Mixing in the other pair skewed the ratio: PyTorch's harness/bare read
    # 0.84-0.93 that way and 1.01 alone, both on a quiet machine.
    for pair in COMPARED_PAIRS:
        # Warmed up just before its own repeats, same shapes (MindSpore compiles every graph here): warmed up
        # with the rest, the first repeat ran right after ONNX Runtime, whose threads spin on for a while.
        warm = subject.timers(make_plan(plan.images, plan.batch_size, warmup))
        for phase in pair:
            warm[phase]()
        for repeat in range(repeats):
            first = pair if repeat % 2 == 0 else pair[::-1]  # neither phase always opens a repeat
            elapsed = dict.fromkeys(pair, 0.0)
            for segment in range(plan.segments):
                # ABBA ABBA: each phase's segments sit as early as the other's on average
                order = first if segment % 2 == 0 else first[::-1]
                timers = subject.timers(plan.window(repeat * plan.segments + segment + 1))  # both on these images
                for phase in order:
                    scope = "measurement" if _reset_peak_rss() else "process"
                    elapsed[phase] += timers[phase]()
                    peaks[phase] = max(peaks[phase], _peak_rss_mib())
            for phase in pair:
                seconds[phase].append(elapsed[phase])
                if progress is not None:
                    progress.update()
    load = meter.stop().as_dict()
    rows = [{**result_row(subject, phase, plan, seconds[phase], peaks[phase], scope), **load} for phase in PHASES]
    # Repeat by repeat: the two loops' models are the same model at each repeat's start, and its speed drifts as it
    # trains (stalled units compute on subnormal floats), so the medians of the two columns may come from
    # different states; the pairs do not. simple-cnn at batch 1 went 1.4 -> 4.4 ms a step over 5 repeats.
    paired = [bare / harness for harness, bare in zip(seconds["train"], seconds["train-bare"])]
    rows[PHASES.index("train")].update(harness_to_bare=statistics.median(paired), harness_to_bare_min=min(paired),
                                       harness_to_bare_max=max(paired))
    return rows


def run_bench(settings: BenchSettings, progress: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """Measure every backend x model x batch size; ``progress`` sees each batch size's rows as they come.

    Raises:
        HarnessError: missing data, a backend or device that cannot run, a batch larger than the data.
    """
    rows: list[dict] = []
    for model in settings.models:
        dataset = settings.dataset or default_dataset(model, settings.data_dir)
        steps, warmup = settings.steps or default_counts(model)[0], settings.warmup or default_counts(model)[1]
        needed = max(settings.batch_sizes) * max(steps, warmup)  # more would only cost drawing time
        spec, data = load_bench_data(model, dataset, settings.data_dir, min(SYNTHETIC_IMAGES, needed), SETTINGS["seed"])
        plans = [make_plan(len(data.train_x), b, steps) for b in settings.batch_sizes]  # fail before any work
        with tempfile.TemporaryDirectory(prefix="harness-bench-") as workdir:
            for name in settings.backends:
                Progress(f"bench {name} {model}", quiet=settings.quiet).line(
                    f"building 3 models of {spec.name} on {dataset}, exporting ONNX")
                subject = Subject(name, spec, data, settings.device, Path(workdir), settings.threads)
                for index, plan in enumerate(plans):
                    if index:
                        subject.restart()  # each batch size from the initial weights (its warm-up compiles anew)
                    timed = settings.repeats * len(PHASES)
                    with Progress(f"bench {name} {model} b{plan.batch_size}", timed, settings.quiet) as bar:
                        bar.line(f"warming up ({warmup} steps), then {settings.repeats} repeats of {len(PHASES)} "
                                 f"phases, {plan.steps} steps each")
                        rows += measure(subject, plan, settings.repeats, warmup, bar)
                    progress(rows[-len(PHASES):])
                del subject  # its models and preloaded data go before the next backend's
    return rows
