"""A sweep file read into the runs it asks for: base settings, axes of values, per-backend devices.

A sweep file is TOML::

    control = true                  # as compare's --control (default true)
    [base]                          # run settings exactly as in a --config file; or recipe = "name"
    dataset = "synthetic"
    epochs = 2
    [axes]                          # lists over any setting, and backend
    seed = [0, 1, 2]
    model = ["lenet5", "lenet-tiny"]
    backend = ["pytorch", "mindspore"]
    [devices]                       # per backend (default: [base] device, else cpu)
    pytorch = "cuda"
    mindspore = "ascend"

Every axis but ``seed`` and ``backend`` spans the *variants* (configs judged apart); a variant at one seed is a
*group*: the runs ``harness compare`` would make for it (one per backend, plus the control of the first backend).
Everything is validated here, before anything trains: a typo costs one line, not a cluster's time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..backend import backend_names
from ..compare.session import CONTROL_FOLDER, control_config
from ..config import RunConfig, build_config, read_recipe, read_settings_file, valid_keys
from ..data.registry import DATASETS
from ..errors import HarnessError
from ..model.zoo import build_model

TOP_KEYS = ("control", "recipe", "base", "axes", "devices")  # and `about`, a description read_settings_file drops
DEFAULT_BACKENDS = ("pytorch", "mindspore")  # compare's default --backends
# What --device accepts, as the backends name it (cuda/gpu, npu/ascend are aliases): checked here, resolved on
# the worker that runs it, because the driver of a cluster sweep may have no GPU or NPU itself.
DEVICE_FORM = re.compile(r"(auto|cpu|cuda|gpu|npu|ascend)(:\d+)?", re.IGNORECASE)
MAX_RUNS = 1000  # a sweep file is typed by hand: more runs than this is a typo in an axis, not a plan


@dataclass(frozen=True)
class Variant:
    """One config of the sweep: the values of every axis but seed and backend.

    Attributes:
        key: 8 hex digits, sha256 of the settings without seed, backend and device (stable across runs).
        values: (axis, value) pairs in the file's order.
    """

    key: str
    values: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        """``model=lenet5, learning_rate=0.05``; ``base`` when the sweep has no axis but seed and backend."""
        return ", ".join(f"{name}={value}" for name, value in self.values) or "base"


@dataclass(frozen=True)
class Task:
    """One run to obtain: a backend's run, or the control run, of one variant at one seed."""

    key: str  # unique in the sweep: role, backend, device and config hash
    config: RunConfig
    role: str  # "run" or "control"
    folder: str  # under --out: "" for runs, "control" for controls (as harness compare keeps them)
    variant: Variant
    seed: int

    @property
    def label(self) -> str:
        """What a progress line calls it: ``model=lenet5 seed 1 mindspore`` (+ `` control``)."""
        return f"{self.variant.label} seed {self.seed} {self.config.backend}" + \
            (" control" if self.role == "control" else "")


@dataclass(frozen=True)
class Group:
    """A variant at one seed: what one ``harness compare`` would train and cross-check."""

    variant: Variant
    seed: int
    runs: tuple[Task, ...]  # one per backend, in the sweep's backend order
    control: Task | None

    @property
    def config(self) -> RunConfig:
        """The first backend's config: what compare builds its report from (data, title)."""
        return self.runs[0].config

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The group's runs, then its control."""
        return self.runs + ((self.control,) if self.control else ())


@dataclass(frozen=True)
class Plan:
    """Everything a sweep file asks for, validated."""

    source: Path
    backends: tuple[str, ...]
    devices: dict[str, str]
    control: bool  # false also when there is one backend: a control serves a pair of trained runs
    axis_names: tuple[str, ...]  # the variant axes, in the file's order (not seed, not backend)
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    groups: tuple[Group, ...]

    @property
    def tasks(self) -> list[Task]:
        """Every run of the sweep, group by group."""
        return [task for group in self.groups for task in group.tasks]

    def describe(self) -> str:
        """``2 configs x 2 seeds x 2 backends + 4 controls = 12 runs``."""
        controls = sum(group.control is not None for group in self.groups)
        parts = [f"{len(self.variants)} config{'s' * (len(self.variants) != 1)}",
                 f"{len(self.seeds)} seed{'s' * (len(self.seeds) != 1)}",
                 f"{len(self.backends)} backend{'s' * (len(self.backends) != 1)}"]
        return " x ".join(parts) + (f" + {controls} controls" if controls else "") + f" = {len(self.tasks)} runs"


