"""tvmnas command line: each module registers its commands on `app`."""

from tvmnas.cli.app import app, main

# Command modules (one per command family); importing registers them.
from tvmnas.cli import compile  # noqa: F401,E402

__all__ = ["app", "main"]
from tvmnas.cli import search  # noqa: F401,E402
from tvmnas.cli import train  # noqa: F401,E402
from tvmnas.cli import run, targets  # noqa: F401,E402
from tvmnas.cli import pipeline  # noqa: F401,E402
from tvmnas.cli import profile  # noqa: F401,E402
from tvmnas.cli import dynamic  # noqa: F401,E402
from tvmnas.cli import cost  # noqa: F401,E402
from tvmnas.cli import board  # noqa: F401,E402
