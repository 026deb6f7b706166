"""The user's own targets (calibrated from a board), kept outside the package.

Folder: $TVMNAS_TARGETS_DIR if set, else ~/.tvmnas/targets. One subfolder per target:

    <dir>/<name>/descriptor.json   the target descriptor (tvmnas.targets format, name = <name>)
    <dir>/<name>/timing.json       the fitted timing table (tvmnas.measure.cycles format)
    <dir>/<name>/surrogate.json.gz the cost surrogate refitted on re-estimated profile data
    <dir>/<name>/distilled.pt      the distilled cost for the search
    <dir>/<name>/calibration.json  what the fit saw: board, kernels, weights, residuals

tvmnas.targets.load_target, load_timing_table, load_surrogate and DistilledCostModel.shipped look
here after the package's own data, so a calibrated target is used like a shipped one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "TVMNAS_TARGETS_DIR"
DESCRIPTOR = "descriptor.json"
TIMING = "timing.json"
SURROGATE = "surrogate.json.gz"
DISTILLED = "distilled.pt"
CALIBRATION = "calibration.json"


def user_targets_dir() -> Path:
    """Where user targets live: $TVMNAS_TARGETS_DIR, else ~/.tvmnas/targets."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".tvmnas" / "targets"


def user_target_dir(name: str) -> Path:
    return user_targets_dir() / name


def user_file(name: str, kind: str) -> Path | None:
    """A user target's file of one kind (DESCRIPTOR, TIMING, ...) if it exists."""
    path = user_target_dir(name) / kind
    return path if path.is_file() else None


def user_target_names() -> list[str]:
    root = user_targets_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / DESCRIPTOR).is_file())


def calibration_note(name: str) -> str | None:
    """'calibrated from N kernels measured on BOARD' for a calibrated target, else None."""
    path = user_file(name, CALIBRATION)
    if path is None:
        return None
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return f"calibrated from {doc['kernels']} kernels measured on {doc['board']}"
    except (ValueError, KeyError, OSError):
        return None


__all__ = ["CALIBRATION", "DESCRIPTOR", "DISTILLED", "ENV_VAR", "SURROGATE", "TIMING", "calibration_note",
           "user_file", "user_target_dir", "user_target_names", "user_targets_dir"]