def _where(path: Path, part: str) -> str:
    return f"sweep file {path}: {part}"


def _table(raw: dict, name: str, path: Path) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise HarnessError(_where(path, f"{name} should be a table ([{name}]), got {type(value).__name__} "
                                        f"{str(value)[:40]!r}"))
    return value


def _printable(names) -> str:
    return ", ".join(name if name.isprintable() else repr(name) for name in sorted(names))


def _base_settings(raw: dict, path: Path) -> dict:
    """[base] over its recipe (``recipe = "name"`` at the top or inside [base], not both)."""
    base = dict(_table(raw, "base", path))
    if "recipe" in raw and "recipe" in base:
        raise HarnessError(_where(path, "recipe is given both at the top and in [base]; keep one"))
    recipe = raw.get("recipe", base.pop("recipe", None))
    unknown = set(base) - set(valid_keys())
    if unknown:
        raise HarnessError(_where(path, f"unknown setting(s) in [base]: {_printable(unknown)}; valid settings: "
                                        f"{', '.join(valid_keys())}, recipe"))
    if recipe is None:
        return base
    if not isinstance(recipe, str):
        raise HarnessError(_where(path, f"recipe should be a recipe's name, got {recipe!r}"))
    return {**read_recipe(recipe), **base}


def _axes(raw: dict, path: Path) -> dict[str, list]:
    axes = _table(raw, "axes", path)
    valid = [key for key in valid_keys() if key != "device"]
    if "device" in axes:
        raise HarnessError(_where(path, "device is not an axis: a run's device does not change its numbers; set "
                                        "each backend's device in [devices], e.g. pytorch = \"cuda\""))
    unknown = set(axes) - set(valid)
    if unknown:
        raise HarnessError(_where(path, f"unknown axis(es) {_printable(unknown)}; valid axes: {', '.join(valid)}"))
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise HarnessError(_where(path, f"axes.{name} should be a non-empty list, e.g. {name} = [...], got "
                                            f"{str(values)[:40]!r}"))
        if len({json.dumps(value, sort_keys=True, default=str) for value in values}) < len(values):
            raise HarnessError(_where(path, f"axes.{name} lists a value twice ({values!r}); list each once"))
    return axes


def _backends(axes: dict, base: dict, path: Path) -> tuple[str, ...]:
    names = axes.get("backend") or ([base["backend"]] if "backend" in base else list(DEFAULT_BACKENDS))
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise HarnessError(_where(path, f"unknown backend(s) {unknown!r}; expected some of: "
                                        f"{', '.join(backend_names())}"))
    return tuple(names)


def _devices(raw: dict, base: dict, backends: tuple[str, ...], path: Path) -> dict[str, str]:
    table = _table(raw, "devices", path)
    unknown = set(table) - set(backend_names())
    if unknown:
        raise HarnessError(_where(path, f"[devices] names unknown backend(s) {_printable(unknown)}; expected some "
                                        f"of: {', '.join(backend_names())}"))
    default = base.get("device", "cpu")
    devices = {name: table.get(name, default) for name in backends}
    for name, device in devices.items():
        if not isinstance(device, str) or not DEVICE_FORM.fullmatch(device):
            raise HarnessError(_where(path, f"device {device!r} for {name} is not a device name; expected auto, "
                                            "cpu, cuda[:N], gpu[:N], npu[:N] or ascend[:N]"))
    return devices


def _check_axis_values(base: dict, axes: dict, path: Path) -> None:
    """Each value of each axis on its own over [base], so an error names the axis and the value."""
    for name, values in axes.items():
        if name == "backend":
            continue
        for value in values:
            try:
                build_config({**base, name: value})
            except HarnessError as error:
                raise HarnessError(_where(path, f"axes.{name} value {value!r}: {error}")) from None


