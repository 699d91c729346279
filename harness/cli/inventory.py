"""``harness list`` (models, datasets, backends and their devices here) and ``harness data download``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from ..backend import backend_names, get_backend, is_installed
from ..config import recipe_names
from ..data.registry import describe_datasets
from ..errors import HarnessError
from ..model.zoo import MODELS, build_model
from .settings import Parser


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


def _cmd_list(args: argparse.Namespace) -> int:
    print_listing(args.data_dir)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ..data.registry import download

    root = args.data_dir or Path(os.environ.get("HARNESS_DATA_DIR", "data"))
    print(f"{args.name} is in {download(args.name, root)}")
    return 0


def register(commands) -> None:
    """Add ``list`` and ``data`` to the CLI's subcommands."""
    listing = commands.add_parser("list", help="models, datasets and backends available here")
    listing.add_argument("--data-dir", type=Path)
    listing.set_defaults(handler=_cmd_list)
    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    download = data_commands.add_parser("download", help="download a dataset with torchvision (needs internet)")
    download.add_argument("name")
    download.add_argument("--data-dir", type=Path)
    download.set_defaults(handler=_cmd_data)
