"""The profile database: measured kernels and candidates in SQLite, keyed so that nothing is measured twice.

A kernel row is keyed by (target, precision, kernel_hash, codegen_version, flags): kernel_hash is the
kernel's identity (passes.kernel_hash: structural hash of its scheduled TIR), precision its number
format ("float32", "int8"), codegen_version covers what turns it into machine code (its C text, the
shared C prelude, compiler version, flags), so a change in code generation re-measures exactly the
kernels whose code changed, and int8 and float32 kernels of one layer never share a row. A candidate
row (one sampled operator, possibly several kernels, e.g. an inverted-residual block) is keyed by
(target, precision, candidate_key, codegen_version, flags) and holds the block total.

Writes are atomic per candidate (its new kernels and its row in one transaction), the journal is
WAL, so a process killed at any moment leaves every finished candidate in place and nothing half
written; a rerun skips what is there.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

from tvmnas.errors import ProfileDatabaseError

SCHEMA_VERSION = 2  # 2: precision in the keys, kernel_hash the TIR structural hash

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
"""


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


_KERNEL_COLUMNS = [f.name for f in fields(KernelRow)]
_CANDIDATE_COLUMNS = [f.name for f in fields(CandidateRow)]


class ProfileDB:
    """An open profile database. One writer at a time; readers never block.

    create: make the database when the file is absent or empty (False: refuse such a file, for
    readers). An existing file that is not a tvmnas profile database (no schema_version in a meta
    table: any other SQLite file) is refused before anything is written to it.
    """

    def __init__(self, path: Path, *, create: bool = True, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        wal = self.path.with_name(self.path.name + "-wal")
        existing = self.path.is_file() and (self.path.stat().st_size > 0 or wal.exists())
        if not existing and not create:
            what = "is empty" if self.path.exists() else "does not exist"
            raise ProfileDatabaseError(f"profile database {self.path} {what}: run `tvmnas profile-ops` to make one")
        try:
            if not existing:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            if existing:
                self._check_version()
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            if not existing:  # the tables and the version that marks the file as ours, in one transaction
                self._conn.executescript(f"BEGIN; {SCHEMA} INSERT OR IGNORE INTO meta VALUES "
                                         f"('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
        except sqlite3.DatabaseError as err:
            raise ProfileDatabaseError(f"profile database {self.path}: {err}") from err

    def _check_version(self) -> None:
        """Refuse a file that is not a tvmnas profile database, or one of another schema version."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = None
        if "meta" in tables:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._conn.close()
            raise ProfileDatabaseError(f"{self.path} is not a tvmnas profile database (it has no schema_version "
                                       f"in a meta table); choose another file")
        if str(row[0]) != str(SCHEMA_VERSION):
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

    def kernel(self, key: KernelKey) -> KernelRow | None:
        """The stored row for `key`, or None when that kernel was never measured with that code."""
        row = self._conn.execute(
            f"SELECT {', '.join(_KERNEL_COLUMNS)} FROM kernels "
            "WHERE target = ? AND precision = ? AND kernel_hash = ? AND codegen_version = ? AND flags = ?",
            (key.target, key.precision, key.kernel_hash, key.codegen_version, key.flags),
        ).fetchone()
        return KernelRow(*row) if row else None

    def has_candidate(self, target: str, precision: str, candidate_key: str, codegen_version: str,
                      flags: str) -> bool:
        """Whether this candidate was recorded in this precision with exactly this code and these flags."""
        row = self._conn.execute(
            "SELECT 1 FROM candidates WHERE target = ? AND precision = ? AND candidate_key = ? "
            "AND codegen_version = ? AND flags = ?",
            (target, precision, candidate_key, codegen_version, flags),
        ).fetchone()
        return row is not None

    def record(self, candidate: CandidateRow, kernels: Iterable[KernelRow]) -> int:
        """Insert a candidate and its newly measured kernels in one transaction; returns kernels added.

        Rows already present are left as they are (first measurement wins), so a replay is harmless;
        any other constraint failure rolls the whole candidate back.
        """
        kernels = list(kernels)
        added = 0
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for k in kernels:
                cur = self._conn.execute(
                    f"INSERT INTO kernels ({', '.join(_KERNEL_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_KERNEL_COLUMNS))}) ON CONFLICT DO NOTHING",
                    tuple(asdict(k).values()),
                )
                added += cur.rowcount
            self._conn.execute(
                f"INSERT INTO candidates ({', '.join(_CANDIDATE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_CANDIDATE_COLUMNS))}) ON CONFLICT DO NOTHING",
                tuple(asdict(candidate).values()),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return added

    def kernels(self, target: str | None = None) -> list[KernelRow]:
        """Every kernel row (of one target), in key order."""
        where, args = ("WHERE target = ?", (target,)) if target else ("", ())
        rows = self._conn.execute(
            f"SELECT {', '.join(_KERNEL_COLUMNS)} FROM kernels {where} "
            "ORDER BY target, precision, kernel_hash, codegen_version, flags",
            args,
        ).fetchall()
        return [KernelRow(*r) for r in rows]

    def candidates(self, target: str | None = None) -> list[CandidateRow]:
        """Every candidate row (of one target), in key order."""
        where, args = ("WHERE target = ?", (target,)) if target else ("", ())
        rows = self._conn.execute(
            f"SELECT {', '.join(_CANDIDATE_COLUMNS)} FROM candidates {where} "
            "ORDER BY target, precision, candidate_key, codegen_version, flags",
            args,
        ).fetchall()
        return [CandidateRow(*r) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(kernel rows, candidate rows)."""
        k = self._conn.execute("SELECT COUNT(*) FROM kernels").fetchone()[0]
        c = self._conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        return int(k), int(c)
