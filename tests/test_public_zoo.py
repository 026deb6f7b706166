"""The public-architecture zoo (benchmarks/public_models) and its benchmark (benchmarks/public_zoo.py).

Fast tests: every network builds from its seed, runs forward, and exports to ONNX (checked with
onnxruntime) and to .pt2 (checked by reloading); the benchmark classifies routes, resumes and
renders its table. Slow tests: a few networks end to end on QEMU through the benchmark's own route.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import public_zoo  # noqa: E402
from public_models import PUBLIC_MODELS  # noqa: E402

from tvmnas.errors import ModelLoadError, UnsupportedOperatorError  # noqa: E402
from tvmnas.measure.runner import RunResult  # noqa: E402
from tvmnas.model_file import export_onnx, export_pt2  # noqa: E402

NAMES = list(PUBLIC_MODELS)


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def test_zoo_covers_thirty_public_architectures():
    assert len(PUBLIC_MODELS) >= 30
    families = {m.family for m in PUBLIC_MODELS.values()}
    assert {"mlperf_tiny", "mobile", "transformer", "encoder_decoder", "temporal", "recurrent"} <= families
    for name in ("mlperf_resnet8", "mlperf_dscnn", "mlperf_mobilenetv1_vww", "mlperf_fc_autoencoder",
                 "vit_tiny_cls_first", "vit_tiny_cls_last", "tcn_causal", "kws_gru", "kws_lstm"):
        assert name in PUBLIC_MODELS
    assert not any(m.expected_failure for m in PUBLIC_MODELS.values())  # recurrent layers compile now


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_its_seed_runs_forward_and_exports_to_onnx_and_pt2(name: str, tmp_path: Path):
    entry = PUBLIC_MODELS[name]
    model = entry.build(seed=0)
    assert same_state(model, entry.build(seed=0))  # same seed, same weights and statistics
    x = entry.sample_input(1)
    with torch.no_grad():
        ref = model(x).numpy()
    assert ref.shape[0] == 1 and np.isfinite(ref).all() and np.abs(ref).max() > 0
    onnx_path = export_onnx(model, entry.input_shape, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(onnx_path))
    assert relative_error(session.run(None, {"input": x.numpy()})[0], ref) <= 1e-5
    pt2_path = export_pt2(model, entry.input_shape, tmp_path / "m.pt2")
    with torch.no_grad():
        reloaded = torch.export.load(str(pt2_path)).module()(x).numpy()
    assert relative_error(reloaded, ref) <= 1e-6


@pytest.mark.parametrize("name", ["mlperf_resnet8", "vit_tiny_cls_first"])
def test_the_seed_reaches_weights_and_normalisation_without_touching_the_global_rng(name: str):
    entry = PUBLIC_MODELS[name]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = entry.build(seed=0), entry.build(seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert not same_state(a, b)
    norms = [m for m in a.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm))]
    assert norms and all(not torch.all(m.weight == 1) for m in norms)  # affine drawn, not left at init


# ---------------------------------------------------------------------------------------------
# The benchmark's classification, resumption and table (compiler and emulator faked: no QEMU)
# ---------------------------------------------------------------------------------------------


class FakeCompiled:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.manifest = {"flash_bytes": 1000, "arena_bytes": 100}


def fake_pipeline(monkeypatch, entry, *, compile_error: Exception | None = None, perturb: float = 0.0):
    """compile_model/build/run replaced: the 'emulator' returns PyTorch's output plus `perturb` x scale."""
    import tvmnas.compiler
    import tvmnas.measure.runner

    def compile_model(path, target, out_dir, **kwargs):
        if compile_error is not None:
            raise compile_error
        return FakeCompiled(out_dir)

    def run(elf, target, inputs, **kwargs):
        x = torch.from_numpy(inputs[0]).reshape(entry.input_shape)
        with torch.no_grad():
            y = entry.build(seed=0)(x).numpy().reshape(-1)
        return RunResult(outputs=[y + perturb * np.abs(y).max()], instructions=[123], exit_code=0, configs=[],
                         emulator_stderr="")

    monkeypatch.setattr(tvmnas.compiler, "compile_model", compile_model)
    monkeypatch.setattr(tvmnas.measure.runner, "build", lambda bundle, target, build_dir: Path(build_dir) / "model.elf")
    monkeypatch.setattr(tvmnas.measure.runner, "run", run)


@pytest.fixture
def small_net():
    return PUBLIC_MODELS["mlperf_fc_autoencoder"]


def test_route_that_agrees_is_matched(monkeypatch, small_net):
    fake_pipeline(monkeypatch, small_net)
    record = public_zoo.run_route(small_net, "onnx", "cortex-m4", 60)
    assert record["status"] == "matched" and record["rel_error"] <= 1e-4 and record["instructions"] == 123


def test_route_that_disagrees_is_silently_wrong(monkeypatch, small_net):
    fake_pipeline(monkeypatch, small_net, perturb=1e-3)
    record = public_zoo.run_route(small_net, "pt2", "cortex-m4", 60)
    assert record["status"] == "silently_wrong"
    assert record["rel_error"] == pytest.approx(1e-3, rel=1e-2)