def _check_buildable(config: RunConfig, where: str) -> None:
    """The dataset exists and a registry model builds for its images (a spec, no weights)."""
    data = config.data.dataset
    if data not in DATASETS:
        raise HarnessError(f"{where}: unknown dataset {data!r}; valid names: {', '.join(DATASETS)}")
    info, m = DATASETS[data], config.model
    if Path(m.model).suffix.lower() in (".onnx", ".json"):
        return  # a model file: build_config has read it already, and its layers are the file's own
    try:
        build_model(m.model, info.image_shape[0], info.num_classes, m.activation, m.pool, m.init)
    except HarnessError as error:
        raise HarnessError(f"{where}: {error}") from None


def variant_key(config: RunConfig) -> str:
    """8 hex digits naming a config across its seeds (sha256 of its settings but seed, backend and device)."""
    flat = {k: v for k, v in config.flat().items() if k not in ("seed", "backend", "device")}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:8]


def _task(config: RunConfig, role: str, variant: Variant, seed: int) -> Task:
    folder = CONTROL_FOLDER if role == "control" else ""
    return Task(f"{role}-{config.backend}-{config.device}-{config.config_hash}", config, role, folder, variant, seed)


def read_plan(path: Path) -> Plan:
    """Read and validate a sweep file.

    Raises:
        HarnessError: the file is unreadable or not TOML; a key, setting, axis, backend or device is unknown
            (the valid ones listed); a value has the wrong type or range; an axis lists a value twice or two
            combinations are the same config; the sweep asks for more than ``MAX_RUNS`` runs.
    """
    path = Path(path)
    raw = read_settings_file(path)  # bounded, regular files only; drops `about`
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise HarnessError(_where(path, f"unknown key(s) {_printable(unknown)}; valid top-level keys: "
                                        f"{', '.join(TOP_KEYS)}, about"))
    control = raw.get("control", True)
    if not isinstance(control, bool):
        raise HarnessError(_where(path, f"control should be true or false, got {control!r}"))
    base, axes = _base_settings(raw, path), _axes(raw, path)
    backends = _backends(axes, base, path)
    devices = _devices(raw, base, backends, path)
    base = {k: v for k, v in base.items() if k not in ("backend", "device")}
    _check_axis_values(base, axes, path)
    names = tuple(name for name in axes if name not in ("seed", "backend"))
    seeds = axes.get("seed", [base.get("seed", 0)])
    control = control and len(backends) > 1
    combos = list(itertools.product(*(axes[name] for name in names)))
    total = len(combos) * len(seeds) * (len(backends) + control)
    if total > MAX_RUNS:
        raise HarnessError(_where(path, f"{total} runs ({len(combos)} configs x {len(seeds)} seeds x "
                                        f"{len(backends) + control} runs each) is more than {MAX_RUNS}; "
                                        "shorten an axis"))
    variants, groups, seen = [], [], {}
    for combo in combos:
        values = tuple(zip(names, combo))
        first = build_config({**base, **dict(values), "seed": seeds[0], "backend": backends[0],
                              "device": devices[backends[0]]})
        key = variant_key(first)
        if key in seen:
            raise HarnessError(_where(path, f"axes give one config twice ({seen[key].label} and "
                                            f"{Variant(key, values).label}); list each value once"))
        variant = seen[key] = Variant(key, values)
        _check_buildable(first, _where(path, variant.label))
        variants.append(variant)
        for seed in seeds:
            runs = tuple(_task(build_config({**base, **dict(values), "seed": seed, "backend": name,
                                             "device": devices[name]}), "run", variant, seed) for name in backends)
            control_task = _task(control_config(runs[0].config, backends[0]), "control", variant, seed) \
                if control else None
            groups.append(Group(variant, int(runs[0].config.train.seed), runs, control_task))
    return Plan(path, backends, devices, control, names, tuple(int(s) for s in seeds), tuple(variants),
                tuple(groups))

