"""``harness list``: what can run here — models, datasets, backends and their devices."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .backend import backend_names, get_backend, is_installed
from .config import recipe_names
from .data import describe_datasets
from .errors import HarnessError
from .models import MODELS, build_model


def _models() -> pd.DataFrame:
    rows = []
    for name, entry in MODELS.items():
        spec = build_model(name, entry.channels)
        rows.append({"model": name, "input": "x".join(map(str, spec.input_shape)),
                     "params": f"{spec.num_params:,}", "description": entry.description})
    return pd.DataFrame(rows)


def _backends() -> pd.DataFrame:
    rows = []
    for name in backend_names():
        row = {"backend": name, "installed": is_installed(name), "devices": "", "version": ""}
        if row["installed"]:
            try:
                backend = get_backend(name)
                row.update(devices=",".join(backend.devices()), version=backend.versions().get(name.replace("pytorch", "torch"), ""))
            except HarnessError as error:
                row["devices"] = f"unusable: {error}"
        rows.append(row)
    return pd.DataFrame(rows)


def print_listing(data_dir: Path | None) -> None:
    """Print the three tables and the recipe names."""
    datasets = pd.DataFrame(describe_datasets(data_dir))
    for title, frame in (("models", _models()), ("datasets", datasets), ("backends", _backends())):
        print(f"{title}:\n{frame.to_string(index=False)}\n")
    print(f"recipes: {', '.join(recipe_names())}")
