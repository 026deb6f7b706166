"""The SQLite profile database: keys, first-write-wins replays, atomic candidate writes, schema checks."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from tvmnas.errors import ProfileDatabaseError
from tvmnas.measure.store import CandidateRow, KernelKey, KernelRow, ProfileDB


def kernel(hash_: str, instructions: int = 100, version: str = "v1", precision: str = "float32") -> KernelRow:
    return KernelRow("cortex-m4", precision, hash_, version, "-O3", "k_" + hash_, "conv", "{}", 10, instructions, 2 * instructions, "/* c */")


def candidate(key: str, kernels: list[KernelRow], version: str = "cv1", precision: str = "float32") -> CandidateRow:
    return CandidateRow(
        "cortex-m4", precision, key, version, "-O3", "conv", "{}", "[]",
        sum(k.macs for k in kernels), sum(k.instructions for k in kernels), sum(k.cycles for k in kernels),
    )


def test_rows_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    a, b = kernel("aa"), kernel("bb", 300)
    with ProfileDB(path) as db:
        assert db.record(candidate("c1", [a, b]), [a, b]) == 2
    with ProfileDB(path) as db:
        assert db.kernels() == [a, b]
        assert db.kernel(a.key) == a
        assert db.kernel(KernelKey("cortex-m4", "float32", "aa", "v2", "-O3")) is None
        assert db.has_candidate("cortex-m4", "float32", "c1", "cv1", "-O3")
        assert not db.has_candidate("cortex-m4", "float32", "c1", "cv1", "-O2")
        assert not db.has_candidate("cortex-m4", "int8", "c1", "cv1", "-O3")
        assert db.candidates()[0].instructions == 400
        assert db.counts() == (2, 1)


def test_replaying_a_write_adds_nothing_and_the_first_measurement_wins(tmp_path: Path) -> None:
    a = kernel("aa")
    with ProfileDB(tmp_path / "p.db") as db:
        db.record(candidate("c1", [a]), [a])
        assert db.record(candidate("c1", [a]), [replace(a, instructions=999)]) == 0
        assert db.kernel(a.key).instructions == 100
        assert db.counts() == (1, 1)


def test_a_new_codegen_version_is_a_new_row(tmp_path: Path) -> None:
    with ProfileDB(tmp_path / "p.db") as db:
        db.record(candidate("c1", [kernel("aa")]), [kernel("aa")])
        db.record(candidate("c1", [kernel("aa", 90, "v2")], "cv2"), [kernel("aa", 90, "v2")])
        assert [k.instructions for k in db.kernels()] == [100, 90]
        assert db.counts() == (2, 2)


def test_an_int8_kernel_is_a_new_row_beside_the_float32_one(tmp_path: Path) -> None:
    f32, i8 = kernel("aa"), kernel("aa", 40, precision="int8")
    with ProfileDB(tmp_path / "p.db") as db:
        db.record(candidate("c1", [f32]), [f32])
        assert db.kernel(i8.key) is None
        assert db.record(candidate("c1", [i8], precision="int8"), [i8]) == 1
        assert db.kernel(i8.key).instructions == 40 and db.kernel(f32.key).instructions == 100
        assert db.counts() == (2, 2)


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    good, bad = kernel("aa"), replace(kernel("bb"), instructions=None)  # NOT NULL violated
    with ProfileDB(tmp_path / "p.db") as db:
        with pytest.raises(sqlite3.IntegrityError):
            db.record(candidate("c1", [good]), [good, bad])
        assert db.counts() == (0, 0)
        db.record(candidate("c1", [good]), [good])
        assert db.counts() == (1, 1)


def test_uses_write_ahead_logging(tmp_path: Path) -> None:
    ProfileDB(tmp_path / "p.db").close()
    mode = sqlite3.connect(tmp_path / "p.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_other_schema_version_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    ProfileDB(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ProfileDatabaseError, match=r"schema version 99, this tvmnas reads 3: profile into a new file"):
        ProfileDB(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProfileDatabaseError, match=str(path)):
        ProfileDB(path)
