"""`tvmnas cost fit` (fit a surrogate from profile data) and `tvmnas cost predict` (price a model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app

cost_app = typer.Typer(help="Learned cost models: fit per-target surrogates, predict cycles without the emulator.",
                       no_args_is_help=True)
app.add_typer(cost_app, name="cost")


@cost_app.command("fit")
def fit_command(
    db: Path = typer.Option(..., "--db", help="Profile store: a database (tvmnas profile-ops) or a dump (.jsonl.gz)."),
    target: str = options.target("Target whose measurements to fit.", default=...),
    out: Path = options.out("Surrogate file to write (JSON, gzipped when the name ends in .gz)."),
    precision: str = typer.Option("float32", "--precision",
                                  help="Kernels to fit on: float32, or int8 (the int8 builds of networks "
                                       "collected with precision int8)."),
) -> None:
    """Fit an XGBoost surrogate of log cycles per kernel on the profiled kernels of one target."""
    from tvmnas.cost.collect import load_kernel_rows
    from tvmnas.cost.surrogate import CostSurrogate, check_precision
    from tvmnas.targets import load_target

    check_precision(precision)
    tgt = load_target(target)
    rows = load_kernel_rows(db, tgt.name, precision)
    print(f"fitting {tgt.name} {precision} surrogate on {len(rows)} kernels ...", file=sys.stderr)
    surrogate = CostSurrogate.fit(rows, tgt.name, precision=precision)
    out.parent.mkdir(parents=True, exist_ok=True)
    surrogate.save(out)
    fitted = surrogate.predict([r["features"] for r in rows])
    within = sum(abs(p / r["cycles"] - 1) <= 0.10 for p, r in zip(fitted, rows)) / len(rows)
    print(json.dumps({"target": tgt.name, "precision": precision, "kernels": len(rows), "out": str(out),
                      "train_within_10pct": round(float(within), 4)}))


@cost_app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="Model file: .onnx or a saved torch.export program (.pt2)."),
    target: str = options.target(),
    surrogate: Optional[Path] = typer.Option(None, "--surrogate", help="Surrogate file (default: the shipped one)."),
    optimize: str = typer.Option("speed", "--optimize",
                                 help="Kernels as `tvmnas compile --optimize` builds them: speed or size."),
    precision: Optional[str] = options.price_precision(),
) -> None:
    """Predicted cycles per kernel and in total, as JSON shaped like `tvmnas profile` (no emulator run)."""
    from tvmnas.model_file import check_model_file
    from tvmnas.targets import load_target

    tgt = load_target(target)
    check_model_file(model)
    from tvmnas.cost.predict import predict_model_json
    from tvmnas.cost.surrogate import CostSurrogate, check_precision, load_surrogate

    if precision is not None:
        check_precision(precision)
    model_surrogate = (CostSurrogate.load(surrogate, tgt.name, precision) if surrogate
                       else load_surrogate(tgt.name, precision or "float32"))
    print(f"predicting {model} on {tgt.name} with the {model_surrogate.precision} surrogate ...", file=sys.stderr)
    prediction = predict_model_json(model, model_surrogate, optimize=optimize, precision=precision, simd=tgt.dsp)
    if tgt.calibrated_from and not surrogate:
        prediction["cycles_are"] = f"calibrated from {tgt.calibrated_from}"
    print(json.dumps(prediction))
