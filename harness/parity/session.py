"""``harness parity`` end to end: the checks on the configured data, parity.csv and parity.png."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..report.plots import plot_parity
from ..report.tables import provenance
from ..runs.files import atomic_path, ensure_writable_dir, locked_folder
from ..tolerances import policies
from ..training.run import load_data
from .modes import COLUMNS, check, first_failure


def run_parity(config: RunConfig, names: list[str], steps: int, modes: list[str], data_dir: Path | None,
               reports_dir: Path, quiet: bool = False) -> tuple[pd.DataFrame, dict | None]:
    """``harness parity``: divergence search plus the chosen step modes; writes parity.csv and parity.png."""
    spec, dataset = load_data(config, data_dir)
    rows = check(config, spec, dataset, names, steps, modes, quiet=quiet)
    frame = pd.DataFrame(rows).assign(model=config.model.model, backend_a=names[0], backend_b=names[1],
                                      **provenance(config))
    frame = frame.reindex(columns=[*COLUMNS, *(c for c in frame.columns if c not in COLUMNS)])
    ensure_writable_dir(reports_dir, "reports folder")
    # Locked: a report set swapped into the same folder at this moment would otherwise drop these files.
    with locked_folder(reports_dir), atomic_path(reports_dir / "parity.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with locked_folder(reports_dir):
        plot_parity(frame, reports_dir / "parity.png", policies().step.update_rel, policies().lockstep.weight_rel,
                    dataset=config.data.dataset,
                    loss_budgets={"lockstep": policies().lockstep.loss_abs, "synchronised": policies().step.loss_abs})
    return frame, first_failure(rows)
