"""Train the super-network with the sandwich rule and in-place distillation; recalibrate BN.

Each step trains the largest sub-network on the labels, then the smallest and `random_subnets`
random ones on the largest one's soft predictions (in-place distillation, as in BigNAS /
slimmable networks), accumulating gradients into the shared weights before one optimizer step.
BatchNorm statistics are not shared: `recalibrate` recomputes them for one sub-network.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from tvmnas.data.arrays import ArrayDataset, batches, num_batches
from tvmnas.dynamic.supernet import (
    DynamicSupernet,
    ElasticBN,
    SubnetConfig,
    SupernetSpec,
    default_spec,
    largest,
    sample,
    smallest,
)
from tvmnas.errors import DatasetError, ModelLoadError
from tvmnas.training.loop import Checkpointing, EpochLoop, evaluate, write_log

SUPERNET_FILE = "supernet.pt"
SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.csv"
LOG_FIELDS = ("epoch", "train_loss", "train_acc")
CHECKPOINT_FILE = "supernet_checkpoint.pt"


@dataclass(frozen=True)
class SupernetTrainConfig:
    """Settings of one super-network training run (SGD, cosine learning rate)."""

    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    grad_clip: float = 5.0
    random_subnets: int = 2
    holdout: int = 300          # training examples kept aside for the selection's accuracy estimate
    label_weight: float = 0.5   # students' loss: this much cross-entropy on labels, the rest distillation
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.random_subnets < 0 or self.holdout < 0:
            raise ValueError("epochs and batch_size must be >= 1; random_subnets and holdout >= 0")


@dataclass(frozen=True)
class Split:
    """Training examples for the weights, held-out ones for choosing sub-networks, and the test set."""

    train_x: np.ndarray
    train_y: np.ndarray
    holdout_x: np.ndarray
    holdout_y: np.ndarray


def split(dataset: ArrayDataset, holdout: int, seed: int) -> Split:
    """A seeded split of dataset.train into training and held-out parts."""
    if holdout >= len(dataset.train_x):
        raise DatasetError(f"holdout {holdout} leaves no training examples (dataset has {len(dataset.train_x)})")
    order = np.random.default_rng(seed).permutation(len(dataset.train_x))
    keep, held = order[holdout:], order[:holdout]
    return Split(dataset.train_x[keep], dataset.train_y[keep], dataset.train_x[held], dataset.train_y[held])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's (detached) soft predictions."""
    return -(F.softmax(teacher, 1) * F.log_softmax(student, 1)).sum(1).mean()


def sandwich_step(net: DynamicSupernet, x: torch.Tensor, y: torch.Tensor, teacher_config: SubnetConfig,
                  students: list[SubnetConfig], label_weight: float = 0.0) -> tuple[float, float]:
    """Accumulate the sandwich-rule gradients of one batch; returns (teacher's loss, its accuracy).

    The teacher (the largest sub-network) learns from the labels; every student from its detached
    predictions, mixed with `label_weight` of label cross-entropy (a young teacher is still weak,
    so pure distillation would copy its mistakes).
    """
    top = net(x, teacher_config)
    loss = F.cross_entropy(top, y)
    loss.backward()
    teacher = top.detach()
    for config in students:
        logits = net(x, config)
        loss_k = (1 - label_weight) * distillation_loss(logits, teacher)
        if label_weight:
            loss_k = loss_k + label_weight * F.cross_entropy(logits, y)
        loss_k.backward()
    return float(loss.detach()), float((teacher.argmax(1) == y).float().mean())


class _RandomState:
    """The sub-network sampler's state, checkpointed so that a resumed run samples the same sub-networks."""

    def __init__(self, rng: random.Random):
        self.state_dict, self.load_state_dict = rng.getstate, rng.setstate


