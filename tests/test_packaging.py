"""The distribution lists every package that exists in the source tree."""

from __future__ import annotations

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
