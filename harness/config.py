"""One frozen RunConfig per run: every hyperparameter in one visible place.

Settings are flat keys (``batch_size``, ``learning_rate``...) shared by CLI flags,
TOML config files and recipes, grouped into three sections. The config hash
covers what decides the numbers (model, data, training) and leaves out where
they run (backend, device), so runs on two backends with one hash are comparable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from .errors import HarnessError, one_line

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
FITS = ("auto", "pad", "resize")
DECAY_SCOPES = ("all", "weights")


@dataclass(frozen=True)
class ModelChoice:
    """Which model, with its options: a registry name, or a file (``PATH.onnx``, ``SPEC.json``)."""

    model: str = "lenet5"
    activation: str | None = None  # None: the model's own
    pool: str | None = None
    init: str = "default"
    init_ulps: int = 0  # float32 steps added to every initial trainable value (compare's control run)


@dataclass(frozen=True)
class DataConfig:
    """Which data, fit to the model how, and how much of it."""

    dataset: str = "mnist-sample"
    fit: str = "auto"
    augment: bool = False
    limit_train: int | None = None
    limit_test: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and loop settings; ``learning_rate`` is the peak for onecycle."""

    epochs: int = 3
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_scope: str = "all"  # all: every trainable tensor, as torch; weights: conv/linear weights only
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # cosine, not constant: LeNet5 / MNIST / 3 epochs over seeds 0-9 ended 97.99-98.88% at a constant lr and
    # 98.64-98.99% annealed, and the backends' predictions agreed on 99.10-99.53% vs 99.62-99.85% (README).
    schedule: str = "cosine"
    step_size: int = 1  # epochs between decays (step)
    gamma: float = 0.1  # decay factor (step, multistep)
    milestones: tuple[int, ...] = ()  # epochs at whose start the rate is multiplied by gamma (multistep)
    min_lr: float = 0.0  # floor (cosine)
    pct_start: float = 0.3  # onecycle
    div_factor: float = 25.0  # onecycle
    final_div_factor: float = 1e4  # onecycle
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; ``config_hash`` ignores backend and device.

    ``model_sha256`` is not a setting: ``build_config`` fills it from the ``--model`` file (None for a
    registry model), so the hash covers the file's contents, and a run folder's config.json keeps the
    digest of the file it was trained from, readable after the file has changed or gone.
    """

    model: ModelChoice = field(default_factory=ModelChoice)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: str = "pytorch"
    device: str = "cpu"
    model_sha256: str | None = None

    def to_dict(self) -> dict:
        """Nested plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        """Flat settings dict, the form used by flags and config files (``model_sha256`` is no setting)."""
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.data),
                **dataclasses.asdict(self.train), "backend": self.backend, "device": self.device}

    @property
    def config_hash(self) -> str:
        """sha256 (16 hex digits) of the settings that decide the numbers."""
        identity = {k: v for k, v in self.to_dict().items() if k not in ("backend", "device")}
        if identity["model_sha256"] is None:
            del identity["model_sha256"]  # a registry model's hash stays what it was before model files existed
        if not identity["train"]["milestones"]:
            del identity["train"]["milestones"]  # likewise for runs without a multistep schedule
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


SECTIONS = {"model": ModelChoice, "data": DataConfig, "train": TrainConfig}
TOP_LEVEL = ("backend", "device")


def valid_keys() -> list[str]:
    """Every flat setting name, in section order."""
    return [f.name for cls in SECTIONS.values() for f in fields(cls)] + list(TOP_LEVEL)


def _coerce(key: str, value, annotation: str):
    if value is None:
        if "None" in annotation:
            return None
        raise HarnessError(f"setting {key} cannot be empty; give a value")
    if annotation.startswith("tuple"):
        return _int_list(key, value)
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    kind = next(kinds[k] for k in ("bool", "int", "float", "str") if annotation.startswith(k))
    if kind is bool and not isinstance(value, bool):
        raise HarnessError(f"setting {key}={value!r} is not a boolean; use true or false")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HarnessError(f"setting {key}={value!r} is not {kind.__name__}; expected a {kind.__name__}")
    return value