def test_one_line_refusal_records_the_line_and_whether_it_names_the_node(monkeypatch, small_net):
    fake_pipeline(monkeypatch, small_net, compile_error=UnsupportedOperatorError("GRU", "/rnn/GRU"))
    record = public_zoo.run_route(small_net, "onnx", "cortex-m4", 60)
    assert record["status"] == "one_line" and record["stage"] == "compile" and record["names_node"]
    assert record["line"] == "unsupported operator 'GRU' at node '/rnn/GRU'"
    fake_pipeline(monkeypatch, small_net, compile_error=ModelLoadError("the TVM ONNX importer failed: Dynamic pads"))
    assert not public_zoo.run_route(small_net, "onnx", "cortex-m4", 60)["names_node"]


def test_any_other_exception_is_a_traceback(monkeypatch, small_net):
    fake_pipeline(monkeypatch, small_net, compile_error=AssertionError("emit_te now only supports Tensor"))
    record = public_zoo.run_route(small_net, "onnx", "cortex-m4", 60)
    assert record["status"] == "traceback" and record["line"] == "AssertionError: emit_te now only supports Tensor"
    assert "Traceback" in record["traceback"]


def test_a_route_the_process_died_in_counts_as_traceback_and_an_interrupted_one_is_redone(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    lines = [{"name": "a", "route": "onnx", "target": "t", "status": "started"},
             {"name": "b", "route": "onnx", "target": "t", "status": "started"},
             {"name": "b", "route": "onnx", "target": "t", "status": "interrupted"},
             {"name": "c", "route": "pt2", "target": "t", "status": "started"},
             {"name": "c", "route": "pt2", "target": "t", "status": "matched", "rel_error": 0.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = public_zoo.load_records(path)
    assert records[("a", "onnx", "t")]["status"] == "traceback"
    assert ("b", "onnx", "t") not in records
    assert records[("c", "pt2", "t")]["status"] == "matched"


def test_rerun_skips_finished_routes_and_force_redoes_them(monkeypatch, tmp_path: Path):
    calls = []

    def run_route(entry, route, target, timeout_s):
        calls.append((entry.name, route))
        return {"name": entry.name, "route": route, "target": target, "family": entry.family,
                "status": "matched", "rel_error": 1e-7, "seconds": 0.0}

    monkeypatch.setattr(public_zoo, "run_route", run_route)
    argv = ["--only", "mlperf_resnet8,tcn_causal", "--results", str(tmp_path / "r.jsonl"),
            "--results-md", str(tmp_path / "RESULTS.md")]
    public_zoo.main(argv)
    assert len(calls) == 4
    public_zoo.main(argv)
    assert len(calls) == 4  # all four recorded: nothing redone
    public_zoo.main([*argv, "--force", "--routes", "pt2"])
    assert calls[4:] == [("mlperf_resnet8", "pt2"), ("tcn_causal", "pt2")]
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("<!-- BEGIN public_zoo -->") == 1
    assert "compiled 4, matched 4, one-line failures 0, tracebacks 0, silently wrong 0" in text


def test_table_totals_and_failure_lines(monkeypatch):
    import dataclasses

    models = dict(public_zoo.PUBLIC_MODELS)
    models["kws_gru"] = dataclasses.replace(models["kws_gru"], expected_failure="marked for this test")
    monkeypatch.setattr(public_zoo, "PUBLIC_MODELS", models)
    recs = {
        ("mlperf_resnet8", "onnx", "t"): {"name": "mlperf_resnet8", "route": "onnx", "status": "matched", "rel_error": 1e-7},
        ("mlperf_resnet8", "pt2", "t"): {"name": "mlperf_resnet8", "route": "pt2", "status": "silently_wrong",
                                        "rel_error": 2.1, "stage": "compare"},
        ("kws_gru", "onnx", "t"): {"name": "kws_gru", "route": "onnx", "status": "one_line", "stage": "compile",
                                   "line": "unsupported operator 'GRU' at node 'g'", "names_node": True},
        ("kws_gru", "pt2", "t"): {"name": "kws_gru", "route": "pt2", "status": "traceback", "stage": "compile",
                                  "line": "AssertionError: x", "traceback_lines": 63},
    }
    text = public_zoo.render(recs, "t", "python benchmarks/public_zoo.py")
    assert "compiled 2, matched 1, one-line failures 1, tracebacks 1, silently wrong 1" in text
    assert "**SILENTLY WRONG** (2.1)" in text
    assert "- kws_gru onnx: one-line (names op and node): `unsupported operator 'GRU' at node 'g'`" in text
    assert "63-line traceback at compile" in text
    assert "kws_gru (expected to fail today)" in text
    assert "- mlperf_resnet8 pt2: silently-wrong (relative error 2.1): compiled and ran without an error" in text


# ---------------------------------------------------------------------------------------------
# End to end on QEMU, through the benchmark's own route
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ci
def test_mlperf_resnet8_matches_pytorch_on_qemu_through_onnx():
    record = public_zoo.run_route(PUBLIC_MODELS["mlperf_resnet8"], "onnx", "cortex-m4", 120)
    assert record["status"] == "matched", record.get("line")
    assert record["rel_error"] <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name,route", [("mlperf_resnet8", "pt2"), ("conv_autoencoder", "pt2"),
                                        ("mobilenetv3_small_050", "onnx")])
def test_public_network_matches_pytorch_on_qemu(name: str, route: str):
    record = public_zoo.run_route(PUBLIC_MODELS[name], route, "cortex-m4", 120)
    assert record["status"] == "matched", record.get("line")
