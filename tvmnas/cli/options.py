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
    "quantize": ("quantize=", "--quantize "),
    "calibration": ("the calibration input", "--calibration"),
    "raw": ("raw input", "--raw"),
}


def error_line(err: TvmnasError) -> str:
    """The error's one line as the CLI prints it: the settings it names, named by their flags."""
    text = str(err)
    for setting in getattr(err, "settings", ()):
        words, flag = SETTING_FLAGS.get(setting, (None, None))
        if words is not None:
            text = re.sub(rf"(?<![\w-]){re.escape(words)}(?![\w-])", flag, text)
    return text
