"""The distribution lists every package that exists in the source tree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "tvmnas").rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject packages: {sorted(on_disk - listed)}"
    assert {"tvmnas.passes", "tvmnas.targets"} <= listed
    assert config["package-dir"] == {"tvmnas": "tvmnas", "tvmnas.passes": "passes", "tvmnas.targets": "targets"}


def test_the_installed_package_never_imports_the_test_zoo() -> None:
    """The test zoo (zoo/) is a package of the repository for tests and benchmarks only."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not [p for p in config["packages"] if p.split(".")[0] == "zoo" or p.endswith(".zoo")]
    zoo_import = re.compile(r"^\s*(from|import)\s+(tvmnas\.)?zoo\b", re.M)
    sources = [p for folder in ("tvmnas", "passes", "targets") for p in (ROOT / folder).rglob("*.py")]
    importers = sorted(str(p.relative_to(ROOT)) for p in sources if zoo_import.search(p.read_text()))
    assert not importers, f"the installed package imports the test zoo: {importers}"
