"""`tvmnas search`: DEff-ARTS over the darts or chain space, writing genotype.json and search logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app
from tvmnas.errors import BudgetViolationError, TvmnasError


def parse_chain_layers(text: str) -> tuple[tuple[int, int], ...]:
    """'8:1,16:2,16:1' -> ((8, 1), (16, 2), (16, 1)): out_channels:stride per chain layer."""
    try:
        layers = tuple(
            (int(c), int(s)) for c, s in (item.split(":") for item in text.split(",") if item.strip())
        )
    except ValueError as err:
        raise TvmnasError(f"--chain-layers '{text}' is not a list of out_channels:stride pairs") from err
    if not layers or any(c < 1 or s not in (1, 2) for c, s in layers):
        raise TvmnasError(f"--chain-layers '{text}' needs channels >= 1 and stride 1 or 2 in every pair")
    return layers


@app.command("search")
def search_command(
    dataset: str = options.dataset(),
    data_root: Optional[Path] = options.data_root(),
    space: str = options.space(),
    target: str = options.target(),
    cost_weight: float = typer.Option(0.0, "--cost-weight", "-l", help="lambda: weight of the normalised cost."),
    budget_cycles: Optional[float] = typer.Option(None, "--budget-cycles", help="Cycle budget (cost model units)."),
    budget_flash: Optional[int] = typer.Option(None, "--budget-flash", help="Parameter-bytes budget."),
    budget_sram: Optional[int] = typer.Option(None, "--budget-sram", help="Peak activation-bytes budget."),
    board_budgets: bool = typer.Option(False, "--board-budgets", help="Use the target board's flash/SRAM as budgets."),
    cost_model_name: str = typer.Option(
        "auto", "--cost-model",
        help="auto: the learned (distilled) cost for the target when shipped, else MACs; mac: MAC count; "
             "measured: every candidate layer measured on the emulator in --precision (kept in --profile-db)."),
    precision: str = typer.Option("float32", "--precision",
                                  help="The precision the measured cost model prices layers in: float32 or int8."),
    profile_db: Optional[Path] = typer.Option(
        None, "--profile-db", help="Profile database of the measured cost model (default: OUT/profiles.sqlite; "
                                   "a rerun reuses its measurements)."),
    w_cycles: float = typer.Option(1.0, "--w-cycles", help="Weight of cycles inside the cost."),
    w_flash: float = typer.Option(0.0, "--w-flash", help="Weight of parameter bytes inside the cost."),
    w_sram: float = typer.Option(0.0, "--w-sram", help="Weight of peak activation bytes inside the cost."),
    epochs: int = options.epochs(help="Search epochs."),
    out: Path = options.out("Output folder (resumed if it holds a checkpoint)."),
    seed: int = options.seed(help="Seed: same seed, same result."),
    batch_size: int = options.batch_size(),
    channels: int = typer.Option(8, "--channels", help="darts: initial channels C."),
    cells: int = typer.Option(3, "--cells", help="darts: number of cells."),
    nodes: int = typer.Option(2, "--nodes", help="darts: intermediate nodes per cell."),
    partial_channels: int = typer.Option(1, "--partial-channels", help="darts: PC-DARTS k (1 = off)."),
    chain_layers: str = typer.Option("8:1,16:2,16:1,16:1", "--chain-layers", help="chain: out_channels:stride list."),
    stem_channels: int = typer.Option(8, "--stem-channels", help="chain: stem width."),
    width_mult: float = typer.Option(1.0, "--width-mult", help="chain: width multiplier."),
    second_order: bool = typer.Option(False, "--second-order", help="Unrolled (second-order) alpha gradient."),
    gumbel: bool = typer.Option(False, "--gumbel", help="Gumbel-softmax sampling of the mixing weights."),
    limit_train: Optional[int] = options.limit_train(),
    resume: bool = options.resume(),
    progress: bool = options.progress(),
) -> None:
    """Search an architecture with loss = CE + lambda * cost; print a JSON summary, exit 1 if over budget."""
    from tvmnas.data import load_dataset
    from tvmnas.pipeline import search_cost_model
    from tvmnas.search.cost import Budgets, CostWeights
    from tvmnas.search.search import SearchConfig, search
    from tvmnas.targets import load_target

    tgt = load_target(target)
    if board_budgets:
        budget_flash = budget_flash if budget_flash is not None else tgt.flash_bytes
        budget_sram = budget_sram if budget_sram is not None else tgt.sram_bytes
    try:
        config = SearchConfig(
            space=space, target=tgt.name, epochs=epochs, batch_size=batch_size, seed=seed, cost_weight=cost_weight,
            cost_weights=CostWeights(w_cycles, w_flash, w_sram),
            budgets=Budgets(budget_cycles, budget_flash, budget_sram),
            channels=channels, cells=cells, nodes=nodes, partial_channels=partial_channels,
            chain_layers=parse_chain_layers(chain_layers), stem_channels=stem_channels, width_mult=width_mult,
            second_order=second_order, gumbel=gumbel,
        )
    except ValueError as err:
        raise TvmnasError(str(err)) from err
    data = load_dataset(dataset, root=data_root, limit_train=limit_train)
    print(f"searching {space} on {data.name} {data.input_shape} for {tgt.name}, lambda={cost_weight} ...",
          file=sys.stderr)
    cost_model, cost_note = search_cost_model(cost_model_name, tgt, precision=precision,
                                              db_path=profile_db if profile_db is not None else out / "profiles.sqlite")
    print(f"cost: {cost_note}", file=sys.stderr)
    result = search(data, out, config, cost_model=cost_model, resume=resume, progress=progress)
    print(f"{result.genotype}", file=sys.stderr)
    summary = {
        "genotype": str(out / "genotype.json"), "cost_unit": result.cost_unit,
        "cycles": result.cost.cycles, "param_bytes": result.cost.param_bytes,
        "peak_act_bytes": result.cost.peak_act_bytes, "search_val_accuracy": result.val_accuracy,
        "budget_ok": result.within_budget, "violations": result.violations,
    }
    print(json.dumps(summary))
    if result.violations:
        raise BudgetViolationError(result.violations)


@app.command("sweep")
def sweep_command(
    cost_weights: str = typer.Option("0,0.5,2", "--cost-weights", help="Comma-separated lambdas."),
    dataset: str = options.dataset(),
    data_root: Optional[Path] = options.data_root(),
    space: str = options.space(),
    target: str = options.target("Target to measure on."),
    search_epochs: int = typer.Option(5, "--search-epochs"),
    train_epochs: int = typer.Option(5, "--train-epochs"),
    out: Path = options.out("Output folder: one sub-folder per lambda, pareto.json/png."),
    seed: int = options.seed(),
    limit_train: Optional[int] = options.limit_train(),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Compile and time each model on the emulator."),
    progress: bool = options.progress(help="Progress bars on stderr."),
    jobs: Optional[int] = options.jobs(help="Lambdas at a time (default: 1 with --executor local; every CPU "
                                       "of the cluster with --executor ray)."),
    executor: str = options.executor(),
    ray_address: Optional[str] = options.ray_address(),
) -> None:
    """Search + retrain for each lambda; Pareto front of accuracy vs cycles on the target, with a plot."""
    from tvmnas.data import load_dataset
    from tvmnas.search.search import SearchConfig
    from tvmnas.search.sweep import pareto_front, sweep
    from tvmnas.targets import load_target
    from tvmnas.train import TrainConfig

    tgt = load_target(target)
    try:
        lambdas = [float(v) for v in cost_weights.split(",") if v.strip()]
        search_config = SearchConfig(space=space, target=tgt.name, epochs=search_epochs, seed=seed)
        train_config = TrainConfig(epochs=train_epochs, seed=seed)
    except ValueError as err:
        raise TvmnasError(f"bad sweep setting: {err}") from err
    if not lambdas:
        raise TvmnasError("--cost-weights needs at least one value")
    data = load_dataset(dataset, root=data_root, limit_train=limit_train)
    pool = options.make_fanout_executor(executor, jobs, ray_address)
    points = sweep(data, out, lambdas, search_config, train_config, measure=measure, progress=progress,
                   executor=pool)
    front = pareto_front(points)
    print(f"wrote {out / 'pareto.json'} and {out / 'pareto.png'}", file=sys.stderr)
    print(json.dumps({"front": [{"cost_weight": points[i].cost_weight, "test_accuracy": points[i].test_accuracy,
                                 "cycles": points[i].cycles} for i in front],
                      "cycles_are": points[0].cycles_source}))
