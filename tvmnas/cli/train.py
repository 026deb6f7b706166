"""`tvmnas train GENOTYPE`: retrain a searched architecture from scratch and export .pt2 / .onnx."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli.app import app


@app.command("train")
def train_command(
    genotype: Path = typer.Argument(..., help="genotype.json written by `tvmnas search`."),
    dataset: str = typer.Option("digits", "--dataset", "-d", help="digits, cifar10, folder, or a data folder."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder for cifar10 / folder data sets."),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Training epochs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumed if it holds a checkpoint)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(0.05, "--lr", help="Initial SGD learning rate (cosine schedule)."),
    limit_train: Optional[int] = typer.Option(None, "--limit-train", help="Use only the first N training images."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from a checkpoint in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Train from scratch; writes model.pt2, model.onnx, metrics.json; prints metrics as JSON."""
    from tvmnas.data import load_dataset
    from tvmnas.search.genotype import Genotype
    from tvmnas.train import TrainConfig, train

    geno = Genotype.load(genotype)
    data = load_dataset(dataset, root=data_root, limit_train=limit_train)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, lr=lr)
    print(f"training {geno} on {data.name} ...", file=sys.stderr)
    result = train(geno, data, out, config, resume=resume, progress=progress)
    metrics = result.metrics
    if not metrics["budget_ok"]:
        print("warning: this architecture is over budget: " + "; ".join(metrics["violations"]), file=sys.stderr)
    print(json.dumps({k: metrics[k] for k in ("test_accuracy", "macs", "params", "param_bytes", "budget_ok",
                                              "violations")} | {"out": str(out)}))
