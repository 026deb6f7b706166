"""LSTM, GRU and RNN through both routes (.onnx, .pt2): one looping kernel per layer, matching PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tvmnas.compiler import compile_model, lower_model
from tvmnas.errors import UnsupportedOperatorError
from tvmnas.frontend import import_model
from tvmnas.passes import kernel_macs
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx, export_pt2
from zoo.recurrent import KWS_MODELS, RecurrentEntry

TOLERANCE = 1e-4  # of the output's scale (max abs value)
M4 = "cortex-m4"
EXPORT = {"onnx": export_onnx, "pt2": export_pt2}
RECURRENT_PREFIXES = ("lstm_layer", "gru_layer", "rnn_tanh_layer", "rnn_relu_layer")

SMALL = {
    "lstm": RecurrentEntry("lstm", "lstm", 8, steps=6, features=5),
    "gru_2layer_time_major_state": RecurrentEntry("gru2", "gru", 8, layers=2, batch_first=False, head="state",
                                                  steps=6, features=5),
    "rnn_bidirectional": RecurrentEntry("birnn", "rnn", 6, bidirectional=True, steps=6, features=5),
    "lstm_bidirectional_2layer_state": RecurrentEntry("bilstm2", "lstm", 6, layers=2, bidirectional=True,
                                                      head="state", steps=5, features=4),
    "gru_bidirectional_odd_hidden": RecurrentEntry("bigru", "gru", 5, bidirectional=True, steps=4, features=3),
}


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y.reshape(-1) - ref.reshape(-1)).max() / np.abs(ref).max())


def _export(entry: RecurrentEntry, route: str, tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    model = entry.build()
    x = entry.sample_input().numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return EXPORT[route](model, entry.input_shape, tmp_path / f"{entry.name}.{route}"), x, ref


def _recurrent_calls(path: Path) -> tuple[list[str], int]:
    _, graph = lower_model(import_model(path))
    names = [c.kernel for c in graph.calls]
    return [n for n in names if n.startswith(RECURRENT_PREFIXES)], len(names)


@pytest.mark.parametrize("route", ["onnx", "pt2"])
def test_each_layer_is_one_kernel_whatever_the_sequence_length(route: str, tmp_path: Path) -> None:
    short = RecurrentEntry("lstm2", "lstm", 8, layers=2, steps=4, features=5)
    long = RecurrentEntry("lstm2", "lstm", 8, layers=2, steps=40, features=5)
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    rec_short, total_short = _recurrent_calls(_export(short, route, tmp_path / "short")[0])
    rec_long, total_long = _recurrent_calls(_export(long, route, tmp_path / "long")[0])
    assert rec_short == rec_long and len(rec_short) == 2 and all(n.startswith("lstm_layer") for n in rec_short)
    assert total_short == total_long  # no kernel per time step


@pytest.mark.parametrize("route,names", [("onnx", ["/rnn/LSTM", "/rnn/LSTM_1"]), ("pt2", ["rnn.l0", "rnn.l1"])])
def test_recurrent_kernels_are_named_by_their_source_layer(route: str, names: list[str], tmp_path: Path) -> None:
    entry = RecurrentEntry("lstm2", "lstm", 8, layers=2, steps=4, features=5)
    bundle = compile_model(_export(entry, route, tmp_path)[0], load_target(M4), tmp_path / "c")
    kernels = [k for k in bundle.manifest["kernels"] if k["name"].startswith(RECURRENT_PREFIXES)]
    assert [k["source"] for k in kernels] == names
    assert f"/* {kernels[0]['index']} {names[0]}: lstm_layer" in (bundle.out_dir / "model.c").read_text()


@pytest.mark.parametrize("route", ["onnx", "pt2"])
@pytest.mark.parametrize("case", sorted(SMALL))
def test_recurrent_matches_pytorch_on_host(case: str, route: str, tmp_path: Path) -> None:
    path, x, ref = _export(SMALL[case], route, tmp_path)
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    assert any(k["name"].startswith(RECURRENT_PREFIXES) for k in bundle.manifest["kernels"])
    y = run_host(build_host(bundle.out_dir, tmp_path / "host"), [x])[0]
    assert _relative_error(y, ref) <= TOLERANCE


def test_state_output_is_the_final_state_not_the_sequence(tmp_path: Path) -> None:
    """PyTorch returns (output, (h_n, c_n)): a model reading the states gets them from the layer's kernel."""

    class LastState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.rnn = torch.nn.LSTM(4, 6, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, (h_n, c_n) = self.rnn(x)
            return torch.cat([h_n[0], c_n[0]], dim=1)

    model = LastState().eval()
    x = torch.randn(1, 5, 4)
    ref = model(x).detach().numpy()
    bundle = compile_model(export_pt2(model, (1, 5, 4), tmp_path / "m.pt2"), load_target(M4), tmp_path / "c")
    assert [k["name"] for k in bundle.manifest["kernels"]].count("lstm_layer") == 1
    y = run_host(build_host(bundle.out_dir, tmp_path / "host"), [x.numpy()])[0]
    assert _relative_error(y, ref) <= TOLERANCE


def _onnx_lstm(path: Path, direction: str, layout: int, steps: int = 5, inputs: int = 3, hidden: int = 4) -> Path:
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    w = helper.make_tensor("W", TensorProto.FLOAT, [dirs, 4 * hidden, inputs],
                           rng.standard_normal(dirs * 4 * hidden * inputs).astype(np.float32).tolist())
    r = helper.make_tensor("R", TensorProto.FLOAT, [dirs, 4 * hidden, hidden],
                           rng.standard_normal(dirs * 4 * hidden * hidden).astype(np.float32).tolist())
    b = helper.make_tensor("B", TensorProto.FLOAT, [dirs, 8 * hidden],
                           rng.standard_normal(dirs * 8 * hidden).astype(np.float32).tolist())
    x_shape = [1, steps, inputs] if layout else [steps, 1, inputs]
    h_shape = [1, dirs, hidden] if layout else [dirs, 1, hidden]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["", "Y_h"], name="lstm_node", hidden_size=hidden,
                            direction=direction, layout=layout)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, h_shape)], [w, r, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("direction,layout", [("reverse", 0), ("bidirectional", 1), ("forward", 1)])
def test_onnx_lstm_directions_and_layouts_match_onnxruntime(direction: str, layout: int, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = _onnx_lstm(tmp_path / "m.onnx", direction, layout)
    shape = [1, 5, 3] if layout else [5, 1, 3]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    # onnxruntime has no layout=1: at batch 1 the layout-0 node on the same memory is the reference
    time_major = _onnx_lstm(tmp_path / "time_major.onnx", direction, 0)
    ref = ort.InferenceSession(str(time_major)).run(None, {"X": x.reshape(5, 1, 3)})[0]
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    y = run_host(build_host(bundle.out_dir, tmp_path / "host"), [x])[0]
    assert _relative_error(y, ref) <= TOLERANCE


@pytest.mark.parametrize("linear_before_reset,direction", [(0, "forward"), (0, "bidirectional"), (1, "reverse")])
def test_onnx_gru_both_reset_forms_match_onnxruntime(linear_before_reset: int, direction: str, tmp_path: Path) -> None:
    """ONNX's default GRU (linear_before_reset=0, e.g. from older TensorFlow) resets h before R_n."""
    import onnxruntime as ort

    hidden, inputs, steps, dirs = 8, 3, 6, 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(2)

    def weights(name: str, shape: list[int]):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, rng.standard_normal(shape).astype(np.float32).ravel().tolist())

    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], name="gru_node", hidden_size=hidden,
                            direction=direction, linear_before_reset=linear_before_reset)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, 1, inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, dirs, 1, hidden])],
        [weights("W", [dirs, 3 * hidden, inputs]), weights("R", [dirs, 3 * hidden, hidden]),
         weights("B", [dirs, 6 * hidden])])
    path = tmp_path / "gru.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    x = rng.standard_normal([steps, 1, inputs]).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"X": x})[0]
    bundle = compile_model(path, load_target(M4), tmp_path / "c")
    y = run_host(build_host(bundle.out_dir, tmp_path / "host"), [x])[0]
    assert _relative_error(y, ref) <= TOLERANCE


