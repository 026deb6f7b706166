"""Retrain a genotype's network from scratch, checkpointing every epoch, then export it as
model.pt2 (torch.export) and model.onnx with metrics.json, checking both exports against torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.data.arrays import ArrayDataset, batches, num_batches
from tvmnas.errors import DatasetError
from tvmnas.model_file import export_onnx, export_pt2, sample_input
from tvmnas.models import build_model
from tvmnas.search.cost import count_module
from tvmnas.search.genotype import Genotype
from tvmnas.training.loop import Checkpointing, EpochLoop, evaluate

CHECKPOINT_NAME = "train_checkpoint.pt"
LOG_NAME = "train_log.csv"
LOG_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one retraining run (SGD with momentum, cosine learning rate)."""

    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    lr: float = 0.05
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")


@dataclass
class TrainResult:
    """The trained network and the figures written to metrics.json."""

    model: nn.Module
    metrics: dict[str, Any]


def export_model(model: nn.Module, input_shape: tuple[int, int, int], out_dir: Path) -> dict[str, Any]:
    """Write model.pt2 and model.onnx (float32 NCHW, batch 1), reload both and compare with torch."""
    import onnxruntime as ort

    model.eval()
    shape = (1, *input_shape)
    example = sample_input(shape)
    with torch.no_grad():
        reference = model(example).numpy()
    pt2_path = export_pt2(model, shape, out_dir / "model.pt2")
    onnx_path = export_onnx(model, shape, out_dir / "model.onnx", output_name="logits")
    with torch.no_grad():
        pt2_out = torch.export.load(pt2_path).module()(example).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": example.numpy()})[0]
    return {
        "pt2": pt2_path.name, "onnx": onnx_path.name, "input_shape": [1, *input_shape], "dtype": "float32",
        "max_abs_diff_pt2": float(np.abs(pt2_out - reference).max()),
        "max_abs_diff_onnx": float(np.abs(onnx_out - reference).max()),
    }


def train(
    genotype: Genotype,
    dataset: ArrayDataset,
    out_dir: Path,
    config: TrainConfig = TrainConfig(),
    *,
    resume: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train `genotype`'s network from scratch on dataset.train, evaluate on dataset.test, export.

    out_dir gets train_checkpoint.pt (resumed when present with the same settings), train_log.csv,
    model.pt2, model.onnx, genotype.json and metrics.json. Budget results recorded by the search in
    genotype.extra are carried into metrics.json ('budget_ok', 'violations').
    """
    if tuple(genotype.input_shape) != dataset.input_shape or genotype.num_classes != dataset.num_classes:
        raise DatasetError(
            f"genotype expects input {tuple(genotype.input_shape)} with {genotype.num_classes} classes, "
            f"dataset '{dataset.name}' has {dataset.input_shape} with {dataset.num_classes}"
        )
    torch.manual_seed(config.seed)
    result = train_network(build_model(genotype), dataset, out_dir, config, identity=genotype.to_dict(),
                           resume=resume, progress=progress, on_epoch_end=on_epoch_end, device=device)
    genotype.save(Path(out_dir) / "genotype.json")
    searched = genotype.extra.get("search", {})
    result.metrics.update({
        "space": genotype.space,
        "genotype": str(genotype),
        "target": searched.get("target"),
        "budgets": searched.get("budgets"),
        "budget_ok": searched.get("budget_ok", True),
        "violations": searched.get("violations", []),
    })
    (Path(out_dir) / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
    return result


def train_network(
    model: nn.Module,
    dataset: ArrayDataset,
    out_dir: Path,
    config: TrainConfig = TrainConfig(),
    *,
    identity: dict[str, Any],
    resume: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train any network (freshly initialised) with the retraining recipe, evaluate, export: what
    train() does for a genotype, so that a hand-designed reference network (MLPerf Tiny's ResNet-8,
    say) is trained exactly as the searched ones. `identity` names the network in the checkpoint's
    settings, so that a checkpoint of another network is not resumed."""
    out_dir = Path(out_dir)
    settings = {"config": asdict(config), "genotype": identity, "dataset": dataset.name,
                "train_examples": len(dataset.train_x)}
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    loop = EpochLoop(model, optimizer, config.epochs, num_batches(len(dataset.train_x), config.batch_size),
                     config.grad_clip, lr_min=config.lr_min, progress=progress,
                     checkpointing=Checkpointing(out_dir, CHECKPOINT_NAME, settings, LOG_NAME, LOG_FIELDS, resume))

    def step(batch) -> dict[str, float]:
        xb, yb = batch
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
        loss.backward()
        loop.add(loss=float(loss.detach()) * len(yb), correct=int((logits.argmax(1) == yb).sum()), n=len(yb))
        return {"loss": float(loss.detach()), "acc": loop.totals["correct"] / loop.totals["n"]}

    def end_epoch(epoch: int) -> dict[str, float]:
        test_loss, test_acc = evaluate(model, dataset.test_x, dataset.test_y, config.batch_size, device)
        sums = loop.totals
        return {"train_loss": sums["loss"] / sums["n"], "train_acc": sums["correct"] / sums["n"],
                "test_loss": test_loss, "test_acc": test_acc}

    epoch_batches = (lambda epoch: batches(dataset.train_x, dataset.train_y, config.batch_size,
                                           shuffle_seed=config.seed * 100_003 + epoch, device=device))
    history = loop.run(epoch_batches, step, end_epoch, on_epoch_end=on_epoch_end)

    model = model.to("cpu").eval()
    counts = count_module(model, dataset.input_shape)
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "epochs": config.epochs,
        "seed": config.seed,
        "test_accuracy": history[-1]["test_acc"],
        "test_loss": history[-1]["test_loss"],
        "train_accuracy": history[-1]["train_acc"],
        "macs": counts.macs,
        "params": counts.params,
        "param_bytes": counts.params * 4,
        "cost_note": "macs and params counted exactly on the float32 model (BN folded into conv bias); "
                     "cycles are not measured here",
        "export": export_model(model, dataset.input_shape, out_dir),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return TrainResult(model, metrics)

