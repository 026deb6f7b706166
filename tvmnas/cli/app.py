"""The typer application and the one place that turns a TvmnasError into one line and exit 1."""

from __future__ import annotations

import signal
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


class Terminated(SystemExit):
    """SIGTERM, raised where the program is, so cleanups run as for any error (staging folders
    removed, child tools killed) before exiting 128 + 15 like a process the signal ended."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated(128 + signum)


def stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise Terminated in the main thread instead of ending the process on the spot."""
    signal.signal(signal.SIGTERM, _terminate)


def main() -> None:
    """Entry point: run the CLI, printing project errors as a single line on stderr."""
    import tvmnas.cli  # noqa: F401  (registers every command on `app`)

    stop_cleanly_on_sigterm()
    try:
        app()
    except TvmnasError as err:
        from tvmnas.cli.options import error_line

        print(f"error: {error_line(err)}", file=sys.stderr)
        sys.exit(1)
    except Terminated:
        print("error: stopped by SIGTERM", file=sys.stderr)
        raise
