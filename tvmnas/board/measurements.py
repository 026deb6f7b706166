"""Reading what a timing firmware printed: a captured log (UART, RTT or semihosting console) or a CSV.

Log lines (anything before `tvmnas-` on a line, such as a terminal's timestamp, is ignored, and
so are lines without it):

    tvmnas-timing 1 unit=cycles models=M warmup=W runs=R overhead=O
    tvmnas-kernel <model>.<index> <name> <unit> <min> <max> <runs>
    tvmnas-done kernels=N

CSV: a header `id,name,unit,min,max,runs` and one row per kernel with the same fields.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from tvmnas.errors import TvmnasError

UNITS = ("cycles", "instructions")
CSV_HEADER = ["id", "name", "unit", "min", "max", "runs"]
_ID = re.compile(r"^\d+\.\d+$")


class MeasurementsError(TvmnasError):
    """A measurements file is missing, malformed, or does not belong to the calibration set."""


@dataclass(frozen=True)
class Measurement:
    """One kernel's timing: the fastest and slowest of `runs` timed runs, in `unit`."""

    id: str
    name: str
    unit: str
    min: int
    max: int
    runs: int
    line: int  # where it was read (1-based)


def _row(fields: list[str], path: Path, lineno: int) -> Measurement:
    where = f"{path}:{lineno}"
    if len(fields) != 6:
        raise MeasurementsError(f"{where}: malformed measurement line: {len(fields)} fields, expected 6 "
                                f"(id name unit min max runs)")
    kid, name, unit, lo, hi, runs = (f.strip() for f in fields)
    if not _ID.match(kid):
        raise MeasurementsError(f"{where}: malformed measurement line: kernel id '{kid}' is not <model>.<index>")
    if unit not in UNITS:
        raise MeasurementsError(f"{where}: malformed measurement line: unit '{unit}' is not one of {', '.join(UNITS)}")
    try:
        lo_v, hi_v, runs_v = int(lo), int(hi), int(runs)
    except ValueError:
        raise MeasurementsError(f"{where}: malformed measurement line: min, max and runs must be integers "
                                f"(got '{lo}', '{hi}', '{runs}')") from None
    if lo_v <= 0 or hi_v < lo_v or runs_v < 1:
        raise MeasurementsError(f"{where}: malformed measurement line: need 0 < min <= max and runs >= 1 "
                                f"(got {lo_v}, {hi_v}, {runs_v})")
    return Measurement(kid, name, unit, lo_v, hi_v, runs_v, lineno)


def read_measurements(path: Path) -> list[Measurement]:
    """Every kernel measurement in a log or CSV file, in file order (one unit, no id twice)."""
    path = Path(path)
    if not path.is_file():
        raise MeasurementsError(f"measurements file '{path}' does not exist")
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    rows: list[Measurement] = []
    if first.replace(" ", "").lower().startswith("id,name"):
        reader = csv.reader(io.StringIO(text))
        header_seen = False
        for lineno, fields in enumerate(reader, start=1):
            if not any(f.strip() for f in fields):
                continue
            if not header_seen:
                if [f.strip().lower() for f in fields] != CSV_HEADER:
                    raise MeasurementsError(f"{path}:{lineno}: CSV header must be {','.join(CSV_HEADER)}")
                header_seen = True
                continue
            rows.append(_row(fields, path, lineno))
    else:
        for lineno, line in enumerate(lines, start=1):
            at = line.find("tvmnas-kernel")
            if at < 0:
                continue
            fields = line[at:].split()[1:]
            rows.append(_row(fields, path, lineno))
    if not rows:
        raise MeasurementsError(f"measurements file '{path}' has no tvmnas-kernel lines or CSV rows")
    seen: dict[str, int] = {}
    for r in rows:
        if r.id in seen:
            raise MeasurementsError(f"{path}:{r.line}: kernel {r.id} measured twice (first on line {seen[r.id]})")
        seen[r.id] = r.line
        if r.unit != rows[0].unit:
            raise MeasurementsError(f"{path}:{r.line}: unit '{r.unit}' differs from '{rows[0].unit}' on line {rows[0].line}")
    return rows


def write_csv(rows: list[Measurement], path: Path) -> None:
    """The measurements as CSV (the format read_measurements accepts)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in rows:
        w.writerow([r.id, r.name, r.unit, r.min, r.max, r.runs])
    Path(path).write_text(buf.getvalue())


__all__ = ["Measurement", "MeasurementsError", "read_measurements", "write_csv"]
