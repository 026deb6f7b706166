"""`python -m tvmnas` is the `tvmnas` command."""

from tvmnas.cli import main

main()
