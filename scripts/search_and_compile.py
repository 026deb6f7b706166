#!/usr/bin/env python3
"""The end-to-end job: search, retrain, compile to C, verify on QEMU, report (same as `tvmnas run-all`).

    python scripts/search_and_compile.py --out out/demo        # defaults: digits, cortex-m4, chain space
    python scripts/search_and_compile.py --help
"""

from __future__ import annotations

import sys

import typer

from tvmnas.cli.app import stop_cleanly_on_sigterm
from tvmnas.cli.pipeline import run_all_command
from tvmnas.errors import TvmnasError


def main() -> None:
    """Run the job with this script's arguments; a project error prints as one line and exits 1."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(run_all_command)
    stop_cleanly_on_sigterm()
    try:
        app(prog_name="search_and_compile.py")
    except TvmnasError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
