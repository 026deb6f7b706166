"""The test zoo: every network runs, is seeded, exports to ONNX and .pt2, and imports into TVM Relax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.torch import from_exported_program

from tvmnas.errors import ModelLoadError
from tvmnas.models.darts_net import DartsCell
from tvmnas.search.ops import DilConv, FactorizedReduce, InvertedResidual, PoolBN, SepConv
from tvmnas.model_file import export_onnx, export_pt2, sample_input
from zoo import ZOO, ZooEntry, get_entry, list_zoo

NAMES = sorted(ZOO)
M0_NAMES = [e.name for e in list_zoo(m0_only=True)]
BN_NAMES = [n for n in NAMES if any(isinstance(m, nn.BatchNorm2d) for m in ZOO[n].factory().modules())]

# "Well under ~8 KB" of a 16 KB Cortex-M0: what the m0-sized nets must stay within.
M0_ACTIVATION_BYTES = 6 * 1024
M0_WEIGHT_FLOATS = 4096
ORT_RELATIVE_TOLERANCE = 1e-5


class Artefacts:
    """Each zoo model built, exported to ONNX and .pt2 once per test module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[str, nn.Module] = {}
        self._onnx: dict[str, Path] = {}
        self._onnx_bn: dict[str, Path] = {}
        self._pt2: dict[str, Path] = {}

    def model(self, name: str) -> nn.Module:
        if name not in self._models:
            self._models[name] = ZOO[name].build(seed=0)
        return self._models[name]

    def onnx(self, name: str) -> Path:
        if name not in self._onnx:
            self._onnx[name] = export_onnx(self.model(name), ZOO[name].input_shape, self.root / f"{name}.onnx")
        return self._onnx[name]

    def onnx_with_batchnorm(self, name: str) -> Path:
        if name not in self._onnx_bn:
            path = self.root / f"{name}.bn.onnx"
            self._onnx_bn[name] = export_onnx(self.model(name), ZOO[name].input_shape, path, keep_batchnorm=True)
        return self._onnx_bn[name]

    def pt2(self, name: str) -> Path:
        if name not in self._pt2:
            self._pt2[name] = export_pt2(self.model(name), ZOO[name].input_shape, self.root / f"{name}.pt2")
        return self._pt2[name]

    def program(self, name: str) -> torch.export.ExportedProgram:
        return torch.export.load(str(self.pt2(name)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Pin torch to one thread so float results do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    return Artefacts(tmp_path_factory.mktemp("zoo"))


def _peak_activation_bytes(program: torch.export.ExportedProgram) -> int:
    """Largest sum of live intermediate tensor bytes over the exported graph, in execution order.

    Weights and buffers are not counted; tuple elements (getitem) are aliases of their producer.
    Views are counted as copies, so this is an upper bound of what a planner needs.
    """
    weights = set(program.graph_signature.inputs_to_parameters) | set(program.graph_signature.inputs_to_buffers)
    nodes = [n for n in program.graph.nodes if n.name not in weights]
    order = {n: i for i, n in enumerate(nodes)}

    def root(node):
        while node.op == "call_function" and "getitem" in str(node.target):
            node = node.args[0]
        return node

    size: dict = {}
    last_use: dict = {}
    for node in nodes:
        val = node.meta.get("val")
        tensors = val if isinstance(val, (list, tuple)) else [val]
        if node.op != "output" and "getitem" not in str(node.target):
            size[node] = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
            last_use[node] = order[node]
        for arg in node.all_input_nodes:
            if arg in order:
                r = root(arg)
                last_use[r] = max(last_use[r], order[node])
    peak = 0
    for i in range(len(nodes)):
        live = sum(b for n, b in size.items() if order[n] <= i <= last_use[n])
        peak = max(peak, live)
    return peak


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


def test_zoo_holds_the_required_networks():
    assert len(ZOO) >= 12
    assert {"resnet8", "mobilenetv2_tiny", "darts_cells"} <= set(ZOO)
    assert len(M0_NAMES) >= 3, f"need at least three Cortex-M0-sized nets, have {M0_NAMES}"
    for name, entry in ZOO.items():
        assert isinstance(entry, ZooEntry) and entry.name == name
        assert entry.description
        assert len(entry.input_shape) == 4 and entry.input_shape[0] == 1


def test_list_zoo_is_sorted_and_filters_m0():
    assert [e.name for e in list_zoo()] == NAMES
    assert all(e.m0_sized for e in list_zoo(m0_only=True))
    assert {e.name for e in list_zoo(m0_only=True)} == {n for n in NAMES if ZOO[n].m0_sized}


def test_get_entry_unknown_name_names_the_known_ones():
    assert get_entry("resnet8") is ZOO["resnet8"]
    with pytest.raises(ModelLoadError, match="no zoo model 'resnet9'.*resnet8"):
        get_entry("resnet9")


def test_zoo_covers_the_required_layer_kinds():
    """Across the zoo: kernels 1/3/5/7, strides 1/2, padding 0 and >0, dilation, groups, depthwise, ..."""
    convs = []
    kinds: set[type] = set()
    for name in NAMES:
        for m in ZOO[name].factory().modules():
            kinds.add(type(m))
            if isinstance(m, nn.Conv2d):
                convs.append(m)
    assert {c.kernel_size[0] for c in convs} >= {1, 3, 5, 7}
    assert {c.stride[0] for c in convs} >= {1, 2}
    assert {c.padding[0] for c in convs} >= {0, 1, 2, 3}
    assert any(c.dilation[0] > 1 for c in convs)
    assert any(1 < c.groups < c.in_channels for c in convs), "no grouped (non-depthwise) conv"
    assert any(c.groups == c.in_channels == c.out_channels > 1 for c in convs), "no depthwise conv"
    required = {
        nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d,
        nn.AdaptiveAvgPool2d, nn.Linear, nn.Flatten, nn.Softmax,
    }
    assert required <= kinds, f"missing {required - kinds}"


def test_resnet8_is_the_mlperf_tiny_network():
    entry = ZOO["resnet8"]
    model = entry.build()
    assert entry.input_shape == (1, 3, 32, 32)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert widths == [16, 16, 16, 32, 32, 64, 64]
    # Keras' count of the MLPerf Tiny reference (trainable + BN moving statistics).
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert params + stats == 78_666
    assert model(entry.sample_input()).shape == (1, 10)


def test_darts_cells_is_the_searchs_network_with_four_nodes_summing_two_ops():
    model = ZOO["darts_cells"].build()
    cells = [m for m in model.modules() if isinstance(m, DartsCell)]
    assert len(cells) == 3 and [c.reduction for c in cells] == [False, True, False]
    for cell in cells:
        assert len(cell.edges) == 8
        assert all(0 <= i < 2 + k // 2 for k, i in enumerate(cell.sources))
    ops = {type(m) for cell in cells for m in cell.modules()}
    assert {SepConv, DilConv, FactorizedReduce, PoolBN, nn.Identity} <= ops


def test_mobilenetv2_tiny_is_the_searchs_chain_network():
    model = ZOO["mobilenetv2_tiny"].build()
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17 and sum(b.has_residual for b in blocks) == 11


# ---------------------------------------------------------------------------------------------
# Every model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_model_runs_in_eval_mode_and_outputs_probabilities(name: str, artefacts: Artefacts):
    model = artefacts.model(name)
    assert not model.training
    y = model(ZOO[name].sample_input())
    assert y.shape == (1, 10) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert torch.allclose(y.sum(), torch.tensor(1.0), atol=1e-5)
    assert y.max() < 0.99, "output saturated: weights too large to test numerics"


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_per_seed(name: str):
    entry = ZOO[name]
    x = entry.sample_input()
    a, b, c = entry.build(seed=3), entry.build(seed=3), entry.build(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ZOO["m0_cnn"].build(seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", BN_NAMES)
def test_batchnorm_parameters_are_nontrivial(name: str, artefacts: Artefacts):
    for bn in (m for m in artefacts.model(name).modules() if isinstance(m, nn.BatchNorm2d)):
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert (bn.running_var > 0).all()
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))


def _assert_onnxruntime_matches(name: str, path: Path, model: nn.Module) -> None:
    onnx.checker.check_model(onnx.load(str(path)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and tuple(inp.shape) == ZOO[name].input_shape
    for seed in (0, 1):
        x = ZOO[name].sample_input(seed)
        expected = model(x).numpy()
        (got,) = session.run(["output"], {"input": x.numpy()})
        err = float(np.abs(got - expected).max())
        scale = float(np.abs(expected).max())
        assert err <= ORT_RELATIVE_TOLERANCE * scale, f"{name}: max abs err {err:.3g} vs output scale {scale:.3g}"


def _onnx_op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_onnxruntime(name: str, artefacts: Artefacts):
    _assert_onnxruntime_matches(name, artefacts.onnx(name), artefacts.model(name))


@pytest.mark.parametrize("name", BN_NAMES)
def test_onnx_export_keeping_batchnorm_matches_onnxruntime(name: str, artefacts: Artefacts):
    path = artefacts.onnx_with_batchnorm(name)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in artefacts.model(name).modules())
    assert _onnx_op_types(path).count("BatchNormalization") == bns
    _assert_onnxruntime_matches(name, path, artefacts.model(name))


def test_default_onnx_export_folds_batchnorm_into_conv(artefacts: Artefacts):
    assert "BatchNormalization" not in _onnx_op_types(artefacts.onnx("resnet8"))


@pytest.mark.parametrize("name", NAMES)
def test_pt2_export_reloads_and_matches(name: str, artefacts: Artefacts):
    program = artefacts.program(name)
    x = ZOO[name].sample_input(1)
    assert torch.equal(program.module()(x), artefacts.model(name)(x))


@pytest.mark.parametrize("name", NAMES)
def test_relax_imports_exported_program(name: str, artefacts: Artefacts):
    mod = from_exported_program(artefacts.program(name))
    assert relax.analysis.check_well_formed(mod)
    assert "main" in [gv.name_hint for gv in mod.functions]


@pytest.mark.parametrize("name", NAMES)
def test_relax_imports_onnx(name: str, artefacts: Artefacts):
    mod = from_onnx(onnx.load(str(artefacts.onnx(name))))
    assert relax.analysis.check_well_formed(mod)
    (inp,) = mod["main"].params
    assert inp.name == "input"
    assert tuple(int(d) for d in inp.ty.shape) == ZOO[name].input_shape


@pytest.mark.parametrize("name", BN_NAMES)
def test_relax_imports_onnx_with_batchnorm(name: str, artefacts: Artefacts):
    mod = from_onnx(onnx.load(str(artefacts.onnx_with_batchnorm(name))))
    assert relax.analysis.check_well_formed(mod)
    assert "batch_norm" in mod["main"].script()


@pytest.mark.parametrize("name", M0_NAMES)
def test_m0_sized_model_fits_a_cortex_m0(name: str, artefacts: Artefacts):
    weights = sum(p.numel() for p in artefacts.model(name).parameters())
    assert weights <= M0_WEIGHT_FLOATS, f"{name}: {weights} float weights > {M0_WEIGHT_FLOATS}"
    peak = _peak_activation_bytes(artefacts.program(name))
    assert peak <= M0_ACTIVATION_BYTES, f"{name}: {peak} activation bytes > {M0_ACTIVATION_BYTES}"


def test_peak_activation_estimate_counts_live_tensors():
    """A 4-channel 8x8 conv with a residual add keeps input, skip and output alive: 3 x 1 KB."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return x + y

    program = torch.export.export(Residual().eval(), (sample_input((1, 4, 8, 8)),))
    assert _peak_activation_bytes(program) == 3 * 4 * 8 * 8 * 4


@pytest.mark.slow
def test_zoo_covers_residual_add_concat_and_reshape(artefacts: Artefacts):
    """Slow alone (exports the whole zoo); cheap after the .pt2 tests above have filled the cache."""
    targets: set[str] = set()
    for name in NAMES:
        targets |= {str(n.target) for n in artefacts.program(name).graph.nodes if n.op == "call_function"}
    assert "aten.add.Tensor" in targets
    assert "aten.cat.default" in targets
    assert "aten.mul.Tensor" in targets
    assert targets & {"aten.reshape.default", "aten.view.default"}
    assert "aten.transpose.int" in targets
