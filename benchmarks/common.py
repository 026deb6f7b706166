"""What every benchmark shares: the commit it measured, writing its own section of RESULTS.md, and
the repository root on the import path (the test zoo, zoo/, is a package of the repository, not of
the installed tvmnas)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))


def git_commit() -> str:
    """Short hash of HEAD, with '+dirty' when the tree has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
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