@pytest.mark.parametrize("route", ["onnx", "pt2"])
def test_batch_above_one_is_refused_in_one_line(route: str, tmp_path: Path, capfd) -> None:
    model = torch.nn.GRU(3, 4, batch_first=True).eval()
    path = EXPORT[route](model, (2, 5, 3), tmp_path / f"m.{route}")
    capfd.readouterr()
    with pytest.raises(UnsupportedOperatorError, match=r"(?i)gru.*batch 2, only batch 1") as err:
        compile_model(path, load_target(M4), tmp_path / "c")
    assert "\n" not in str(err.value)
    assert capfd.readouterr().out == ""  # stdout stays clean for the CLI's JSON


def test_lstm_projection_is_refused_naming_the_node(tmp_path: Path) -> None:
    model = torch.nn.LSTM(4, 8, proj_size=3, batch_first=True).eval()
    path = export_pt2(model, (1, 5, 4), tmp_path / "m.pt2")
    with pytest.raises(UnsupportedOperatorError, match=r"'lstm.input' at node 'lstm'.*proj_size"):
        compile_model(path, load_target(M4), tmp_path / "c")


def test_mac_count_is_the_gate_products(tmp_path: Path) -> None:
    """MAC convention: T * D * G*H * (I + H) per layer, counted from the kernel's own loops."""
    entry = SMALL["lstm_bidirectional_2layer_state"]
    path, _, _ = _export(entry, "pt2", tmp_path)
    lowered, graph = lower_model(import_model(path))
    macs = sum(kernel_macs(lowered[c.kernel]) for c in graph.calls if c.kernel.startswith(RECURRENT_PREFIXES))
    assert macs == entry.recurrent_macs() == 5 * 2 * 4 * 6 * (4 + 6) + 5 * 2 * 4 * 6 * (12 + 6)


