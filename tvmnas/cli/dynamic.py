"""`tvmnas dynamic train | select | compile | export`: one weight-shared network, K run-time configurations."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app

dynamic_app = typer.Typer(help="Dynamic networks: train a super-network, pick K sub-networks, compile them "
                               "to one switchable C artifact.", no_args_is_help=True)
app.add_typer(dynamic_app, name="dynamic")


@dynamic_app.command("train")
def train_command(
    dataset: str = options.dataset(),
    data_root: Optional[Path] = options.data_root(),
    epochs: int = options.epochs(),
    out: Path = options.out("Output folder for the super-network."),
    seed: int = options.seed(),
    batch_size: int = options.batch_size(),
    lr: float = typer.Option(0.05, "--lr", help="Initial SGD learning rate (cosine schedule)."),
    random_subnets: int = typer.Option(2, "--random-subnets", help="Random sub-networks per step besides the largest and smallest."),
    holdout: int = typer.Option(300, "--holdout", help="Training examples kept aside for `select`'s accuracy estimate."),
    label_weight: float = typer.Option(0.5, "--label-weight", help="Share of label cross-entropy in the smaller sub-networks' loss (rest: distillation from the largest)."),
    limit_train: Optional[int] = options.limit_train(),
    limit_test: Optional[int] = typer.Option(None, "--limit-test", help="Use only the first N test images."),
    resume: bool = options.resume(),
    progress: bool = options.progress(),
) -> None:
    """Train the super-network (sandwich rule, in-place distillation); prints metrics as JSON."""
    from tvmnas.data import load_dataset
    from tvmnas.dynamic.train import SupernetTrainConfig, train_supernet

    data = load_dataset(dataset, root=data_root, limit_train=limit_train, limit_test=limit_test)
    config = SupernetTrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, lr=lr,
                                 random_subnets=random_subnets, holdout=holdout, label_weight=label_weight)
    source = {"name": dataset, "root": str(data_root) if data_root else None, "limit_train": limit_train,
              "limit_test": limit_test}
    print(f"training a super-network on {data.name} ...", file=sys.stderr)
    _, metrics = train_supernet(data, out, config, progress=progress, data_source=source, resume=resume)
    print(json.dumps({k: metrics[k] for k in ("largest_test_acc", "smallest_test_acc", "train_examples")}
                     | {"out": str(out)}))


@dynamic_app.command("select")
def select_command(
    supernet: Path = typer.Argument(..., help="Super-network folder (`tvmnas dynamic train --out`)."),
    k: int = typer.Option(4, "--k", help="Number of configurations to keep."),
    target: str = options.target(),
    out: Path = options.out("Output folder for the selection: new, empty, or an earlier tvmnas "
                            "selection (then replaced)."),
    candidates: int = typer.Option(24, "--candidates", help="Sub-networks evaluated (smallest, largest, random)."),
    cost_model: str = typer.Option("auto", "--cost-model", help="auto (surrogate if shipped for the target), surrogate, mac."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0,
                                        help="Then train the shared weights this many epochs on the K chosen only."),
    jobs: Optional[int] = options.jobs(help="Sub-networks evaluated at a time (default: 1 with --executor local; "
                                       "every CPU of the cluster with --executor ray)."),
    executor: str = options.executor(),
    ray_address: Optional[str] = options.ray_address(),
) -> None:
    """Pick K sub-networks along the held-out accuracy / cost Pareto front; prints them as JSON."""
    from tvmnas.output_dir import check_out_path

    check_out_path(out, "selection", inputs=[supernet])
    from tvmnas.data import load_dataset
    from tvmnas.dynamic.select import select_subnets
    from tvmnas.dynamic.train import SupernetTrainConfig, load_supernet
    from tvmnas.targets import load_target

    net, metrics = load_supernet(supernet)
    source = metrics.get("data_source") or {"name": metrics.get("dataset", "digits")}
    settings = metrics.get("settings", {})
    root = Path(source["root"]) if source.get("root") else None
    data = load_dataset(source["name"], root=root, limit_train=source.get("limit_train"),
                        limit_test=source.get("limit_test"))
    tgt = load_target(target)
    pool = options.make_fanout_executor(executor, jobs, ray_address)
    print(f"evaluating {candidates} sub-networks for {tgt.name} ...", file=sys.stderr)
    sel = select_subnets(net, data, tgt, out, k=k, candidates=candidates, holdout=settings.get("holdout", 300),
                         seed=settings.get("seed", 0), cost_model=cost_model, finetune_epochs=finetune_epochs,
                         train_config=SupernetTrainConfig(**settings) if settings else None, executor=pool)
    print(json.dumps({"out": str(out), "cost_model": sel["cost_model"], "cost_unit": sel["cost_unit"],
                      "configs": [{"index": c["index"], "holdout_acc": c["holdout_acc"], "cycles": c["cycles"]}
                                  for c in sel["configs"]]}))


@dynamic_app.command("compile")
def compile_command(
    selection: Path = typer.Argument(..., help="Selection folder (`tvmnas dynamic select --out`)."),
    target: Optional[str] = options.target("Target name; default: the selection's target.", default=None),
    out: Path = options.out("Output folder for the C bundle: new, empty, or an earlier tvmnas bundle (then replaced); any other folder is refused."),
    ignore_budget: bool = typer.Option(False, "--ignore-budget", help="Emit even if flash/SRAM exceed the board's budget."),
    optimize: str = typer.Option("size", "--optimize",
                                 help="size (rolled windows, inline padding: the configurations share most kernels) "
                                      "or speed (each configuration's kernels as `tvmnas compile` builds them)."),
    precision: str = typer.Option("float32", "--precision",
                                  help="float32, or int8: the shared weights quantized once, each configuration's "
                                       "BatchNorm and activation scales in its own requantization."),
    calibration: Optional[Path] = typer.Option(None, "--calibration",
                                               help="int8: calibration inputs (.npy, N first); default: the "
                                                    "selection's calibration.npy."),
) -> None:
    """Compile the K configurations into ONE C bundle (shared weights, run-time switch)."""
    from tvmnas.output_dir import check_out_path

    check_out_path(out, inputs=[selection])
    from tvmnas.dynamic.compile import PRECISIONS, check_precision, compile_dynamic
    from tvmnas.errors import TvmnasError
    from tvmnas.dynamic.select import CALIBRATION_FILE, load_selection
    from tvmnas.targets import load_target

    if precision not in PRECISIONS or calibration is not None:
        check_precision(precision, calibration)
    sel = load_selection(selection)
    if precision == "int8" and calibration is None:
        if sel.calibration is None:
            raise TvmnasError(f"{selection} has no {CALIBRATION_FILE} (selected before int8 builds): "
                              "give the calibration input", settings=("calibration",))
        calibration = sel.calibration
    tgt = load_target(target or sel.meta["target"])
    print(f"compiling {len(sel.subnets)} configurations for {tgt.name} ...", file=sys.stderr)
    result = compile_dynamic(
        sel.subnets, sel.shared, sel.spec.input_shape, tgt, out,
        accuracies=[e["holdout_acc"] for e in sel.entries], cycles=[int(e["cycles"]) for e in sel.entries],
        extra_manifest={"cost_unit": sel.meta.get("cost_unit"), "selection": str(selection)},
        ignore_budget=ignore_budget, optimize=optimize, precision=precision, calibration=calibration)
    m = result.manifest
    print(f"wrote {out}: flash {m['flash_bytes']:,} B, arena per config "
          f"{[c['arena_bytes'] for c in m['configs']]}", file=sys.stderr)
    print(json.dumps({k: m[k] for k in ("target", "precision", "arena_bytes", "flash_bytes", "weights_bytes",
                                        "separate_weights_bytes", "inputs", "outputs", "num_configs")}
                     | {"config_arena_bytes": [c["arena_bytes"] for c in m["configs"]]}))


@dynamic_app.command("export")
def export_command(
    selection: Path = typer.Argument(..., help="Selection folder (`tvmnas dynamic select --out`)."),
    config: int = typer.Option(..., "--config", help="Configuration index to export."),
    out: Path = options.out("Output folder for model.pt2 / model.onnx: new, empty, or an "
                            "earlier tvmnas export (then replaced)."),
) -> None:
    """Export one configuration as a standalone .pt2 and .onnx; prints the export summary as JSON."""
    from tvmnas.output_dir import check_out_path

    check_out_path(out, "subnet", inputs=[selection])
    from tvmnas.dynamic.export import export_subnet

    info = export_subnet(selection, config, out)
    print(json.dumps(info | {"out": str(out)}))
