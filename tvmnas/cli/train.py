"""`tvmnas train GENOTYPE`: retrain a searched architecture from scratch and export .pt2 / .onnx."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app


@app.command("train")
def train_command(
    genotype: Path = typer.Argument(..., help="genotype.json written by `tvmnas search`."),
    dataset: str = options.dataset(),
    data_root: Optional[Path] = options.data_root(),
    epochs: int = options.epochs(),
    out: Path = options.out("Output folder (resumed if it holds a checkpoint)."),
    seed: int = options.seed(),
    batch_size: int = options.batch_size(),
    lr: float = typer.Option(0.05, "--lr", help="Initial SGD learning rate (cosine schedule)."),
    limit_train: Optional[int] = options.limit_train(),
    resume: bool = options.resume(),
    progress: bool = options.progress(),
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
