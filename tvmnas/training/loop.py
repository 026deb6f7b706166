"""The resumable epoch loop that search, retraining and dynamic training share: one clipped SGD step
per batch, torch's CosineAnnealingLR (per epoch or per batch), evaluation, a progress bar on stderr, a
per-epoch CSV log and an atomic checkpoint after every epoch, so a killed run resumes to exactly the
uninterrupted result (on CPU)."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from tvmnas.data.arrays import batches
from tvmnas.errors import TvmnasError

CHECKPOINT_FORMAT = 2  # saved with the settings: a checkpoint of an older layout is refused, not misread


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of `model` on (x, y) in eval mode; its mode is restored."""
    was_training, loss, correct = model.training, 0.0, 0
    model.eval()
    for xb, yb in batches(x, y, batch_size, device=device):
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return loss / max(len(x), 1), correct / max(len(x), 1)


def write_log(path: Path, history: Sequence[dict[str, float]], fields: Sequence[str]) -> None:
    """Rewrite the whole CSV log (it is tiny), so a resumed run's log has every epoch exactly once."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({k: row[k] for k in fields} for row in history)


@contextmanager
def progress_bar(label: str, total: int, completed: int, enabled: bool) -> Iterator[Callable[..., None]]:
    """A rich bar on stderr over `total` steps; the function it gives advances it one step and shows the
    figures (name=value) it is called with. A no-op when not enabled."""
    if not enabled:
        yield lambda **figures: None
        return
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[figures]}"), console=Console(stderr=True))
    with bar:
        task = bar.add_task(label, total=total, completed=completed, figures="")
        yield lambda **figures: bar.update(task, advance=1, figures="  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


@dataclass(frozen=True)
class Checkpointing:
    """Where a loop checkpoints and logs (`log_fields` of each row), and the settings a resume must match."""

    out_dir: Path
    name: str
    settings: dict[str, Any]
    log_name: str
    log_fields: Sequence[str]
    resume: bool = True


@dataclass
class EpochLoop:
    """SGD over `epochs` epochs of `steps` batches, cosine learning rate from the optimizer's to `lr_min`
    (annealed per batch with `per_step_lr`). `clip` gives the parameters whose gradient norm is clipped
    (default: the model's); `state` names other objects with state_dict/load_state_dict to checkpoint."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps: int
    grad_clip: float
    lr_min: float = 0.0
    per_step_lr: bool = False
    clip: Callable[[], Iterable[torch.Tensor]] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    label: str = "train"
    progress: bool = False
    checkpointing: Checkpointing | None = None
    epoch: int = field(default=0, init=False)
    totals: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        t_max = self.epochs * self.steps if self.per_step_lr else self.epochs
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, t_max, eta_min=self.lr_min)
        self.state = {"optimizer": self.optimizer, "scheduler": self.scheduler, **self.state}

    @property
    def lr(self) -> float:
        """The learning rate of the next weight step."""
        return float(self.scheduler.get_last_lr()[0])

    def add(self, **amounts: float) -> None:
        """Add to the running totals of the epoch under way (`totals`, cleared at each epoch's start)."""
        for name, value in amounts.items():
            self.totals[name] = self.totals.get(name, 0.0) + value

    def run(self, epoch_batches: Callable[[int], Iterable[Any]], step: Callable[[Any], dict[str, float | str]],
            end_epoch: Callable[[int], dict[str, float]], *,
            on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Train from the checkpoint's next epoch (or the first); one row per epoch.

        Each batch of `epoch_batches(epoch)`: clear gradients, `step(batch)` computes them (adding the
        epoch's figures with `add`) and returns figures for the progress bar, clip, optimizer step.
        `end_epoch(epoch)` gives the epoch's row, to which 'epoch' and 'lr' (its rate at the epoch's
        start) are added; then the log and the checkpoint are written and `on_epoch_end(epoch, row)` is
        called.
        """
        history, start = self._resume()
        with progress_bar(self.label, self.steps * self.epochs, self.steps * start, self.progress) as advance:
            for epoch in range(start, self.epochs):
                lr, self.epoch, self.totals = self.lr, epoch, {}
                self.model.train()
                for batch in epoch_batches(epoch):
                    self.optimizer.zero_grad(set_to_none=True)
                    figures = step(batch)
                    nn.utils.clip_grad_norm_(list(self.clip() if self.clip else self.model.parameters()),
                                             self.grad_clip)
                    self.optimizer.step()
                    if self.per_step_lr:
                        self.scheduler.step()
                    advance(epoch=f"{epoch + 1}/{self.epochs}", **figures)
                if not self.per_step_lr:
                    self.scheduler.step()
                history.append({"epoch": epoch, "lr": lr, **end_epoch(epoch)})
                self._save(epoch, history)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history[-1])
        return history

    def _resume(self) -> tuple[list[dict[str, float]], int]:
        ck = self.checkpointing
        if ck is None:
            return [], 0
        path = Path(ck.out_dir) / ck.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (ck.resume and path.is_file()):
            return [], 0
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("settings") != {**ck.settings, "format": CHECKPOINT_FORMAT}:
            raise TvmnasError(f"checkpoint '{path}' was written with other settings; use a new output folder "
                              "or delete it")
        self.model.load_state_dict(saved["model"])
        for name, obj in self.state.items():
            obj.load_state_dict(saved[name])
        torch.set_rng_state(saved["torch_rng"])
        return saved["history"], saved["epoch"] + 1

    def _save(self, epoch: int, history: list[dict[str, float]]) -> None:
        """Rewrite the log, then the checkpoint through a temporary file renamed over it (atomic)."""
        if (ck := self.checkpointing) is not None:
            write_log(Path(ck.out_dir) / ck.log_name, history, ck.log_fields)
            path = Path(ck.out_dir) / ck.name
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"settings": {**ck.settings, "format": CHECKPOINT_FORMAT}, "epoch": epoch, "history": history,
                        "model": self.model.state_dict(), "torch_rng": torch.get_rng_state(),
                        **{name: obj.state_dict() for name, obj in self.state.items()}}, tmp)
            os.replace(tmp, path)
