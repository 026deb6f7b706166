"""What every benchmark shares: the commit it measured and writing its own section of RESULTS.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def git_commit() -> str:
    """Short hash of HEAD, with '+dirty' when the tree has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def replace_section(name: str, body: str, results_md: Path = RESULTS_MD) -> None:
    """Put `body` between `<!-- BEGIN name -->` and `<!-- END name -->`, appending the section if new."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    results_md.write_text(text)
