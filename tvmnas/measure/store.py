"""The profile store: measured kernels, sampled candidates, whole profiled networks and kernel
features, in SQLite, keyed so that nothing is measured twice; shipped as a sorted text dump.

A kernel row is keyed by (target, precision, kernel_hash, codegen_version, flags): kernel_hash is the
kernel's identity (passes.kernel_hash: structural hash of its scheduled TIR), precision its number
format ("float32", "int8"), codegen_version covers what turns it into machine code (its C text, the
shared C prelude, compiler version, flags), so a change in code generation re-measures exactly the
kernels whose code changed, and int8 and float32 kernels of one layer never share a row. A candidate
row (one sampled operator, possibly several kernels, e.g. an inverted-residual block) is keyed by
(target, precision, candidate_key, codegen_version, flags) and holds the block total. A network row
(one whole network profiled on one target, cost.collect) is keyed by (target, precision, name) and
keeps its calls in order with each call's own measurement. A feature row holds what the cost models
read from a kernel's TIR (passes.kernel_features, MACs), keyed by (precision, kernel_hash): the same
for every target, computed once where the TIR is at hand.

Writes are atomic per candidate and per network (its new features and rows in one transaction), the
journal is WAL, so a process killed at any moment leaves every finished one in place and nothing half
written; a rerun skips what is there. `dump` writes every row as sorted JSON lines, gzipped (same
data, same bytes): the form the package ships; `load_dump` reads one into a database.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from tvmnas.cost.gzip_text import gzip_bytes, read_text, replace_bytes
from tvmnas.errors import ProfileDatabaseError

SCHEMA_VERSION = 3  # 3: kernel features and whole networks; 2: precision in the keys, TIR-hash identity
DUMP_FORMAT = "tvmnas-profile-db"
CANDIDATE_SPLIT = "fit"  # kernels measured for sampled candidates are fit data

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kernels (
    target TEXT NOT NULL,
    precision TEXT NOT NULL,
    kernel_hash TEXT NOT NULL,
    codegen_version TEXT NOT NULL,
    flags TEXT NOT NULL,
    kernel_name TEXT NOT NULL,
    op TEXT NOT NULL,
    params TEXT NOT NULL,
    macs INTEGER NOT NULL,
    instructions INTEGER NOT NULL,
    cycles INTEGER NOT NULL,
    c_text TEXT NOT NULL,
    PRIMARY KEY (target, precision, kernel_hash, codegen_version, flags)
);
CREATE TABLE IF NOT EXISTS candidates (
    target TEXT NOT NULL,
    precision TEXT NOT NULL,
    candidate_key TEXT NOT NULL,
    codegen_version TEXT NOT NULL,
    flags TEXT NOT NULL,
    op TEXT NOT NULL,
    params TEXT NOT NULL,
    kernels TEXT NOT NULL,
    macs INTEGER NOT NULL,
    instructions INTEGER NOT NULL,
    cycles INTEGER NOT NULL,
    PRIMARY KEY (target, precision, candidate_key, codegen_version, flags)
);
CREATE TABLE IF NOT EXISTS features (
    precision TEXT NOT NULL,
    kernel_hash TEXT NOT NULL,
    macs INTEGER NOT NULL,
    features TEXT NOT NULL,
    PRIMARY KEY (precision, kernel_hash)
);
CREATE TABLE IF NOT EXISTS networks (
    target TEXT NOT NULL,
    precision TEXT NOT NULL,
    name TEXT NOT NULL,
    split TEXT NOT NULL,
    seed INTEGER NOT NULL,
    genotype TEXT NOT NULL,
    instructions INTEGER NOT NULL,
    cycles INTEGER NOT NULL,
    preamble_cycles INTEGER NOT NULL,
    calls TEXT NOT NULL,
    PRIMARY KEY (target, precision, name)
);
"""


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON: the text the store keeps for structured columns (same value, same text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class KernelKey:
    """What identifies one measurement of one kernel."""

    target: str
    precision: str
    kernel_hash: str
    codegen_version: str
    flags: str


@dataclass(frozen=True)
class KernelRow:
    """One measured kernel: exact instructions and estimated cycles, with the candidate that first needed it."""

    target: str
    precision: str
    kernel_hash: str
    codegen_version: str
    flags: str
    kernel_name: str
    op: str
    params: str
    macs: int
    instructions: int
    cycles: int
    c_text: str

    @property
    def key(self) -> KernelKey:
        return KernelKey(self.target, self.precision, self.kernel_hash, self.codegen_version, self.flags)


@dataclass(frozen=True)
class CandidateRow:
    """One sampled operator: its kernels ([index, name, kernel_hash] in call order) and their totals."""

    target: str
    precision: str
    candidate_key: str
    codegen_version: str
    flags: str
    op: str
    params: str
    kernels: str
    macs: int
    instructions: int
    cycles: int

    @property
    def kernel_list(self) -> list[list]:
        return json.loads(self.kernels)


@dataclass(frozen=True)
class FeatureRow:
    """What the cost models read from one kernel's TIR: MACs and passes.kernel_features (canonical JSON)."""

    precision: str
    kernel_hash: str
    macs: int
    features: str


@dataclass(frozen=True)
class NetworkRow:
    """One whole network profiled on one target: its totals and its calls in order, each
    [kernel name, kernel_hash, instructions, cycles]; seed: its weights' seed and its place in the
    collection (networks are read in seed order)."""

    target: str
    precision: str
    name: str
    split: str
    seed: int
    genotype: str
    instructions: int
    cycles: int
    preamble_cycles: int
    calls: str

    @property
    def call_list(self) -> list[list]:
        return json.loads(self.calls)


ROW_TYPES = {"kernels": KernelRow, "candidates": CandidateRow, "features": FeatureRow, "networks": NetworkRow}
_KEYS = {"kernels": ("target", "precision", "kernel_hash", "codegen_version", "flags"),
         "candidates": ("target", "precision", "candidate_key", "codegen_version", "flags"),
         "features": ("precision", "kernel_hash"), "networks": ("target", "precision", "name")}


def _columns(table: str) -> list[str]:
    return [f.name for f in fields(ROW_TYPES[table])]


def _insert(table: str, replace: bool = False) -> str:
    cols = _columns(table)
    return (f"INSERT {'OR REPLACE ' if replace else ''}INTO {table} ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' * len(cols))}){'' if replace else ' ON CONFLICT DO NOTHING'}")


def fit_rows(calls: Iterable[list], features: dict[str, FeatureRow]) -> list[dict[str, Any]]:
    """One fit row per distinct kernel of `calls` ([name, kernel_hash, instructions, cycles]) that has
    features: hash, name, features, macs, and the instructions and cycles of its first call; by hash."""
    rows: dict[str, dict[str, Any]] = {}
    for name, h, instructions, cycles in calls:
        if h not in rows and h in features:
            rows[h] = {"hash": h, "name": name, "features": json.loads(features[h].features),
                       "macs": features[h].macs, "instructions": instructions, "cycles": cycles}
    return [rows[h] for h in sorted(rows)]


class ProfileDB:
    """An open profile database. One writer at a time; readers never block.

    create: make the database when the file is absent or empty (False: refuse such a file, for
    readers). An existing file that is not a tvmnas profile database (no schema_version in a meta
    table: any other SQLite file) is refused before anything is written to it; one of schema
    version 2 gains the features and networks tables in place (its rows are kept). path ":memory:":
    a database in memory (load_dump fills one).
    """

    def __init__(self, path: Path | str, *, create: bool = True, timeout_s: float = 60.0) -> None:
        memory = str(path) == ":memory:"
        self.path = Path(path)
        wal = self.path.with_name(self.path.name + "-wal")
        existing = not memory and self.path.is_file() and (self.path.stat().st_size > 0 or wal.exists())
        if not existing and not create:
            what = "is empty" if self.path.exists() else "does not exist"
            raise ProfileDatabaseError(f"profile database {self.path} {what}: run `tvmnas profile-ops` to make one")
        try:
            if not existing and not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
            if existing:
                self._check_version()
            if not memory:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            if not existing:  # the tables and the version that marks the file as ours, in one transaction
                self._conn.executescript(f"BEGIN; {SCHEMA} INSERT OR IGNORE INTO meta VALUES "
                                         f"('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
        except sqlite3.DatabaseError as err:
            raise ProfileDatabaseError(f"profile database {self.path}: {err}") from err

    def _check_version(self) -> None:
        """Refuse a file that is not a tvmnas profile database or of an unknown schema version;
        bring one of version 2 to this version (new tables, every row kept)."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = None
        if "meta" in tables:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._conn.close()
            raise ProfileDatabaseError(f"{self.path} is not a tvmnas profile database (it has no schema_version "
                                       f"in a meta table); choose another file")
        if str(row[0]) == "2":
            self._conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} UPDATE meta SET value = '{SCHEMA_VERSION}' "
                                     f"WHERE key = 'schema_version'; COMMIT;")
        elif str(row[0]) != str(SCHEMA_VERSION):
            self._conn.close()
            raise ProfileDatabaseError(
                f"profile database {self.path} has schema version {row[0]}, this tvmnas reads {SCHEMA_VERSION}: "
                f"profile into a new file"
            )

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self._conn.close()

    def __enter__(self) -> "ProfileDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _write(self, rows: Iterable[tuple[str, Any]], replace: bool = False) -> int:
        """Insert (table, row) pairs in one transaction; rows already present are left as they are
        (first measurement wins, so a replay is harmless) or, with `replace`, replaced. Returns the
        kernel rows added."""
        added = 0
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for table, row in rows:
                cur = self._conn.execute(_insert(table, replace), astuple(row))
                added += cur.rowcount if table == "kernels" else 0
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return added

    def record(self, candidate: CandidateRow, kernels: Iterable[KernelRow],
               features: Iterable[FeatureRow] = ()) -> int:
        """Insert a candidate, its newly measured kernels and their features in one transaction;
        returns kernels added. Any constraint failure rolls the whole candidate back."""
        return self._write([*(("features", f) for f in features), *(("kernels", k) for k in kernels),
                            ("candidates", candidate)])

    def record_network(self, networks: Iterable[NetworkRow], features: Iterable[FeatureRow]) -> None:
        """Insert one network's rows (one per target) and its kernels' features in one transaction."""
        self._write([*(("features", f) for f in features), *(("networks", n) for n in networks)])

    def set_features(self, features: Iterable[FeatureRow]) -> None:
        """Replace the features of these kernels (recomputed after a change to kernel_features)."""
        self._write([("features", f) for f in features], replace=True)

    # ------------------------------------------------------------------ reading

    def _select(self, table: str, where: dict[str, Any] | None = None, order: tuple[str, ...] = ()) -> list:
        """Rows of `table` matching `where` (column: value; None values ignored), in `order` (default: key order)."""
        conds = {k: v for k, v in (where or {}).items() if v is not None}
        clause = f"WHERE {' AND '.join(f'{k} = ?' for k in conds)}" if conds else ""
        rows = self._conn.execute(f"SELECT {', '.join(_columns(table))} FROM {table} {clause} "
                                  f"ORDER BY {', '.join(order or _KEYS[table])}", tuple(conds.values())).fetchall()
        return [ROW_TYPES[table](*r) for r in rows]

    def kernel(self, key: KernelKey) -> KernelRow | None:
        """The stored row for `key`, or None when that kernel was never measured with that code."""
        rows = self._select("kernels", asdict(key))
        return rows[0] if rows else None

    def has_candidate(self, target: str, precision: str, candidate_key: str, codegen_version: str,
                      flags: str) -> bool:
        """Whether this candidate was recorded in this precision with exactly this code and these flags."""
        return bool(self._select("candidates", {"target": target, "precision": precision, "candidate_key": candidate_key,
                                                "codegen_version": codegen_version, "flags": flags}))

    def kernels(self, target: str | None = None) -> list[KernelRow]:
        """Every kernel row (of one target), in key order."""
        return self._select("kernels", {"target": target})

    def candidates(self, target: str | None = None) -> list[CandidateRow]:
        """Every candidate row (of one target), in key order."""
        return self._select("candidates", {"target": target})

    def features(self, precision: str) -> dict[str, FeatureRow]:
        """Feature rows of `precision` by kernel_hash."""
        return {f.kernel_hash: f for f in self._select("features", {"precision": precision})}

    def networks(self, target: str | None = None, precision: str | None = None,
                 split: str | None = None, name: str | None = None) -> list[NetworkRow]:
        """Network rows (of one target, precision, split, name), in collection order (seed, then name, then target)."""
        return self._select("networks", {"target": target, "precision": precision, "split": split, "name": name},
                            order=("seed", "name", "target"))

    def targets(self, precision: str) -> list[str]:
        """Targets that at least one network of `precision` was profiled on."""
        return sorted({n.target for n in self.networks(precision=precision)})

    def kernel_rows(self, target: str, precision: str, split: str | None = None) -> list[dict[str, Any]]:
        """Fit rows (fit_rows) of the kernels measured on `target` in `precision`: those called by
        the networks of `split` (None: all), in collection order, then with split None or
        CANDIDATE_SPLIT those measured for sampled candidates, in key order."""
        calls = [c for n in self.networks(target, precision, split) for c in n.call_list]
        if split in (None, CANDIDATE_SPLIT):
            calls += [[k.kernel_name, k.kernel_hash, k.instructions, k.cycles]
                      for k in self._select("kernels", {"target": target, "precision": precision})]
        return fit_rows(calls, self.features(precision))

    def counts(self) -> tuple[int, int]:
        """(kernel rows, candidate rows)."""
        k = self._conn.execute("SELECT COUNT(*) FROM kernels").fetchone()[0]
        c = self._conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        return int(k), int(c)

    # ------------------------------------------------------------------ the text form

    def dump(self, path: Path) -> None:
        """Write every row as JSON lines (a header, then each table in key order), gzipped with no
        name or time stamp, through `<path>.partial` and a rename: same rows, same bytes."""
        lines = [canonical_json({"format": DUMP_FORMAT, "schema_version": SCHEMA_VERSION})]
        for table in ROW_TYPES:
            lines += [canonical_json({"table": table, **asdict(r)}) for r in self._select(table)]
        replace_bytes(Path(path), gzip_bytes("\n".join(lines) + "\n"))


def load_dump(dump: Path, into: Path | str = ":memory:") -> ProfileDB:
    """A database (`into`: a new file, or in memory) holding the rows of a dump written by ProfileDB.dump."""
    dump = Path(dump)
    if not dump.is_file():
        raise ProfileDatabaseError(f"profile dump {dump} does not exist")
    try:
        lines = read_text(dump).splitlines()
        header = json.loads(lines[0]) if lines else None
    except ValueError as err:
        raise ProfileDatabaseError(f"profile dump {dump} is not gzipped JSON lines: {err}") from err
    if not isinstance(header, dict) or header.get("format") != DUMP_FORMAT:
        raise ProfileDatabaseError(f"{dump} is not a tvmnas profile dump (its first line is not a {DUMP_FORMAT} header)")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise ProfileDatabaseError(f"profile dump {dump} has schema version {header.get('schema_version')}, "
                                   f"this tvmnas reads {SCHEMA_VERSION}")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        try:
            doc = json.loads(line)
            table = doc.pop("table")
            rows.append((table, ROW_TYPES[table](**doc)))
        except (ValueError, KeyError, TypeError) as err:
            raise ProfileDatabaseError(f"profile dump {dump}, line {n}: not a row of the profile store ({err})") from err
    db = ProfileDB(into)
    db._write(rows)
    return db


def open_profiles(path: Path) -> ProfileDB:
    """A profile store to read: a dump (gzip, loaded in memory) or a database file (opened in place)."""
    path = Path(path)
    if not path.is_file():
        raise ProfileDatabaseError(f"profile store {path} does not exist")
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return load_dump(path) if gzipped else ProfileDB(path, create=False)
