"""Profile data for cost models: the JSON round trip, kernel rows, and rows joined from a profile database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvmnas.cost.collect import ProfileData, kernel_rows_from_db, load_kernel_rows
from tvmnas.cost.networks import interleave, random_genotypes
from tvmnas.errors import CostModelError
from tvmnas.passes import FEATURE_NAMES


def tiny_data() -> ProfileData:
    f = {n: 0.0 for n in FEATURE_NAMES}
    data = ProfileData(kernels={"a": {"name": "k_a", "features": f, "macs": 10}, "b": {"name": "k_b", "features": f, "macs": 20}})
    call = lambda h, c: {"kernel": f"k_{h}", "hash": h, "instructions": c // 2, "cycles": c}  # noqa: E731
    data.networks = [
        {"name": "fit00", "split": "fit", "genotype": {}, "targets": {"cortex-m4": {
            "instructions": 0, "cycles": 300, "preamble_cycles": 0, "calls": [call("a", 100), call("a", 100), call("b", 100)]}}},
        {"name": "eval00", "split": "eval", "genotype": {}, "targets": {"cortex-m4": {
            "instructions": 0, "cycles": 100, "preamble_cycles": 0, "calls": [call("b", 100)]}}},
    ]
    return data


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    data = tiny_data()
    data.save(tmp_path / "a.json.gz")
    again = ProfileData.load(tmp_path / "a.json.gz")
    again.save(tmp_path / "b.json.gz")
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()
    assert again.targets() == ["cortex-m4"]


def test_kernel_rows_are_distinct_kernels_of_a_split() -> None:
    data = tiny_data()
    assert [r["hash"] for r in data.kernel_rows("cortex-m4", "fit")] == ["a", "b"]
    assert [r["hash"] for r in data.kernel_rows("cortex-m4", "eval")] == ["b"]
    assert data.kernel_rows("cortex-m7") == []


def test_missing_or_foreign_files_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(CostModelError, match="does not exist"):
        load_kernel_rows(tmp_path / "nothing.json.gz", "cortex-m4")
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(CostModelError, match="is not JSON"):
        ProfileData.load(tmp_path / "bad.json.gz")
    (tmp_path / "broken.json.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CostModelError, match="is not JSON"):
        ProfileData.load(tmp_path / "broken.json.gz")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CostModelError, match="has version None"):
        ProfileData.load(tmp_path / "list.json")


def test_random_networks_are_seeded_and_cover_both_spaces() -> None:
    a, b = random_genotypes(6, 3), random_genotypes(6, 3)
    assert [g.to_json() for g in a] == [g.to_json() for g in b]
    assert {g.space for g in a} == {"chain", "darts"}
    jobs = interleave(a[:2], b[:3])
    assert [(n, s) for n, s, _ in jobs] == [("fit00", "fit"), ("eval00", "eval"), ("fit01", "fit"),
                                           ("eval01", "eval"), ("eval02", "eval")]


def test_rows_from_a_profile_database_join_features_by_kernel_hash(tmp_path: Path) -> None:
    from tvmnas.cost.candidates import candidate_row, kernel_rows, prepare_candidate
    from tvmnas.measure.store import ProfileDB
    from tvmnas.cost.sampler import OpSpec
    from tvmnas.targets import load_target

    target = load_target("cortex-m4")
    spec = OpSpec("conv", 8, 4, 8, kernel=3)
    prepared = prepare_candidate(spec, target, tmp_path / "bundle")
    counts = [(1000 + i, 2000 + i) for i in range(len(prepared.kernels))]
    rows = kernel_rows(spec, prepared, counts)
    with ProfileDB(tmp_path / "p.db") as db:
        db.record(candidate_row(spec, prepared, {r.key: r for r in rows}), rows)
    joined = kernel_rows_from_db(tmp_path / "p.db", "cortex-m4", progress=lambda m: None)
    assert {r["hash"] for r in joined} == {k.kernel_hash for k in prepared.kernels}
    assert sorted(r["cycles"] for r in joined) == sorted({c for _, c in counts})
    assert all(set(r["features"]) == set(FEATURE_NAMES) for r in joined)
    with pytest.raises(CostModelError, match="no kernels measured on cortex-m7"):
        kernel_rows_from_db(tmp_path / "p.db", "cortex-m7")


def test_profile_data_is_replaced_whole_and_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "profiles.json.gz"
    ProfileData({"a": {"name": "k"}}, []).save(path)
    assert ProfileData.load(path).kernels == {"a": {"name": "k"}}
    assert [p.name for p in tmp_path.iterdir()] == ["profiles.json.gz"]

    def interrupted(self, data):  # the rename never happens
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ProfileData({"b": {"name": "other"}}, []).save(path)
    assert ProfileData.load(path).kernels == {"a": {"name": "k"}}  # the previous file, whole


def test_parallel_and_resumed_profiling_write_the_same_file_as_one_run(tmp_path: Path) -> None:
    from tvmnas.cost.collect import collect
    from tvmnas.search.genotype import ChainLayer, Genotype
    from tvmnas.targets import load_target

    def tiny(*layers: tuple[str, int]) -> Genotype:
        return Genotype(space="chain", input_shape=(1, 8, 8), num_classes=4, channels=4,
                        layers=tuple(ChainLayer(op, width, 1) for op, width in layers), head_channels=0)

    nets = [("fit00", "fit", tiny(("mb_k3_e1", 4))), ("eval00", "eval", tiny(("mb_k5_e1", 4), ("mb_k3_e1", 4))),
            ("fit01", "fit", tiny(("mb_k3_e1", 8)))]
    target = [load_target("cortex-m4")]
    one = tmp_path / "one.json.gz"
    seen: list[str] = []
    data = collect(nets, target, save_to=one, progress=seen.append)
    assert [n["name"] for n in data.networks] == ["fit00", "eval00", "fit01"] and len(seen) == 3
    names = {(c["hash"], c["kernel"]) for n in data.networks for c in n["targets"]["cortex-m4"]["calls"]}
    assert len(names) > len({h for h, _ in names})  # a kernel shared under two names: the file keeps the first

    parallel = tmp_path / "parallel.json.gz"
    collect(nets, target, save_to=parallel, jobs=2, progress=lambda m: None)
    assert parallel.read_bytes() == one.read_bytes()

    resumed = tmp_path / "resumed.json.gz"
    collect(nets[1:2], target, save_to=resumed, progress=lambda m: None)  # an earlier, shorter run
    seen.clear()
    collect(nets, target, save_to=resumed, jobs=2, progress=seen.append)
    assert len(seen) == 2 and not any("eval00" in m for m in seen)  # only the missing networks
    assert resumed.read_bytes() == one.read_bytes()


@pytest.mark.slow
def test_a_shipped_network_profiles_today_as_the_shipped_data_recorded_it() -> None:
    """The measurement path (lower, write, build, profile on the emulator) still gives the shipped
    data's entry, byte for byte, and its kernels' features and MACs."""
    import json

    from tvmnas.cost.collect import profile_network
    from tvmnas.cost.surrogate import DATA_DIR
    from tvmnas.search.genotype import Genotype
    from tvmnas.targets import load_target

    shipped = ProfileData.load(DATA_DIR / "profiles.json.gz")
    net = shipped.networks[1]
    fresh = ProfileData()
    entry = profile_network(Genotype.from_dict(net["genotype"]), [load_target(t) for t in net["targets"]], fresh,
                            name=net["name"], split=net["split"], seed=1)
    assert json.dumps(entry, sort_keys=True) == json.dumps(net, sort_keys=True)
    assert {h: shipped.kernels[h] for h in fresh.kernels} == fresh.kernels


def test_precision_is_part_of_the_data_and_float32_files_are_unchanged(tmp_path: Path) -> None:
    import gzip
    import json

    from tvmnas.cost.collect import collect

    f32 = tiny_data()
    f32.save(tmp_path / "f32.json.gz")
    assert "precision" not in json.loads(gzip.decompress((tmp_path / "f32.json.gz").read_bytes()))
    assert ProfileData.load(tmp_path / "f32.json.gz").precision == "float32"
    i8 = tiny_data()
    i8.precision = "int8"
    i8.save(tmp_path / "i8.json.gz")
    assert json.loads(gzip.decompress((tmp_path / "i8.json.gz").read_bytes()))["precision"] == "int8"
    assert ProfileData.load(tmp_path / "i8.json.gz").precision == "int8"
    # one precision a file: fitting or resuming the other precision from it is refused in one line
    assert len(load_kernel_rows(tmp_path / "i8.json.gz", "cortex-m4", "int8")) == 2
    with pytest.raises(CostModelError, match="holds int8 profiles, not float32"):
        load_kernel_rows(tmp_path / "i8.json.gz", "cortex-m4")
    with pytest.raises(CostModelError, match="holds float32 profiles, not int8"):
        collect([], [], save_to=tmp_path / "f32.json.gz", precision="int8", progress=lambda m: None)
    with pytest.raises(CostModelError, match="precision 'int4' is not one of float32, int8"):
        collect([], [], precision="int4")


@pytest.mark.slow
@pytest.mark.ci
def test_int8_collection_profiles_the_int8_build_with_simd_kernels(tmp_path: Path) -> None:
    """The same genotype collected as int8 on a DSP core: the int8 build's kernels (the conv a call
    of the SIMD micro-kernel, with its MACs in the features), other kernels than float32's, and
    resumable into its own file."""
    import math

    from tvmnas.cost.collect import collect, refresh_features
    from tvmnas.passes.kernel_features import OP_CLASSES
    from tvmnas.search.genotype import ChainLayer, Genotype
    from tvmnas.targets import load_target

    genotype = Genotype(space="chain", input_shape=(1, 8, 8), num_classes=4, channels=8,
                        layers=(ChainLayer("mb_k3_e1", 8, 1),), head_channels=0)
    nets = [("fit00", "fit", genotype)]
    target = [load_target("cortex-m4")]
    path = tmp_path / "profiles-int8.json.gz"
    data = collect(nets, target, save_to=path, precision="int8", progress=lambda m: None)
    assert ProfileData.load(path).precision == "int8"
    rows = data.kernel_rows("cortex-m4")
    assert rows and all(r["cycles"] > 0 for r in rows)
    convs = [r for r in rows if r["features"]["class_conv"] == 1.0 or r["features"]["class_depthwise"] == 1.0]
    assert len(convs) >= 2  # the block's 1x1 convs and the depthwise
    for r in convs:
        assert r["macs"] > 0 and math.isclose(r["features"]["log_macs"], math.log1p(r["macs"]), rel_tol=1e-9)
    assert {OP_CLASSES[0]} <= {c for c in OP_CLASSES for r in convs if r["features"][f"class_{c}"] == 1.0}
    float32 = collect(nets, target, progress=lambda m: None)
    assert not set(data.kernels) & set(float32.kernels)
    seen: list[str] = []
    collect(nets, target, save_to=path, precision="int8", progress=seen.append)
    assert seen == []  # resumed: nothing left to profile
    # features recomputed from the genotype (its seed: its place in the list) are the collected ones
    stale = ProfileData.load(path)
    for kernel in stale.kernels.values():
        kernel["features"] = dict.fromkeys(kernel["features"], -1.0)
    assert refresh_features(stale, {"fit00": 0}, progress=lambda m: None) == len(data.kernels)
    assert stale.kernels == data.kernels
