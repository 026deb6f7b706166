"""Atomic checkpoint files: a run killed at any point resumes from the last complete one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tvmnas.errors import TvmnasError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to a temporary file then rename it over `path`, so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None if there is none; settings must equal the saved ones."""
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("settings") != settings:
        raise TvmnasError(
            f"checkpoint '{path}' was written with other settings; use a new output folder or delete it"
        )
    return state