def _int_list(key: str, value) -> tuple[int, ...]:
    """A list of whole numbers from a TOML list or a flag's ``91,136``."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if isinstance(items, (list, tuple)):
        try:
            numbers = [int(item) if isinstance(item, str) else item for item in items]
        except ValueError:
            numbers = []
        if len(numbers) == len(items) and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            return tuple(numbers)
    shown = value if isinstance(value, str) else repr(value)
    raise HarnessError(f"setting {key}={shown[:80]} is not a list of whole numbers; expected e.g. "
                       f"{key} = [91, 136] in a file, --{key.replace('_', '-')} 91,136 as a flag")


def build_config(settings: dict, model_sha256: str | None = None) -> RunConfig:
    """Make a validated RunConfig from flat settings; unknown keys are rejected.

    Args:
        settings: flat settings.
        model_sha256: the digest a run folder recorded for its model file; None: read the file now
            (when ``model`` is one).

    Raises:
        HarnessError: an unknown key (listing the valid ones), a value of the wrong
            type or out of range, a model file that cannot be read.
    """
    unknown = sorted(set(settings) - set(valid_keys()))
    if unknown:
        # repr for names with control characters: the message must stay one line.
        names = ", ".join(key if key.isprintable() else repr(key) for key in unknown)
        raise HarnessError(f"unknown setting(s) {names}; valid settings: {', '.join(valid_keys())}")
    parts = {}
    for section, cls in SECTIONS.items():
        kwargs = {f.name: _coerce(f.name, settings[f.name], str(f.type))
                  for f in fields(cls) if f.name in settings}
        parts[section] = cls(**kwargs)
    top = {k: _coerce(k, settings[k], "str") for k in TOP_LEVEL if k in settings}
    model = parts["model"].model
    if model_sha256 is not None:
        _require(is_model_file(model) and isinstance(model_sha256, str) and _SHA256.fullmatch(model_sha256),
                 f"model_sha256 {str(model_sha256)[:70]!r} must be 64 hex digits, recorded for a model file "
                 f"(PATH.onnx or SPEC.json), not for model {model[:70]!r}; the file was edited")
    elif is_model_file(model):
        model_sha256 = model_file_digest(model)
    config = RunConfig(**parts, **top, model_sha256=model_sha256)
    validate(config)
    return config


# A model file: the suffix decides how it is read (harness.model.resolve), the cap bounds what is read.
MODEL_FILE_LIMITS = {".onnx": 2**30, ".json": 2**24}
# torch.onnx and onnx.save put external weights in one file named after the model: ``net.onnx.data``.
EXTERNAL_DATA_SUFFIX = ".data"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_model_file(model: str) -> bool:
    """Whether the ``model`` setting names a file (``*.onnx`` or ``*.json``) rather than a registry model."""
    return Path(model).suffix.lower() in MODEL_FILE_LIMITS


def printable(path: str | Path) -> str:
    """``path`` as a message shows it: as typed, or quoted with escapes when it holds a control character
    (a newline in a file name would break the one-line error)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or a one-line HarnessError.

    Checked before reading and again on the open file, as ``read_settings_file`` does: a FIFO would block,
    ``/dev/zero`` never ends, and a file may be swapped or grow between the checks.

    Args:
        path: the file.
        limit: the most bytes accepted.
        what: what the file is, for the message (``model file``).
    """
    def check(info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            kind = _NOT_REGULAR.get(stat.S_IFMT(info.st_mode), "is not a regular file")
            raise HarnessError(f"cannot read {what} {printable(path)}: {kind}")
        if info.st_size > limit:
            raise _too_large(path, limit, what)

    try:
        check(os.stat(path))
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            check(os.fstat(handle.fileno()))
            data = handle.read(limit + 1)  # bounded: the file may have grown since the check
    except FileNotFoundError:
        raise HarnessError(f"{what} {printable(path)} does not exist") from None
    except (OSError, ValueError) as error:  # ValueError: a path with a NUL byte
        raise HarnessError(f"cannot read {what} {printable(path)}: {one_line(error, 200)}") from None
    if len(data) > limit:
        raise _too_large(path, limit, what)
    return data


def _too_large(path: Path, limit: int, what: str) -> HarnessError:
    return HarnessError(f"{what} {printable(path)} is larger than {limit:,} bytes, the most harness reads: "
                        "a model that size is beyond what it trains on a CPU")


def model_file_digest(model: str) -> str:
    """sha256 of a model file's bytes, and for ``net.onnx`` of ``net.onnx.data`` beside it when present
    (the only external-data file the importer reads), so a run's hash changes with either.

    Raises:
        HarnessError: the file is missing, not a regular file, or over its size cap.
    """
    path = Path(model)
    limit = MODEL_FILE_LIMITS[path.suffix.lower()]
    digest = hashlib.sha256(read_limited(path, limit, "model file"))
    external = path.with_name(path.name + EXTERNAL_DATA_SUFFIX)
    if path.suffix.lower() == ".onnx" and external.exists():
        digest.update(b"\0external data\0")
        digest.update(read_limited(external, limit, "external data file"))
    return digest.hexdigest()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise HarnessError(message)


def validate(config: RunConfig) -> None:
    """Range checks on the values; names of models/datasets are checked where they are used."""
    t, d = config.train, config.data
    # NaN and inf slip past unchecked or open-ended bounds (min_lr, eps, weight_decay, the div factors).
    odd = [f"{f.name}={getattr(t, f.name)}" for f in fields(t)
           if isinstance(getattr(t, f.name), float) and not math.isfinite(getattr(t, f.name))]
    _require(not odd, f"{', '.join(odd)}: settings must be finite numbers")
    _require(t.min_lr >= 0, f"min_lr={t.min_lr} is negative; expected >= 0")
    # numpy's generators refuse negative seeds, torch.manual_seed those above 2**64 - 1.
    _require(0 <= t.seed < 2**64, f"seed={t.seed} is out of range; expected 0..2**64-1")
    _require(1 <= t.epochs <= 10_000, f"epochs={t.epochs} is out of range; expected 1..10000")
    _require(1 <= t.batch_size <= 65_536, f"batch_size={t.batch_size} is out of range; expected 1..65536")
    _require(0 < t.learning_rate <= 10, f"learning_rate={t.learning_rate} is out of range; expected 0 < lr <= 10")
    _require(t.optimizer in OPTIMIZERS, f"unknown optimizer {t.optimizer!r}; expected one of: {', '.join(OPTIMIZERS)}")
    _require(t.schedule in SCHEDULES, f"unknown schedule {t.schedule!r}; expected one of: {', '.join(SCHEDULES)}")
    _require(0 <= t.momentum < 1, f"momentum={t.momentum} is out of range; expected 0 <= momentum < 1")
    _require(0 <= t.dampening <= 1, f"dampening={t.dampening} is out of range; expected 0..1")
    _require(not t.nesterov or (t.momentum > 0 and t.dampening == 0),
             f"nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD), got momentum={t.momentum}, "
             f"dampening={t.dampening}; change one of them")
    _require(t.weight_decay >= 0, f"weight_decay={t.weight_decay} is negative; expected >= 0")
    _require(t.decay_scope in DECAY_SCOPES, f"unknown decay_scope {t.decay_scope!r}; expected all or weights")
    _require(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "beta1 and beta2 must be in [0, 1)")
    _require(t.eps > 0, f"eps={t.eps} must be > 0")
    _require(t.step_size >= 1 and 0 < t.gamma <= 1, "step schedule needs step_size >= 1 and 0 < gamma <= 1")
    if t.schedule == "multistep":
        _require(t.milestones and all(b > a for a, b in zip(t.milestones, t.milestones[1:]))
                 and t.milestones[0] >= 1, f"multistep needs milestones: rising epochs >= 1 (e.g. 91,136), got "
                 f"{list(t.milestones)}")
    else:
        _require(not t.milestones, f"milestones {list(t.milestones)} apply only to schedule multistep; "
                 f"pass --schedule multistep or leave them out")
    _require(0 < t.pct_start < 1 and t.div_factor > 0 and t.final_div_factor > 0,
             "onecycle needs 0 < pct_start < 1, div_factor > 0, final_div_factor > 0")
    _require(d.fit in FITS, f"unknown fit {d.fit!r}; expected one of: {', '.join(FITS)}")
    # A control needs one step; hundreds would only cost time (one nextafter pass each).
    _require(0 <= config.model.init_ulps <= 100, f"init_ulps={config.model.init_ulps} is out of range; "
             "expected 0..100 (float32 steps added to the initial weights)")
    for key in ("limit_train", "limit_test"):
        value = getattr(d, key)
        _require(value is None or value >= 1, f"{key}={value} must be >= 1")


# The most bytes a settings file may have: a full file of every setting is about 1 KB.
MAX_SETTINGS_BYTES = 2**20
_NOT_REGULAR = {stat.S_IFDIR: "Is a directory", stat.S_IFIFO: "is a named pipe (FIFO)",
                stat.S_IFCHR: "is a character device", stat.S_IFBLK: "is a block device", stat.S_IFSOCK: "is a socket"}


def _check_settings_file(path: Path, info: os.stat_result, size: int | None = None) -> None:
    """Raise HarnessError unless ``path`` is a regular file of at most ``MAX_SETTINGS_BYTES``."""
    if not stat.S_ISREG(info.st_mode):
        what = _NOT_REGULAR.get(stat.S_IFMT(info.st_mode), "is not a regular file")
        raise HarnessError(f"cannot read config file {path}: {what}; pass the path of a .toml file")
    if (info.st_size if size is None else size) > MAX_SETTINGS_BYTES:
        raise HarnessError(f"config file {path} is larger than {MAX_SETTINGS_BYTES} bytes; "
                           "expected a short file of flat TOML keys")


def read_settings_file(path: Path) -> dict:
    """Flat settings from a TOML file (recipes use the same form).

    Only a regular file of at most ``MAX_SETTINGS_BYTES`` is read: a FIFO would block forever and
    ``/dev/zero`` never ends.

    Raises:
        HarnessError: a missing, unreadable, non-regular, oversized or invalid file.
    """
    try:
        # stat before open: opening a FIFO blocks until a writer comes, and opening a device may act on it.
        info = os.stat(path)
        _check_settings_file(path, info)
        # Non-blocking and checked again on the open file: it may have been swapped since the stat.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            _check_settings_file(path, os.fstat(handle.fileno()))
            data = handle.read(MAX_SETTINGS_BYTES + 1)  # bounded: the file may have grown since the check
        _check_settings_file(path, info, len(data))
        settings = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"config file {path} does not exist; pass the path of a .toml file") from None
    # tomllib's TOMLDecodeError and UnicodeDecodeError for bytes that are not UTF-8 are ValueErrors.
    except (OSError, ValueError) as error:
        raise HarnessError(f"cannot read config file {path}: {error}; expected flat TOML keys") from None
    return _without_about(settings)


def _without_about(settings: dict) -> dict:
    settings.pop("about", None)  # recipes describe their tutorial there; not a setting
    return settings


def _recipes():
    return resources.files("harness").joinpath("recipes")  # package data: found installed or not


def recipe_names() -> list[str]:
    """Names of the recipes shipped in ``harness/recipes/``."""
    return sorted(entry.name.removesuffix(".toml") for entry in _recipes().iterdir() if entry.name.endswith(".toml"))


def read_recipe(name: str) -> dict:
    """Flat settings of a shipped recipe."""
    if name not in recipe_names():
        raise HarnessError(f"unknown recipe {name!r}; expected one of: {', '.join(recipe_names())}")
    return _without_about(tomllib.loads(_recipes().joinpath(f"{name}.toml").read_text(encoding="utf-8")))


def config_from_dict(nested: dict) -> RunConfig:
    """Inverse of ``config.to_dict()``.

    Raises:
        HarnessError: ``nested`` or one of its sections is not a dict, or ``build_config`` refuses the settings.
    """
    # The dict comes from a file (config.json): check its layout before walking it.
    if not isinstance(nested, dict):
        raise HarnessError(f"settings should be a dict of sections ({', '.join(SECTIONS)}), "
                           f"got a {type(nested).__name__}")
    broken = [name for name in SECTIONS if not isinstance(nested.get(name, {}), dict)]
    if broken:
        raise HarnessError(f"settings section(s) {', '.join(broken)} should be dicts of settings, got "
                           f"{', '.join(type(nested[name]).__name__ for name in broken)}")
    flat = {k: v for section in SECTIONS for k, v in nested.get(section, {}).items()}
    flat.update({k: nested[k] for k in TOP_LEVEL if k in nested})
    return build_config(flat, nested.get("model_sha256"))


def config_from_json(text: str) -> RunConfig:
    """Inverse of ``json.dumps(config.to_dict())``.

    Raises:
        HarnessError: ``text`` is not JSON, or ``config_from_dict`` refuses it.
    """
    try:
        nested = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, or nesting deeper than the parser's stack
        raise HarnessError(f"settings are not valid JSON ({error}); expected json.dumps(config.to_dict())") from None
    return config_from_dict(nested)
