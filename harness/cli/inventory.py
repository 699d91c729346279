"""``harness list`` (models, datasets, backends and their devices here) and ``harness data download``."""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from ..backend import backend_names, get_backend, is_installed
from ..config import recipe_names
from ..data.registry import TORCHVISION_CLASSES, describe_datasets
from ..errors import HarnessError
from ..model.zoo import MODELS, build_model
from .settings import DATA_DIR_HELP, Parser

WIDTH = 80  # a terminal's default width: the listing must read there without the terminal wrapping it


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``, broken only at spaces: a name or a path is never cut."""
    return textwrap.wrap(text, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]


def _indented(text: str, indent: int) -> list[str]:
    """``text`` wrapped to WIDTH at column ``indent``, its continuation lines two further in; a path too long
    for that keeps a line of its own at column 0 (longer than WIDTH, it is still printed whole, never cut)."""
    first, *more = _wrap(text, WIDTH - indent - 2)
    return [" " * (pad if pad + len(line) <= WIDTH else 0) + line
            for pad, line in [(indent, first), *((indent + 2, line) for line in more)]]


def table(header: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Columns two spaces apart, indented two; the last (free text) wraps beside the others."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        lead = "  " + "".join((cell.rjust(w) if i in right else cell.ljust(w)) + "  "
                              for i, (cell, w) in enumerate(zip(row, widths)))
        first, *more = _wrap(row[-1], WIDTH - len(lead))
        lines += [(lead + first).rstrip()] + [" " * len(lead) + line for line in more]
    return lines


def _models() -> list[str]:
    rows = []
    for name, entry in MODELS.items():
        spec = build_model(name, entry.channels)
        rows.append([name, "x".join(map(str, spec.input_shape)), f"{spec.num_params:,}", entry.description])
    return table(["name", "input", "params", "description"], rows, frozenset({2}))


def _datasets(data_dir: Path | None) -> list[str]:
    """One block per dataset: name, shape and whether it is here; below, what it is and where its files are
    (a long path on a line of its own rather than cut)."""
    found = describe_datasets(data_dir)
    width = max(len(row["name"]) for row in found)
    lines = []
    for row in found:
        state = "available" if row["found"] else "not found"
        lines.append(f"  {row['name']:<{width}}  {'x'.join(map(str, row['shape']))}, {row['classes']} classes, {state}")
        where = f"files: {row['where']}" if row["found"] and Path(row["where"]).exists() else row["where"]
        lines += _indented(row["description"], 4) + _indented(where, 4)
    return lines


def _backends() -> list[str]:
    rows = []
    for name in backend_names():
        installed, version, devices = is_installed(name), "", ""
        if installed:
            try:
                backend = get_backend(name)
                devices = ", ".join(backend.devices())
                version = backend.versions().get(name.replace("pytorch", "torch"), "")
            except HarnessError as error:
                devices = f"unusable: {error}"
        rows.append([name, "yes" if installed else "no", version or "-", devices or "-"])
    return table(["name", "installed", "version", "devices"], rows)


def print_listing(data_dir: Path | None) -> None:
    """Print models, datasets, backends and recipes, readable in 80 columns without cutting a name or path."""
    for title, lines in (("models", _models()), ("datasets", _datasets(data_dir)), ("backends", _backends())):
        print("\n".join([f"{title}:", *lines, ""]))
    print("\n".join(["recipes:", *_indented(", ".join(recipe_names()), 2)]))


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
    listing.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    listing.set_defaults(handler=_cmd_list)
    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    download = data_commands.add_parser("download", help="download a dataset with torchvision (needs internet)")
    download.add_argument("name", metavar="NAME", help=f"one of {', '.join(TORCHVISION_CLASSES)}")
    download.add_argument("--data-dir", type=Path,
                          help="where it goes (default: $HARNESS_DATA_DIR if set, else ./data)")
    download.set_defaults(handler=_cmd_data)
