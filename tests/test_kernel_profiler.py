"""Sampler, MAC counting, kernel identities and per-kernel profiling of sampled candidates on QEMU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tvmnas.measure import profiler as kernel_profiler
from tvmnas.compiler import lower_model
from tvmnas.errors import EmulatorError
from tvmnas.frontend import import_model
from tvmnas.measure.profiler import (
    codegen_flags,
    codegen_version,
    count_macs,
    kernel_keys,
    prepare_network,
    measure_network,
)
from tvmnas.cost import candidates
from tvmnas.cost.candidates import prepare_candidate, profile_candidate, profile_candidates
from tvmnas.measure.store import ProfileDB
from tvmnas.search.cost import count_module
from tvmnas.cost.sampler import OP_TYPES, OpSpec, sample_ops, spec_macs, weight_count
from tvmnas.targets import load_target

M4 = load_target("cortex-m4")
CONV = OpSpec("conv", 8, 4, 8, kernel=3, stride=1)
POOL = OpSpec("max_pool", 8, 8, 8, kernel=3, stride=2)
BLOCK = OpSpec("inverted_residual", 6, 8, 8, kernel=3, stride=1, expand=3)


# --------------------------------------------------------------------------- sampler


def test_sampler_is_deterministic_distinct_and_covers_every_op() -> None:
    a = sample_ops(2 * len(OP_TYPES), seed=7)
    b = sample_ops(2 * len(OP_TYPES), seed=7)
    assert a == b
    assert len({s.key for s in a}) == len(a)
    assert {s.op for s in a} == set(OP_TYPES)
    assert sample_ops(len(OP_TYPES), seed=8) != a[: len(OP_TYPES)]


def test_sampler_respects_the_caps() -> None:
    specs = sample_ops(60, seed=1, max_macs=100_000, max_activation_bytes=16_384, max_weight_count=2_000)
    assert all(spec_macs(s) <= 100_000 for s in specs)
    assert all(s.activation_bytes() <= 16_384 for s in specs)
    assert all(weight_count(s) <= 2_000 for s in specs)
    assert all(s.stride in (1, 2) and 4 <= s.c_in <= 256 for s in specs)


@pytest.mark.parametrize("op", OP_TYPES)
def test_each_candidate_builds_with_its_shapes(op: str) -> None:
    spec = next(s for s in sample_ops(len(OP_TYPES) * 2, seed=3) if s.op == op)
    module = spec.build(seed=0)
    out = module(torch.zeros(spec.input_shape))
    if op != "linear":
        assert out.shape[1] == spec.c_out
        assert out.shape[-1] == spec.out_resolution
    assert OpSpec.from_json(spec.params_json()) == spec


# --------------------------------------------------------------------------- identities and MACs


def test_codegen_version_ignores_the_function_name_but_not_the_code() -> None:
    text = "static void fused_conv(float *x) {\n  x[0] = 1.0f;\n}\n"
    renamed = text.replace("fused_conv", "fused_conv7")
    flags = codegen_flags(M4)
    assert codegen_version(text, "fused_conv", flags) == codegen_version(renamed, "fused_conv7", flags)
    assert codegen_version(text, "fused_conv", flags) != codegen_version(text.replace("1.0f", "2.0f"), "fused_conv", flags)


def test_codegen_version_follows_flags() -> None:
    text, flags = "static void k(void) {}\n", codegen_flags(M4)
    assert codegen_version(text, "k", flags) == codegen_version(text, "k", flags)
    assert codegen_version(text, "k", flags) != codegen_version(text, "k", flags.replace("-O3", "-O2"))


def test_int8_and_float32_kernels_of_one_layer_get_different_keys(tmp_path: Path) -> None:
    import numpy as np
    import onnx

    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    torch.manual_seed(0)
    export_onnx(torch.nn.Conv2d(8, 8, 3, padding=1).eval(), (1, 8, 8, 8), tmp_path / "conv.onnx")
    calib = np.random.RandomState(0).randn(4, 8, 8, 8).astype(np.float32)
    onnx.save(quantize_model(tmp_path / "conv.onnx", calib), str(tmp_path / "conv.qdq.onnx"))
    f32 = prepare_network(tmp_path / "conv.onnx", M4, tmp_path / "f")
    i8 = prepare_network(tmp_path / "conv.qdq.onnx", M4, tmp_path / "q")
    (fk,), (ik,) = kernel_keys(f32), kernel_keys(i8)
    assert (fk.precision, ik.precision) == ("float32", "int8")
    assert fk.kernel_hash != ik.kernel_hash and fk != ik
    assert (fk.target, fk.flags) == (ik.target, ik.flags)


@pytest.mark.parametrize("spec", [CONV, BLOCK, OpSpec("depthwise", 8, 8, 8, kernel=5, stride=2),
                                  OpSpec("linear", 1, 16, 10)], ids=lambda s: s.op)
def test_count_macs_from_lowered_kernels_matches_torch(spec: OpSpec) -> None:
    module = spec.build()
    lowered, graph = lower_model(import_model(module, spec.input_shape))
    assert sum(count_macs(lowered, graph)) == count_module(module, spec.input_shape[1:]).macs == spec_macs(spec)


# --------------------------------------------------------------------------- measuring on QEMU


def test_same_kernel_measured_twice_gives_identical_counts(tmp_path: Path) -> None:
    first = prepare_candidate(CONV, M4, tmp_path / "a" / "bundle")
    second = prepare_candidate(CONV, M4, tmp_path / "b" / "bundle")
    assert [k.kernel_hash for k in first.kernels] == [k.kernel_hash for k in second.kernels]
    p1 = measure_network(first, M4, tmp_path / "a" / "build")
    p2 = measure_network(second, M4, tmp_path / "b" / "build")
    assert [(k.instructions, k.cycles) for k in p1.kernels] == [(k.instructions, k.cycles) for k in p2.kernels]
    assert p1.kernels[0].instructions > CONV.c_out * 64 * CONV.c_in * 9  # at least one instruction per MAC


def test_block_candidate_records_each_kernel_and_the_block_total(tmp_path: Path) -> None:
    with ProfileDB(tmp_path / "p.db") as db:
        row = profile_candidate(BLOCK, M4, db, tmp_path / "work")
        kernels = {k.kernel_hash: k for k in db.kernels()}
        calls = row.kernel_list
        assert len(calls) == 3  # expand, depthwise, project + residual add
        assert row.instructions == sum(kernels[h].instructions for _, _, h in calls)
        assert row.cycles == sum(kernels[h].cycles for _, _, h in calls)
        assert row.macs == spec_macs(BLOCK)
        assert all(k.op == "inverted_residual" and k.instructions > 0 for k in kernels.values())


def test_rerun_measures_nothing_and_codegen_change_remeasures_only_changed_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ProfileDB(tmp_path / "p.db") as db:
        first = profile_candidates([CONV, POOL], M4, db, tmp_path / "w1")
        assert (first.measured, first.cached, first.failures) == (2, 0, [])
        again = profile_candidates([CONV, POOL], M4, db, tmp_path / "w2")
        assert (again.measured, again.cached) == (0, 2)

        original = kernel_profiler.emit_kernels

        def pool_changed(lowered, graph, **options):  # a code-generator change that touches only pooling kernels
            kernels = original(lowered, graph, **options)
            for name, k in kernels.items():
                if "pool" in name:
                    k.text = k.text.replace("{", "{ /* v2 */", 1)
            return kernels

        monkeypatch.setattr(kernel_profiler, "emit_kernels", pool_changed)
        changed = profile_candidates([CONV, POOL], M4, db, tmp_path / "w3")
        assert (changed.measured, changed.cached, changed.kernels_added) == (1, 1, 1)
        assert db.counts() == (3, 3)


def _sabotage_kernel(bundle: Path, name: str, statement: str) -> None:
    source = (bundle / "model.c").read_text()
    pattern = re.compile(rf"(static (?:__attribute__\(\(\w+\)\) )?void {re.escape(name)}\([^)]*\)\s*\{{)")
    assert pattern.search(source), f"kernel {name} not found in model.c"
    (bundle / "model.c").write_text(pattern.sub(lambda m: m.group(1) + "\n  " + statement, source, count=1))


def test_a_hang_ends_at_the_timeout_naming_the_kernel(tmp_path: Path) -> None:
    prepared = prepare_candidate(BLOCK, M4, tmp_path / "bundle")
    victim = prepared.kernels[1].name
    _sabotage_kernel(prepared.bundle_dir, victim, "for (;;) { __asm__ volatile(\"\"); }")
    with pytest.raises(EmulatorError, match=rf"hung in kernel 1 '{victim}' \(no exit within 3 s\)"):
        measure_network(prepared, M4, tmp_path / "build", timeout_s=3)


def test_a_fault_names_the_kernel(tmp_path: Path) -> None:
    prepared = prepare_candidate(BLOCK, M4, tmp_path / "bundle")
    victim = prepared.kernels[2].name
    _sabotage_kernel(prepared.bundle_dir, victim, "__asm__ volatile(\"udf #0\");")
    with pytest.raises(EmulatorError, match=rf"(HardFault|UsageFault).* in kernel 2 '{victim}'"):
        measure_network(prepared, M4, tmp_path / "build", timeout_s=30)


def test_a_failing_candidate_is_reported_and_leaves_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_measure(item, prepared):
        raise EmulatorError(f"{prepared.kernels[0].name} on {item.target.name}: guest hung (test)")

    monkeypatch.setattr(candidates.CandidateItem, "measure", broken_measure)
    with ProfileDB(tmp_path / "p.db") as db:
        stats = profile_candidates([CONV], M4, db, tmp_path / "w")
        assert stats.measured == 0 and len(stats.failures) == 1
        assert "guest hung (test)" in stats.failures[0] and CONV.key in stats.failures[0]
        assert db.counts() == (0, 0)


def test_a_shared_kernel_is_recorded_for_the_first_candidate_whatever_finishes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidate 1 is compiled before candidate 0 (as on a busy worker); the kernel both use still
    gets candidate 0's row, as in a sequential run, so the database does not depend on the executor."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tvmnas.measure.profiler import KernelInfo, PreparedNetwork

    first, second = OpSpec("conv", 8, 4, 8, kernel=3), OpSpec("conv", 8, 4, 8, kernel=5)
    hashes = {first.key: ["shared", "only_first"], second.key: ["shared", "only_second"]}
    second_compiled = threading.Event()

    def prepare(item):
        spec, target, work_dir = item.spec, item.target, item.work_dir
        if spec == first:
            assert second_compiled.wait(timeout=60)
        kernels = tuple(KernelInfo(i, f"k_{h}", h, f"v_{h}", 10, f"/* {h} */", "float32") for i, h in enumerate(hashes[spec.key]))
        if spec == second:
            second_compiled.set()
        return PreparedNetwork(work_dir / "bundle", target.name, "-O2", 4, kernels)

    monkeypatch.setattr(candidates.CandidateItem, "prepare", prepare)
    monkeypatch.setattr(candidates.CandidateItem, "measure", lambda item, prepared: [(100, 150)] * 2)

    class TwoThreads(ThreadPoolExecutor):
        workers = 2
        shares_files = True

    with ProfileDB(tmp_path / "p.db") as db:
        stats = profile_candidates([first, second], M4, db, tmp_path / "w", executor=TwoThreads(2))
        shared = [k for k in db.kernels() if k.kernel_hash == "shared"]
    assert stats.failures == [] and stats.measured == 2
    assert [k.params for k in shared] == [first.params_json()]
