"""Options that several commands share, each with its one default, flag names and help text.

A command declares `target: str = options.target()`; a command whose option means something narrower
passes its own help (or default) but keeps the flag names and the shared default.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import typer

from tvmnas.errors import TvmnasError

DEFAULT_TARGET = "cortex-m4"
DEFAULT_SPACE = "chain"  # the space `make demo` searches


def target(help: str = "Target name (see `tvmnas targets`).", default: Any = DEFAULT_TARGET) -> Any:
    """--target / -t (`...` makes it required; None leaves it to the input's target)."""
    return typer.Option(default, "--target", "-t", help=help)


def out(help: str, default: Any = ...) -> Any:
    """--out / -o, required unless a default is given."""
    return typer.Option(default, "--out", "-o", help=help)


# The others: called as options.seed() or options.seed(help="...").
space = partial(typer.Option, DEFAULT_SPACE, "--space",
                help=f"Search space: {DEFAULT_SPACE} (the default, as in `make demo`) or darts.")
seed = partial(typer.Option, 0, "--seed")
dataset = partial(typer.Option, "digits", "--dataset", "-d", help="digits, cifar10, folder, or a data folder.")
data_root = partial(typer.Option, None, "--data-root", help="Folder for cifar10 / folder data sets.")
limit_train = partial(typer.Option, None, "--limit-train", help="Use only the first N training images.")
epochs = partial(typer.Option, 10, "--epochs", "-e", help="Training epochs.")
batch_size = partial(typer.Option, 64, "--batch-size")
resume = partial(typer.Option, True, "--resume/--restart", help="Continue from a checkpoint in --out.")
progress = partial(typer.Option, True, "--progress/--no-progress", help="Progress bar on stderr.")
# Pricing a model (profile, cost predict, profile-ops): as it is, or a float model as its int8 build.
price_precision = partial(typer.Option, None, "--precision",
                          help="int8: price a float model as its int8 build (quantized on random calibration "
                               "data: cycles do not depend on it); float32: refuse a quantized model. "
                               "Default: the model as it is.")

# Commands that fan out (profiling, sweeps): where the work runs and how many tasks at once.
EXECUTORS_HELP = ("local (worker processes on this machine) or ray (a Ray cluster, see --ray-address; "
                  "needs pip install 'tvmnas[ray]').")
EXECUTOR_HELP = "Where the work runs: " + EXECUTORS_HELP
RAY_ADDRESS_HELP = ("Ray cluster to run on (its head's HOST:PORT, or 'auto' on a cluster node); without it, "
                    "--executor ray starts a Ray instance on this machine for the run and stops it after.")
JOBS_HELP = "Tasks at a time (default: 1 with --executor local; every CPU of the cluster with --executor ray)."
executor = partial(typer.Option, "local", "--executor", help=EXECUTOR_HELP)
ray_address = partial(typer.Option, None, "--ray-address", help=RAY_ADDRESS_HELP)
jobs = partial(typer.Option, None, "--jobs", "-j", min=1, help=JOBS_HELP)


def make_fanout_executor(kind: str, jobs: int | None, address: str | None) -> Any:
    """The executor a fan-out command's --executor, --jobs and --ray-address ask for."""
    from tvmnas.executor import make_executor

    return make_executor(kind, jobs if jobs is not None else (0 if kind == "ray" else 1), address)


# How a library error's words for a setting (TvmnasError.settings) read on the command line.
SETTING_FLAGS = {
    "out_dir": ("output folder", "--out"),
    "restart": ("restart", "--restart"),
    "data_root": ("the data root", "--data-root"),
    "ignore_budget": ("the budget override", "--ignore-budget"),
    "config": ("configuration", "--config"),
    "k": ("k", "--k"),
    "import_check": ("import_check=False", "--no-import-check"),
    "executor": ("executor", "--executor"),
    "ray_address": ("Ray address", "--ray-address"),
    "quantize": ("quantize=", "--quantize "),
    "calibration": ("the calibration input", "--calibration"),
    "raw": ("raw input", "--raw"),
    "precision": ("precision", "--precision"),
    "profile_db": ("a profile database path", "--profile-db"),
}


def error_line(err: TvmnasError) -> str:
    """The error's one line as the CLI prints it: the settings it names, named by their flags."""
    text = str(err)
    for setting in getattr(err, "settings", ()):
        words, flag = SETTING_FLAGS.get(setting, (None, None))
        if words is not None:
            text = re.sub(rf"(?<![\w-]){re.escape(words)}(?![\w-])", flag, text)
    return text