CI_KWS = ("lstm_kws", "pt2", M4)  # the representative the CI run keeps


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,route,target_name",
    [
        pytest.param(*key, marks=pytest.mark.ci) if key == CI_KWS else key
        for key in [(n, r, t) for n in sorted(KWS_MODELS) for r in ("onnx", "pt2") for t in (M4, "cortex-m7")]
    ],
)
def test_kws_matches_pytorch_on_qemu(name: str, route: str, target_name: str, tmp_path: Path) -> None:
    path, x, ref = _export(KWS_MODELS[name], route, tmp_path)
    target = load_target(target_name)
    bundle = compile_model(path, target, tmp_path / "c")
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x], timeout_s=600)
    assert result.instructions[0] > KWS_MODELS[name].recurrent_macs()
    assert _relative_error(result.outputs[0], ref) <= TOLERANCE


@pytest.mark.slow
def test_profile_and_cost_predict_price_recurrent_kernels(tmp_path: Path) -> None:
    from tvmnas.cost.predict import predict_model_json
    from tvmnas.cost.surrogate import load_surrogate
    from tvmnas.measure.profiler import profile_network_json

    entry = SMALL["gru_2layer_time_major_state"]
    path, _, _ = _export(entry, "onnx", tmp_path)
    target = load_target(M4)
    prof = profile_network_json(path, target)
    pred = predict_model_json(path, load_surrogate(target.name))
    for report in (prof, pred):
        rec = [k for k in report["kernels"] if k["name"].startswith(RECURRENT_PREFIXES)]
        assert len(rec) == 2 and sum(k["macs"] for k in rec) == entry.recurrent_macs()
        assert all(k["cycles"] > 0 for k in rec)
    assert prof["instructions"] > entry.recurrent_macs()
