"""Whole networks in the profile store: fit rows, resumable and parallel collection, features
recorded where the TIR is at hand, and the shipped dumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvmnas.cost.collect import load_kernel_rows
from tvmnas.cost.networks import interleave, random_genotypes
from tvmnas.errors import CostModelError, ProfileDatabaseError
from tvmnas.measure.store import FeatureRow, NetworkRow, ProfileDB, canonical_json
from tvmnas.passes import FEATURE_NAMES


def network(name: str, split: str, seed: int, calls: list[tuple[str, str, int]], precision: str = "float32",
            target: str = "cortex-m4") -> NetworkRow:
    return NetworkRow(target, precision, name, split, seed, "{}", 0, sum(c for _, _, c in calls), 0,
                      canonical_json([[k, h, c // 2, c] for k, h, c in calls]))


def feature(h: str, macs: int = 10, precision: str = "float32", **values: float) -> FeatureRow:
    return FeatureRow(precision, h, macs, canonical_json({**dict.fromkeys(FEATURE_NAMES, 0.0), **values}))


def tiny_db(precision: str = "float32") -> ProfileDB:
    db = ProfileDB(":memory:")
    db.record_network([network("fit00", "fit", 0, [("k_a", "a", 100), ("k_a2", "a", 104), ("k_b", "b", 100)],
                               precision)], [feature("a", precision=precision), feature("b", 20, precision)])
    db.record_network([network("eval00", "eval", 1, [("k_b", "b", 90), ("k_c", "c", 50)], precision)],
                      [feature("c", precision=precision)])
    return db


def test_kernel_rows_are_the_first_call_of_each_kernel_of_a_split() -> None:
    db = tiny_db()
    fit = db.kernel_rows("cortex-m4", "float32", "fit")
    assert [(r["hash"], r["name"], r["cycles"], r["macs"]) for r in fit] == [("a", "k_a", 100, 10), ("b", "k_b", 100, 20)]
    assert [(r["hash"], r["cycles"]) for r in db.kernel_rows("cortex-m4", "float32")] == [("a", 100), ("b", 100), ("c", 50)]
    assert [(r["hash"], r["cycles"]) for r in db.kernel_rows("cortex-m4", "float32", "eval")] == [("b", 90), ("c", 50)]
    assert db.kernel_rows("cortex-m7", "float32") == [] and db.kernel_rows("cortex-m4", "int8") == []
    assert set(fit[0]["features"]) == set(FEATURE_NAMES)
    assert db.targets("float32") == ["cortex-m4"]


def test_a_dump_loads_back_to_the_same_rows_and_the_same_bytes(tmp_path: Path) -> None:
    from tvmnas.measure.store import load_dump, open_profiles

    db = tiny_db()
    db.dump(tmp_path / "a.jsonl.gz")
    again = open_profiles(tmp_path / "a.jsonl.gz")
    assert again.networks() == db.networks() and again.features("float32") == db.features("float32")
    again.dump(tmp_path / "b.jsonl.gz")
    assert (tmp_path / "b.jsonl.gz").read_bytes() == (tmp_path / "a.jsonl.gz").read_bytes()
    # the same rows written in another order: the same bytes
    other = ProfileDB(":memory:")
    for net in reversed(db.networks()):
        other.record_network([net], [])
    other.record_network([], reversed(list(db.features("float32").values())))
    other.dump(tmp_path / "c.jsonl.gz")
    assert (tmp_path / "c.jsonl.gz").read_bytes() == (tmp_path / "a.jsonl.gz").read_bytes()
    # into a database file, which then reads as the dump does
    with load_dump(tmp_path / "a.jsonl.gz", into=tmp_path / "p.db") as file_db:
        assert file_db.kernel_rows("cortex-m4", "float32", "fit") == db.kernel_rows("cortex-m4", "float32", "fit")
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["a.jsonl.gz", "b.jsonl.gz", "c.jsonl.gz", "p.db"]


def test_missing_or_foreign_stores_are_named_errors(tmp_path: Path) -> None:
    from tvmnas.measure.store import open_profiles

    with pytest.raises(ProfileDatabaseError, match="does not exist"):
        load_kernel_rows(tmp_path / "nothing.jsonl.gz", "cortex-m4")
    (tmp_path / "broken.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ProfileDatabaseError, match="is not gzipped JSON lines"):
        open_profiles(tmp_path / "broken.jsonl.gz")
    import gzip

    (tmp_path / "old.json.gz").write_bytes(gzip.compress(b'{"version": 1, "kernels": {}, "networks": []}'))
    with pytest.raises(ProfileDatabaseError, match="is not a tvmnas profile dump"):
        open_profiles(tmp_path / "old.json.gz")
    (tmp_path / "row.jsonl.gz").write_bytes(gzip.compress(b'{"format":"tvmnas-profile-db","schema_version":3}\n'
                                                          b'{"table":"networks","name":"x"}\n'))
    with pytest.raises(ProfileDatabaseError, match="line 2: not a row of the profile store"):
        open_profiles(tmp_path / "row.jsonl.gz")


def test_random_networks_are_seeded_and_cover_both_spaces() -> None:
    a, b = random_genotypes(6, 3), random_genotypes(6, 3)
    assert [g.to_json() for g in a] == [g.to_json() for g in b]
    assert {g.space for g in a} == {"chain", "darts"}
    jobs = interleave(a[:2], b[:3])
    assert [(n, s) for n, s, _ in jobs] == [("fit00", "fit"), ("eval00", "eval"), ("fit01", "fit"),
                                           ("eval01", "eval"), ("eval02", "eval")]


def test_candidate_kernels_are_fit_rows_with_the_features_recorded_when_profiled(tmp_path: Path, monkeypatch) -> None:
    """profile-ops records each kernel's features beside its measurement, so fitting reads them
    from the store (no candidate is lowered again)."""
    from tvmnas.cost.candidates import candidate_row, kernel_rows, prepare_candidate
    from tvmnas.cost.sampler import OpSpec
    from tvmnas.targets import load_target

    target = load_target("cortex-m4")
    spec = OpSpec("conv", 8, 4, 8, kernel=3)
    prepared = prepare_candidate(spec, target, tmp_path / "bundle")
    assert {f.kernel_hash for f in prepared.features} == {k.kernel_hash for k in prepared.kernels}
    counts = [(1000 + i, 2000 + i) for i in range(len(prepared.kernels))]
    rows = kernel_rows(spec, prepared, counts)
    with ProfileDB(tmp_path / "p.db") as db:
        db.record(candidate_row(spec, prepared, {r.key: r for r in rows}), rows, prepared.features)
        db.record_network([network("eval00", "eval", 0, [("k_z", "z", 5)])], [feature("z")])
    from tvmnas.measure import profiler

    def no_lowering(*args, **kwargs):
        raise AssertionError("fit rows are read from the store, nothing is lowered again")

    monkeypatch.setattr(profiler, "lower_model", no_lowering)
    monkeypatch.setattr(profiler, "lower_network", no_lowering)
    joined = load_kernel_rows(tmp_path / "p.db", "cortex-m4")
    assert {r["hash"] for r in joined} == {k.kernel_hash for k in prepared.kernels}  # not the eval network's
    assert sorted(r["cycles"] for r in joined) == sorted({c for _, c in counts})
    assert all(set(r["features"]) == set(FEATURE_NAMES) for r in joined)
    with pytest.raises(CostModelError, match="has no float32 kernels with features measured on cortex-m7$"):
        load_kernel_rows(tmp_path / "p.db", "cortex-m7")
    with pytest.raises(CostModelError, match=r"has no int8 kernels .* \(it holds float32 ones: fit them with precision float32\)$") as err:
        load_kernel_rows(tmp_path / "p.db", "cortex-m4", "int8")
    assert err.value.settings == ("precision",)


def test_a_schema_2_database_is_migrated_in_place_keeping_its_rows(tmp_path: Path) -> None:
    import sqlite3
    from dataclasses import astuple

    from tvmnas.measure.store import SCHEMA, KernelRow

    path = tmp_path / "old.db"
    v2 = SCHEMA[:SCHEMA.index("CREATE TABLE IF NOT EXISTS features")]
    a = KernelRow("cortex-m4", "float32", "aa", "v1", "-O3", "k_aa", "conv", "{}", 10, 100, 200, "/* c */")
    with sqlite3.connect(path) as conn:
        conn.executescript(v2 + "INSERT INTO meta VALUES ('schema_version', '2');")
        conn.execute("INSERT INTO kernels VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", astuple(a))
    with ProfileDB(path) as db:
        assert db.kernels() == [a] and db.networks() == []
        db.record_network([network("fit00", "fit", 0, [("k", "aa", 10)])], [feature("aa")])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    with ProfileDB(path, create=False) as db:
        assert db.kernels() == [a] and [n.name for n in db.networks()] == ["fit00"]


def _tiny_nets():
    from tvmnas.search.genotype import ChainLayer, Genotype

    def tiny(*layers: tuple[str, int]) -> Genotype:
        return Genotype(space="chain", input_shape=(1, 8, 8), num_classes=4, channels=4,
                        layers=tuple(ChainLayer(op, width, 1) for op, width in layers), head_channels=0)

    return [("fit00", "fit", tiny(("mb_k3_e1", 4))), ("eval00", "eval", tiny(("mb_k5_e1", 4), ("mb_k3_e1", 4))),
            ("fit01", "fit", tiny(("mb_k3_e1", 8)))]


def test_parallel_interrupted_and_resumed_collection_write_the_same_dump_as_one_run(tmp_path: Path) -> None:
    from tvmnas.cost.collect import collect
    from tvmnas.targets import load_target

    nets = _tiny_nets()
    target = [load_target("cortex-m4")]
    seen: list[str] = []
    with ProfileDB(tmp_path / "one.db") as db:
        assert collect(nets, target, db, progress=seen.append) == 3
        assert [n.name for n in db.networks()] == ["fit00", "eval00", "fit01"] and len(seen) == 3
        assert [n.seed for n in db.networks()] == [0, 1, 2]
        calls = [c for n in db.networks() for c in n.call_list]
        assert len({(h, k) for k, h, _, _ in calls}) > len({h for _, h, _, _ in calls})  # a kernel under two names
        assert {h for _, h, _, _ in calls} == set(db.features("float32"))  # every kernel has its features
        db.dump(tmp_path / "one.jsonl.gz")

    with ProfileDB(tmp_path / "parallel.db") as db:
        collect(nets, target, db, jobs=2, progress=lambda m: None)
        db.dump(tmp_path / "parallel.jsonl.gz")
    assert (tmp_path / "parallel.jsonl.gz").read_bytes() == (tmp_path / "one.jsonl.gz").read_bytes()

    # a run stopped after its second network: the finished ones stay, the rerun profiles the rest
    stopped: list[str] = []

    def stop_after_two(msg: str) -> None:
        stopped.append(msg)
        if len(stopped) == 2:
            raise KeyboardInterrupt

    with ProfileDB(tmp_path / "resumed.db") as db, pytest.raises(KeyboardInterrupt):
        collect(nets, target, db, progress=stop_after_two)
    with ProfileDB(tmp_path / "resumed.db") as db:
        assert [n.name for n in db.networks()] == ["fit00", "eval00"]
        seen.clear()
        assert collect(nets, target, db, jobs=2, progress=seen.append) == 1
        assert len(seen) == 1 and "fit01" in seen[0]  # only the missing network
        db.dump(tmp_path / "resumed.jsonl.gz")
    assert (tmp_path / "resumed.jsonl.gz").read_bytes() == (tmp_path / "one.jsonl.gz").read_bytes()


def test_one_pool_collects_a_sampled_operator_and_a_network_each_once(tmp_path: Path) -> None:
    """The one collector: a candidate and a network go through the same executor, both are recorded
    once, and a rerun finds both stored (the network before any work, the candidate once compiled)."""
    from tvmnas.cost.candidates import CandidateItem
    from tvmnas.cost.collect import network_items
    from tvmnas.cost.collector import run_items
    from tvmnas.cost.sampler import OpSpec
    from tvmnas.executor import InlineExecutor
    from tvmnas.targets import load_target

    class Counting(InlineExecutor):
        def __init__(self) -> None:
            self.tasks: list[str] = []

        def submit(self, fn, /, *args, **kwargs):
            self.tasks.append(f"{type(fn.__self__).__name__}.{fn.__name__}")
            return super().submit(fn, *args, **kwargs)

    m4 = load_target("cortex-m4")
    conv = OpSpec("conv", 8, 4, 8, kernel=3)
    items = [CandidateItem(conv, m4, tmp_path / "w"), *network_items(_tiny_nets()[:1], [m4])]
    with ProfileDB(tmp_path / "p.db") as db:
        first, second = Counting(), Counting()
        stats = run_items(items, db, first)
        assert (stats.measured, stats.cached, stats.failures) == (2, 0, [])
        assert first.tasks == ["CandidateItem.prepare", "CandidateItem.measure", "NetworkItem.prepare"]
        assert [c.candidate_key for c in db.candidates()] == [conv.key]
        assert [n.name for n in db.networks()] == ["fit00"]
        assert stats.kernels_added == db.counts()[0] > 0
        again = run_items(items, db, second)
        assert (again.measured, again.cached) == (0, 2) and second.tasks == ["CandidateItem.prepare"]
        assert len(db.candidates()) == 1 and len(db.networks()) == 1


def test_a_failing_network_is_reported_the_others_are_stored_and_the_run_ends_in_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tvmnas.cost import collect as collect_module
    from tvmnas.errors import EmulatorError
    from tvmnas.targets import load_target

    def prepare(item):
        if item.key == "eval00":
            raise EmulatorError("eval00 on cortex-m4: guest hung (test)")
        return [network(item.key, item.split, item.seed, [("k", f"h{item.key}", 10)])], [feature(f"h{item.key}")]

    monkeypatch.setattr(collect_module.NetworkItem, "prepare", prepare)
    seen: list[str] = []
    with ProfileDB(tmp_path / "p.db") as db:
        with pytest.raises(CostModelError, match="1 of 3 networks failed; first: eval00: eval00 on cortex-m4: guest hung"):
            collect_module.collect(_tiny_nets(), [load_target("cortex-m4")], db, progress=seen.append)
        assert [n.name for n in db.networks()] == ["fit00", "fit01"]
    assert len(seen) == 3 and seen[-1].startswith("failed: eval00")


@pytest.mark.slow
def test_a_shipped_network_profiles_today_as_the_shipped_data_recorded_it() -> None:
    """The measurement path (lower, write, build, profile on the emulator) still gives the shipped
    dump's rows, call for call, and its kernels' features and MACs."""
    from tvmnas.cost.collect import profile_network
    from tvmnas.cost.surrogate import DATA_DIR, profiles_name
    from tvmnas.measure.store import open_profiles
    from tvmnas.search.genotype import Genotype
    from tvmnas.targets import load_target

    with open_profiles(DATA_DIR / profiles_name()) as shipped:
        rows = [n for n in shipped.networks(precision="float32") if n.seed == 1]
        features = shipped.features("float32")
    rows_now, features_now = profile_network(Genotype.from_json(rows[0].genotype),
                                             [load_target(r.target) for r in rows], "float32",
                                             name=rows[0].name, split=rows[0].split, seed=1)
    assert rows_now == rows
    assert features_now == [features[f.kernel_hash] for f in features_now]


def test_the_precision_is_kept_per_row_and_checked(tmp_path: Path) -> None:
    from tvmnas.cost.collect import collect

    i8 = tiny_db("int8")
    i8.dump(tmp_path / "i8.jsonl.gz")
    assert len(load_kernel_rows(tmp_path / "i8.jsonl.gz", "cortex-m4", "int8")) == 2
    with pytest.raises(CostModelError, match=r"has no float32 kernels .* \(it holds int8 ones"):
        load_kernel_rows(tmp_path / "i8.jsonl.gz", "cortex-m4")
    with pytest.raises(CostModelError, match="precision 'int4' is not one of float32, int8"):
        collect([], [], i8, precision="int4")


@pytest.mark.slow
@pytest.mark.ci
def test_int8_collection_profiles_the_int8_build_with_simd_kernels(tmp_path: Path) -> None:
    """The same genotype collected as int8 on a DSP core: the int8 build's kernels (the conv a call
    of the SIMD micro-kernel, with its MACs in the features), other kernels than float32's, resumable
    in the same database, and its features recomputed from the genotype as collected."""
    import math

    from tvmnas.cost.collect import collect, refresh_features
    from tvmnas.passes.kernel_features import OP_CLASSES
    from tvmnas.search.genotype import ChainLayer, Genotype
    from tvmnas.targets import load_target

    genotype = Genotype(space="chain", input_shape=(1, 8, 8), num_classes=4, channels=8,
                        layers=(ChainLayer("mb_k3_e1", 8, 1),), head_channels=0)
    nets = [("fit00", "fit", genotype)]
    target = [load_target("cortex-m4")]
    with ProfileDB(tmp_path / "p.db") as db:
        collect(nets, target, db, precision="int8", progress=lambda m: None)
        rows = db.kernel_rows("cortex-m4", "int8")
        assert rows and all(r["cycles"] > 0 for r in rows)
        convs = [r for r in rows if r["features"]["class_conv"] == 1.0 or r["features"]["class_depthwise"] == 1.0]
        assert len(convs) >= 2  # the block's 1x1 convs and the depthwise
        for r in convs:
            assert r["macs"] > 0 and math.isclose(r["features"]["log_macs"], math.log1p(r["macs"]), rel_tol=1e-9)
        assert {OP_CLASSES[0]} <= {c for c in OP_CLASSES for r in convs if r["features"][f"class_{c}"] == 1.0}
        collect(nets, target, db, progress=lambda m: None)  # float32 beside it
        assert not set(db.features("int8")) & set(db.features("float32"))
        seen: list[str] = []
        collect(nets, target, db, precision="int8", progress=seen.append)
        assert seen == []  # resumed: nothing left to profile
        collected = db.features("int8")
        db.set_features(FeatureRow("int8", h, 0, canonical_json(dict.fromkeys(FEATURE_NAMES, -1.0)))
                        for h in collected)
        assert refresh_features(db, "int8", progress=lambda m: None) == len(collected)
        assert db.features("int8") == collected


def test_old_profile_data_converts_to_a_dump_with_the_same_fit_rows_and_reconverts(tmp_path: Path) -> None:
    """scripts/convert_profile_store.py: the old format's kernels and networks become feature and
    network rows whose fit rows are the old ones; a newer old file (one network more) converts again."""
    import gzip
    import importlib.util
    import json

    from tvmnas.measure.store import open_profiles

    spec = importlib.util.spec_from_file_location(
        "convert_profile_store", Path(__file__).resolve().parents[1] / "scripts" / "convert_profile_store.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    f = dict.fromkeys(FEATURE_NAMES, 0.0)
    call = lambda h, c: {"kernel": f"k_{h}", "hash": h, "instructions": c // 2, "cycles": c}  # noqa: E731
    entry = lambda name, split, calls: {"name": name, "split": split, "genotype": {"space": "chain"}, "targets": {  # noqa: E731
        t: {"instructions": 0, "cycles": 1, "preamble_cycles": 3, "calls": calls} for t in ("cortex-m4", "cortex-m7")}}
    doc = {"version": 1, "precision": "int8", "kernels": {h: {"name": f"k_{h}", "features": {**f, "n_blocks": i}, "macs": i}
                                                          for i, h in enumerate("abc")},
           "networks": [entry("fit00", "fit", [call("a", 100), call("b", 40), call("a", 104)]),
                        entry("eval00", "eval", [call("b", 42), call("c", 10)])]}
    old = tmp_path / "profiles-int8.json.gz"
    old.write_bytes(gzip.compress(json.dumps(doc).encode()))
    script.convert(old, tmp_path / "new.jsonl.gz")
    with open_profiles(tmp_path / "new.jsonl.gz") as db:
        assert db.targets("int8") == ["cortex-m4", "cortex-m7"] and db.targets("float32") == []
        assert [(r["hash"], r["cycles"], r["macs"], r["features"]["n_blocks"])
                for r in db.kernel_rows("cortex-m7", "int8", "fit")] == [("a", 100, 0, 0), ("b", 40, 1, 1)]
        assert [(n.name, n.seed, n.preamble_cycles) for n in db.networks("cortex-m4")] == [("fit00", 0, 3), ("eval00", 1, 3)]
    doc["networks"].append(entry("fit01", "fit", [call("c", 12)]))
    old.write_bytes(gzip.compress(json.dumps(doc).encode()))
    script.convert(old, tmp_path / "new.jsonl.gz")
    with open_profiles(tmp_path / "new.jsonl.gz") as db:
        assert [(r["hash"], r["cycles"]) for r in db.kernel_rows("cortex-m4", "int8", "fit")] == [("a", 100), ("b", 40), ("c", 12)]
