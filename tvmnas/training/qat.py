"""Quantization-aware fine-tuning of a trained float network, then its int8 QDQ ONNX export.

The recipe is post-training quantization followed by a few QAT epochs: the float network the
retraining produced is traced into its int8 form (tvmnas.quant.qat), every activation range is
calibrated on training images exactly as the post-training quantizer measures it (so the accuracy
before fine-tuning is the PTQ accuracy), then the network is fine-tuned with fake quantization and
ranges tracked by a moving average. Starting from the converged float network, rather than training
quantized from scratch, keeps the float32 model for the side-by-side comparison, lets BatchNorm be
folded with its settled running statistics (training and deployment fold it identically), and costs
a few epochs instead of a full retraining on a two-core machine.

Accuracies here are measured in evaluation mode, where the network runs the integer reference's
arithmetic: they are the accuracies of the int8 C code.
"""

from __future__ import annotations

import copy
import hashlib
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
from tvmnas.quant.qat import QATNetwork, export_qdq, prepare_qat
from tvmnas.training.loop import Checkpointing, EpochLoop, evaluate

CHECKPOINT_NAME = "qat_checkpoint.pt"
LOG_NAME = "qat_log.csv"
LOG_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
MODEL_NAME = "model_int8.onnx"
STATE_NAME = "model_int8.pt"  # the fine-tuned QATNetwork's state, to evaluate it again in PyTorch
METRICS_NAME = "metrics_int8.json"


@dataclass(frozen=True)
class QATConfig:
    """Settings of the fine-tuning: SGD with momentum, cosine learning rate from `lr` (a fiftieth of
    retraining's: the weights start converged; on a CIFAR-10 subset a tenth cost 2 points against
    PTQ, see benchmarks/RESULTS.md), `calibration_images` training images for the initial ranges,
    `range_momentum` for the moving average of each activation's range (PyTorch's observers use 0.01)."""

    epochs: int = 4
    batch_size: int = 64
    seed: int = 0
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    calibration_images: int = 256
    range_momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.calibration_images < 1:
            raise ValueError("QAT epochs must be >= 0, batch_size and calibration_images >= 1")


@dataclass
class QATResult:
    """The fine-tuned int8 network and the figures written to metrics_int8.json."""

    network: QATNetwork
    metrics: dict[str, Any]


def calibrate(net: QATNetwork, images: np.ndarray, batch_size: int) -> None:
    """Set every activation range to the min and max the float network reaches on `images` (the
    post-training choice); afterwards ranges are frozen and fake quantization is on."""
    net.set_observe("calibrate", enabled=False)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            net(torch.from_numpy(images[start:start + batch_size]))
    net.set_observe("frozen", enabled=True)


def quantization_aware_train(
    model: nn.Module,
    dataset: ArrayDataset,
    out_dir: Path,
    config: QATConfig = QATConfig(),
    *,
    float_accuracy: float | None = None,
    resume: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> QATResult:
    """Fine-tune a copy of the trained float `model` with QAT on dataset.train and export it.

    out_dir gets qat_checkpoint.pt (resumed when present with the same settings), qat_log.csv,
    model_int8.pt (the network's state, for :func:`load_qat`), model_int8.onnx (QDQ, what the compiler takes) and metrics_int8.json (PTQ and QAT test
    accuracy of the integer arithmetic, and `float_accuracy` when given, for comparison).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = prepare_qat(copy.deepcopy(model).cpu(), dataset.input_shape)
    for quant in net.quants.values():
        quant.momentum = config.range_momentum
    calibrate(net, dataset.train_x[:config.calibration_images], config.batch_size)
    ptq_loss, ptq_acc = evaluate(net, dataset.test_x, dataset.test_y, config.batch_size)
    history: list[dict[str, float]] = []
    if config.epochs:
        history = _fine_tune(net, dataset, out_dir, config, progress, resume, _state_digest(model), on_epoch_end)
    net.set_observe("frozen", enabled=True)
    net.eval()
    qat_loss, qat_acc = (history[-1]["test_loss"], history[-1]["test_acc"]) if history else (ptq_loss, ptq_acc)
    export_qdq(net, out_dir / MODEL_NAME)
    torch.save(net.state_dict(), out_dir / STATE_NAME)
    out_q = net.output_qtensor()
    metrics: dict[str, Any] = {
        "recipe": "post-training calibration, then quantization-aware fine-tuning",
        "qat_epochs": config.epochs, "config": asdict(config),
        "float_test_accuracy": float_accuracy,
        "ptq_test_accuracy": ptq_acc, "ptq_test_loss": ptq_loss,
        "test_accuracy": qat_acc, "test_loss": qat_loss,
        "accuracy_note": "int8 accuracies are of the integer arithmetic the C code runs (TFLite Micro's), "
                         "on the whole test split",
        "output_scale": float(out_q.scale), "output_zero_point": out_q.zero_point,
        "model": MODEL_NAME, "int8_tensors": len(net.quants),
    }
    (out_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return QATResult(net, metrics)


def _state_digest(model: nn.Module) -> str:
    """sha256 of a network's parameters and buffers: a checkpoint resumes only the network it started from."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fine_tune(net: QATNetwork, dataset: ArrayDataset, out_dir: Path, config: QATConfig, progress: bool,
               resume: bool, float_digest: str,
               on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> list[dict[str, float]]:
    settings = {"config": asdict(config), "dataset": dataset.name, "train_examples": len(dataset.train_x),
                "steps": [s.op for s in net.steps], "float_model": float_digest}
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    loop = EpochLoop(net, optimizer, config.epochs, num_batches(len(dataset.train_x), config.batch_size),
                     config.grad_clip, progress=progress, label="qat",
                     checkpointing=Checkpointing(out_dir, CHECKPOINT_NAME, settings, LOG_NAME, LOG_FIELDS, resume))
    net.set_observe("ema", enabled=True)

    def step(batch) -> dict[str, float]:
        xb, yb = batch
        logits = net(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        loop.add(loss=float(loss.detach()) * len(yb), correct=int((logits.argmax(1) == yb).sum()), n=len(yb))
        return {"loss": float(loss.detach()), "acc": loop.totals["correct"] / loop.totals["n"]}

    def end_epoch(epoch: int) -> dict[str, float]:
        test_loss, test_acc = evaluate(net, dataset.test_x, dataset.test_y, config.batch_size)
        sums = loop.totals
        return {"train_loss": sums["loss"] / sums["n"], "train_acc": sums["correct"] / sums["n"],
                "test_loss": test_loss, "test_acc": test_acc}

    epoch_batches = (lambda epoch: batches(dataset.train_x, dataset.train_y, config.batch_size,
                                           shuffle_seed=config.seed * 100_003 + epoch + 7))
    return loop.run(epoch_batches, step, end_epoch, on_epoch_end=on_epoch_end)


def load_qat(model: nn.Module, input_shape: tuple[int, ...], out_dir: Path) -> QATNetwork:
    """The int8 network :func:`quantization_aware_train` saved in out_dir (`model`: the float network
    it was made from, which gives its layers), in evaluation mode."""
    net = prepare_qat(copy.deepcopy(model).cpu(), input_shape)
    net.load_state_dict(torch.load(Path(out_dir) / STATE_NAME, map_location="cpu", weights_only=True))
    net.set_observe("frozen", enabled=True)
    return net.eval()