def run_epochs(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, config: SupernetTrainConfig, epochs: int,
               step: Callable[[torch.Tensor, torch.Tensor], tuple[float, float]], *, lr: float | None = None,
               name: str = "train", progress: bool = False, checkpointing: Checkpointing | None = None,
               rng: random.Random | None = None,
               on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """SGD (Nesterov momentum, cosine learning rate from `lr` or config.lr to 0, annealed per batch) over
    `epochs` epochs; `step` accumulates one batch's gradients and returns (loss, accuracy). One row per
    epoch. With `checkpointing`, resumable (`rng`, the sub-network sampler, is checkpointed too)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr or config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    loop = EpochLoop(model, optimizer, epochs, num_batches(len(x), config.batch_size), config.grad_clip,
                     per_step_lr=True, state={"rng": _RandomState(rng)} if rng else {}, label=name,
                     progress=progress, checkpointing=checkpointing)

    def batch_step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        loss, acc = step(*batch)
        loop.add(loss=loss, acc=acc)
        return {"loss": loss, "acc": acc}

    def end_epoch(epoch: int) -> dict[str, float]:
        return {"train_loss": loop.totals["loss"] / loop.steps, "train_acc": loop.totals["acc"] / loop.steps}

    history = loop.run(lambda epoch: batches(x, y, config.batch_size, shuffle_seed=config.seed * 1000 + epoch),
                       batch_step, end_epoch, on_epoch_end=on_epoch_end)
    model.eval()
    return history


def finetune_selected(net: DynamicSupernet, teacher: SubnetConfig, students: list[SubnetConfig], x: np.ndarray,
                      y: np.ndarray, config: SupernetTrainConfig, epochs: int, *,
                      progress: bool = False) -> list[dict[str, float]]:
    """Fine-tune the shared weights for exactly the selected sub-networks (sandwich rule over them:
    the largest, `teacher`, on the labels, the `students` distilled from it), so that the
    configurations the artifact ships get all the remaining updates. Learning rate: half the
    training rate, cosine."""
    torch.manual_seed(config.seed + 1)
    return run_epochs(net, x, y, config, epochs,
                      lambda xb, yb: sandwich_step(net, xb, yb, teacher, students, config.label_weight),
                      lr=0.5 * config.lr, name="fine-tune", progress=progress)


@torch.no_grad()
def recalibrate(net: DynamicSupernet, config: SubnetConfig, x: np.ndarray, *, batch_size: int = 64,
                max_batches: int = 8) -> None:
    """Recompute the BatchNorm statistics `config` sees, as the mean over up to `max_batches` batches."""
    bns = [m for m in net.modules() if isinstance(m, ElasticBN)]
    for bn in bns:
        bn.reset_running_stats()
    net.train()
    for i, (xb, _) in enumerate(batches(x, np.zeros(len(x), dtype=np.int64), batch_size)):
        if i >= max_batches:
            break
        for bn in bns:
            bn.momentum = 1.0 / (i + 1)
        net(xb, config)
    for bn in bns:
        bn.momentum = 0.1
    net.eval()


@torch.no_grad()
def accuracy(net: DynamicSupernet, config: SubnetConfig, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of sub-network `config` (with whatever BN statistics the net holds)."""
    net.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((net(xb, config).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def train_supernet(
    dataset: ArrayDataset,
    out_dir: Path,
    config: SupernetTrainConfig = SupernetTrainConfig(),
    *,
    spec: SupernetSpec | None = None,
    progress: bool = False,
    data_source: dict[str, Any] | None = None,
    resume: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[DynamicSupernet, dict[str, Any]]:
    """Train a super-network on `dataset` and write supernet.pt, spec.json, train_log.csv, metrics.json.

    A checkpoint written after every epoch is resumed when present with the same settings;
    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint is written.
    data_source (how to load the data set again: name, root, limits) is recorded for `select`.
    """
    spec = spec or default_spec(dataset.input_shape, dataset.num_classes)
    if tuple(spec.input_shape) != dataset.input_shape or spec.num_classes != dataset.num_classes:
        raise DatasetError(f"supernet expects {spec.input_shape} / {spec.num_classes} classes, dataset "
                           f"'{dataset.name}' has {dataset.input_shape} / {dataset.num_classes}")
    parts = split(dataset, config.holdout, config.seed)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    net = DynamicSupernet(spec)
    settings = {"config": asdict(config), "spec": spec.to_dict(), "dataset": dataset.name,
                "train_examples": len(dataset.train_x)}
    history = run_epochs(
        net, parts.train_x, parts.train_y, config, config.epochs,
        lambda xb, yb: sandwich_step(net, xb, yb, largest(spec),
                                     [smallest(spec)] + [sample(spec, rng) for _ in range(config.random_subnets)],
                                     config.label_weight),
        name="supernet", progress=progress, rng=rng, on_epoch_end=on_epoch_end,
        checkpointing=Checkpointing(out_dir, CHECKPOINT_FILE, settings, LOG_FILE, LOG_FIELDS, resume))
    metrics: dict[str, Any] = {"dataset": dataset.name, "train_examples": len(parts.train_x),
                               "holdout_examples": len(parts.holdout_x), "settings": asdict(config),
                               "data_source": data_source or {"name": dataset.name}}
    for name, sub in (("largest", largest(spec)), ("smallest", smallest(spec))):
        recalibrate(net, sub, parts.train_x, batch_size=config.batch_size, max_batches=config.calibration_batches)
        metrics[f"{name}_test_acc"] = accuracy(net, sub, dataset.test_x, dataset.test_y)
    save_supernet(net, out_dir, metrics, history)
    return net, metrics


def save_supernet(net: DynamicSupernet, out_dir: Path, metrics: dict[str, Any], history: list[dict[str, float]]) -> None:
    """Write the super-network folder (weights, spec, metrics, per-epoch log)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out_dir / SUPERNET_FILE)
    (out_dir / SPEC_FILE).write_text(json.dumps(net.spec.to_dict(), indent=2, sort_keys=True) + "\n")
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_log(out_dir / LOG_FILE, history, LOG_FIELDS)


def load_supernet(sup_dir: Path) -> tuple[DynamicSupernet, dict[str, Any]]:
    """The super-network and its training metrics from a `tvmnas dynamic train` folder."""
    sup_dir = Path(sup_dir)
    for name in (SUPERNET_FILE, SPEC_FILE):
        if not (sup_dir / name).is_file():
            raise ModelLoadError(f"{sup_dir} is not a super-network folder: no {name}")
    spec = SupernetSpec.from_dict(json.loads((sup_dir / SPEC_FILE).read_text()))
    net = DynamicSupernet(spec)
    try:
        net.load_state_dict(torch.load(sup_dir / SUPERNET_FILE, weights_only=True))
    except (RuntimeError, OSError, ValueError) as err:
        raise ModelLoadError(f"{sup_dir / SUPERNET_FILE}: unreadable super-network weights ({err})") from None
    metrics_path = sup_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return net.eval(), metrics


def train_standalone(
    spec: SupernetSpec,
    subnet: SubnetConfig,
    dataset: ArrayDataset,
    config: SupernetTrainConfig = SupernetTrainConfig(),
) -> tuple["torch.nn.Module", float]:
    """Train sub-network `subnet` alone from scratch with the super-network's settings (same
    examples, epochs, optimizer and schedule; labels only) and return it with its test accuracy:
    the baseline a weight-shared sub-network is compared with."""
    from tvmnas.dynamic.subnet import SubNetwork

    parts = split(dataset, config.holdout, config.seed)
    torch.manual_seed(config.seed)
    model = SubNetwork(spec, subnet)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float]:
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        return float(loss.detach()), float((logits.argmax(1) == yb).float().mean())

    run_epochs(model, parts.train_x, parts.train_y, config, config.epochs, step, name="alone")
    return model, evaluate(model, dataset.test_x, dataset.test_y, 256)[1]
