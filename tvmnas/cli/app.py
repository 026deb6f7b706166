"""The typer application and the one place that turns a TvmnasError into one line and exit 1."""

from __future__ import annotations

import sys

import typer

from tvmnas.errors import TvmnasError

app = typer.Typer(
    name="tvmnas",
    help="Hardware-aware architecture search and standalone C for Arm Cortex-M.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Entry point: run the CLI, printing project errors as a single line on stderr."""
    import tvmnas.cli  # noqa: F401  (registers every command on `app`)

    try:
        app()
    except TvmnasError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
