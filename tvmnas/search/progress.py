"""Epoch progress on stderr (rich), showing loss, accuracy and the current predicted cost."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochProgress:
    """A rich progress bar over steps whose description carries the latest figures; no-op when disabled."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._progress = progress
        self._task = task

    def update(self, advance: int = 1, **figures: float | str) -> None:
        """Advance by `advance` steps and show `figures` (name=value)."""
        if self._progress is None or self._task is None:
            return
        text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        self._progress.update(self._task, advance=advance, figures=text)


@contextmanager
def epoch_progress(label: str, total_steps: int, *, enabled: bool, completed: int = 0) -> Iterator[EpochProgress]:
    """Context giving an EpochProgress for `total_steps` steps, drawn on stderr when enabled."""
    if not enabled:
        yield EpochProgress(None, None)
        return
    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[figures]}"), console=Console(stderr=True), transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total_steps, completed=completed, figures="")
        yield EpochProgress(progress, task)
