"""Shared CLI options: one default per setting across commands, and library errors that speak of
settings in words, which the CLI names by their flags."""

from __future__ import annotations

import pytest
import typer.main

from tvmnas.cli import app
from tvmnas.cli.options import DEFAULT_SPACE, DEFAULT_TARGET, error_line
from tvmnas.data import load_dataset
from tvmnas.errors import BudgetExceededError, DatasetError
from tvmnas.output_dir import OutputFolderError


def _options(command, path: str = ""):
    """(command path, option) for every option of every command under `command`."""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, f"{path} {name}")
    for param in command.params:
        if param.param_type_name == "option":
            yield path.strip(), param


def test_every_command_has_the_same_default_target_and_space():
    defaults: dict[str, set] = {"--target": set(), "--space": set(), "--seed": set(), "--dataset": set()}
    for command, param in _options(typer.main.get_command(app)):
        flag = param.opts[0]
        if flag in defaults and not param.required and param.default is not None:
            defaults[flag].add(param.default)
    assert defaults == {"--target": {DEFAULT_TARGET}, "--space": {DEFAULT_SPACE}, "--seed": {0}, "--dataset": {"digits"}}
    assert DEFAULT_SPACE == "chain"  # the space `make demo` (scripts/search_and_compile.py) searches


@pytest.mark.parametrize("error, cli_line", [
    (OutputFolderError("output folder /x: /y is not writable; choose another output folder"),
     "--out /x: /y is not writable; choose another --out"),
    (BudgetExceededError("flash", 2048, 1024, "cortex-m0"),
     "flash needs 2,048 bytes but target 'cortex-m0' has 1,024 bytes (pass --ignore-budget to compile anyway)"),
])
def test_the_cli_names_the_settings_of_a_library_error_by_their_flags(error, cli_line):
    assert "--" not in str(error)
    assert error_line(error) == cli_line


def test_library_errors_name_no_flag():
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10")
    assert "--" not in str(err.value)
    assert error_line(err.value) == "dataset 'cifar10' needs a data folder (--data-root)"
