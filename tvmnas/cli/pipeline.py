"""`tvmnas run-all`: the end-to-end job (search, retrain, compile, verify on QEMU, report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app
from tvmnas.errors import TvmnasError


def parse_lambdas(text: str) -> tuple[float, ...]:
    """'0,0.5,2' -> (0.0, 0.5, 2.0); empty text -> ()."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise TvmnasError(f"--sweep '{text}' is not a comma-separated list of numbers") from err


def run_all_command(
    out: Path = options.out("Output folder: new, empty, or an earlier run-all folder (a rerun resumes it); "
                            "any other folder is refused.", default=Path("out/demo")),
    dataset: str = options.dataset(),
    data_root: Optional[Path] = options.data_root(),
    limit_train: Optional[int] = options.limit_train(),
    target: str = options.target(),
    space: str = options.space(),
    cost_weight: float = typer.Option(0.5, "--cost-weight", "-l", help="lambda: weight of the hardware cost."),
    sweep: str = typer.Option("", "--sweep", help="Sweep these lambdas (e.g. 0,0.5,2) and deploy a Pareto point."),
    accuracy_drop: float = typer.Option(0.01, "--accuracy-drop",
                                        help="Sweep: deploy the fastest front point within this of the best."),
    cost_model: str = typer.Option("auto", "--cost-model", help="auto (learned for the target if any), mac, or measured (every candidate layer measured on the "
                                          "emulator in --precision, kept in OUT/work/profiles.sqlite)."),
    search_epochs: int = typer.Option(10, "--search-epochs", help="Search epochs."),
    train_epochs: int = typer.Option(20, "--train-epochs", help="Retraining epochs."),
    budget_cycles: Optional[float] = typer.Option(None, "--budget-cycles", help="Cycle budget (cost model units)."),
    board_budgets: bool = typer.Option(True, "--board-budgets/--no-board-budgets",
                                       help="Search within the board's flash and SRAM."),
    ignore_budget: bool = typer.Option(False, "--ignore-budget", help="Compile even if over the board's budget."),
    verify_images: int = typer.Option(256, "--verify-images", help="Held-out images to compare on QEMU."),
    precision: str = typer.Option("float32", "--precision",
                                  help="float32, or int8: quantization-aware training, integer-only C, int8 budgets, "
                                       "and the float32 build profiled beside it."),
    qat_epochs: int = typer.Option(4, "--qat-epochs", help="int8: quantization-aware training epochs after retraining."),
    seed: int = options.seed(help="Same seed, same result."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (0 = torch's default; small images gain nothing from more)."),
    restart: bool = typer.Option(False, "--restart", help="Clear the output folder's work/ and start over."),
    progress: bool = options.progress(help="Progress on stderr."),
    jobs: Optional[int] = options.jobs(help="Sweep: lambdas at a time (default: 1 with --executor local; every "
                                       "CPU of the cluster with --executor ray)."),
    executor: str = options.executor(help="Where the sweep's lambdas run: " + options.EXECUTORS_HELP),
    ray_address: Optional[str] = options.ray_address(),
) -> None:
    """Search, retrain, compile to C, verify on QEMU against PyTorch, and write report.md/.html to --out."""
    import torch

    from tvmnas.pipeline import PipelineSettings, run_pipeline

    if threads > 0:
        torch.set_num_threads(threads)
    settings = PipelineSettings(
        dataset=dataset, data_root=data_root, limit_train=limit_train, target=target, space=space,
        cost_weight=cost_weight, sweep=parse_lambdas(sweep), sweep_accuracy_drop=accuracy_drop,
        cost_model=cost_model, search_epochs=search_epochs, train_epochs=train_epochs, seed=seed,
        board_budgets=board_budgets, budget_cycles=budget_cycles, verify_images=verify_images,
        ignore_budget=ignore_budget, precision=precision, qat_epochs=qat_epochs,
    )
    pool = options.make_fanout_executor(executor, jobs, ray_address) if settings.sweep else None
    result = run_pipeline(out, settings, restart=restart, progress=progress, executor=pool)
    s = result.summary
    print(f"report: {out / 'report.html'}", file=sys.stderr)
    print(json.dumps({
        "out": str(out), "report": str(out / "report.html"), "genotype": s["search"]["genotype"],
        "precision": s["precision"], "test_accuracy": s["test_accuracy"],
        "float32_test_accuracy": s["train"]["metrics"]["test_accuracy"], "instructions": s["profile"]["instructions"],
        "cycles": s["profile"]["cycles"], "cycles_are": "estimate", "latency_s": s["profile"]["latency_s"],
        "flash_bytes": s["build"]["memory"]["flash_bytes"], "sram_bytes": s["build"]["memory"]["sram_bytes"],
        "verified": s["verify"]["passed"], "cost_model": s["cost_model"],
    }))


app.command("run-all")(run_all_command)
