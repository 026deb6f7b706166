"""The measured cost model: candidate layers priced by their own emulator run at the search's exact
shapes, kept in the profile database, selectable as search_cost_model('measured')."""

from types import SimpleNamespace

import pytest
import torch

from tvmnas.cost import candidates
from tvmnas.cost.measured import MeasuredCostModel
from tvmnas.errors import CostModelError, TvmnasError
from tvmnas.measure.store import ProfileDB
from tvmnas.pipeline import PipelineSettings, search_cost_model
from tvmnas.search.chain_supernet import ChainSupernet
from tvmnas.search.cost import CostTerm, MacCostModel
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.targets import load_target

torch.set_num_threads(1)

# Equal MACs (25,600): a 3x3 depthwise + 1x1 project block and a dense 1x1 convolution, 8x8 input.
BLOCK = LayerSpec("mb_k3_e1", 16, 16, 8, 8, 1, kernel=3, expand=1)
DENSE = LayerSpec("conv_bn_relu6", 25, 16, 8, 8, 1, kernel=1)


def _fake_emulator(monkeypatch, calls):
    """measure_network replaced by a count: every kernel 'takes' 3 cycles per MAC + 100."""

    def fake(prepared, target, build_dir, **_kw):
        calls.append(prepared.bundle_dir)
        kernels = [SimpleNamespace(instructions=k.macs + 50, cycles=3 * k.macs + 100) for k in prepared.kernels]
        return SimpleNamespace(kernels=kernels)

    monkeypatch.setattr(candidates, "measure_network", fake)  # the one place candidates are measured


def test_second_model_on_the_same_database_measures_nothing(tmp_path, monkeypatch):
    calls = []
    _fake_emulator(monkeypatch, calls)
    target = load_target("cortex-m4")
    lines = []
    first = MeasuredCostModel(target, tmp_path / "p.sqlite", progress=lines.append)
    priced = first.price([BLOCK, DENSE])
    assert first.stats == {"measured": 2, "cached": 0} and len(calls) == 2
    assert lines[0].startswith("1/2 layer mb_k3_e1 ") and lines[1].startswith("2/2 layer conv_bn_relu6 ")
    assert "measured" in lines[0]
    with ProfileDB(tmp_path / "p.sqlite") as db:
        assert db.counts()[1] == 2 and all(r.precision == "int8" for r in db.kernels())
    second = MeasuredCostModel(target, tmp_path / "p.sqlite", progress=None)
    assert second.price([BLOCK, DENSE]) == priced
    assert second.stats == {"measured": 0, "cached": 2} and len(calls) == 2
    # another precision is another key: measured again
    MeasuredCostModel(target, tmp_path / "p.sqlite", precision="float32", progress=None).price([BLOCK])
    assert len(calls) == 3


def test_int8_bytes_and_skip_cost_nothing(tmp_path, monkeypatch):
    calls = []
    _fake_emulator(monkeypatch, calls)
    model = MeasuredCostModel(load_target("cortex-m4"), tmp_path / "p.sqlite", progress=None)
    cost = model.layer_cost(DENSE)
    counts = MacCostModel().count(DENSE)
    assert float(cost.param_bytes) == counts.params and float(cost.act_bytes) == counts.act_elems
    skip = model.layer_cost(LayerSpec("skip", 16, 16, 8, 8, 1))
    assert float(skip.cycles) == 0.0 and len(calls) == 1


def test_cost_term_prices_every_candidate_in_one_batch():
    class Batched(MacCostModel):
        batches: list = []

        def price(self, specs):
            self.batches.append(list(specs))

        def layer_cost(self, spec):
            assert self.batches, "priced one by one before the batch"
            return super().layer_cost(spec)

    net = ChainSupernet((1, 8, 8), 10, layers=((8, 1), (16, 2)))
    model = Batched()
    CostTerm(net.cost_slots(), model)
    assert model.batches == [[s for slot in net.cost_slots() for s in slot.candidates]]


def test_search_cost_model_selects_measured(tmp_path):
    target = load_target("cortex-m4")
    model, note = search_cost_model("measured", target, precision="int8", db_path=tmp_path / "p.sqlite")
    assert isinstance(model, MeasuredCostModel) and model.precision == "int8"
    assert model.name == "measured-int8-cortex-m4" and "int8" in note and str(tmp_path / "p.sqlite") in note
    assert not (tmp_path / "p.sqlite").exists()  # nothing is written before the search prices layers
    assert PipelineSettings(cost_model="measured").cost_model == "measured"


def test_auto_prices_an_int8_build_with_the_measured_cost(tmp_path):
    """'auto' searches for what is deployed: an int8 build gets the int8 measured cost, float32 keeps
    the learned (or MAC) cost, and without a database int8 'auto' cannot measure."""
    target = load_target("cortex-m4")
    model, note = search_cost_model("auto", target, precision="int8", db_path=tmp_path / "p.sqlite")
    assert isinstance(model, MeasuredCostModel) and model.precision == "int8" and "int8 build" in note
    model, _ = search_cost_model("auto", target, precision="float32", db_path=tmp_path / "p.sqlite")
    assert not isinstance(model, MeasuredCostModel)
    model, _ = search_cost_model("auto", target, precision="int8")
    assert not isinstance(model, MeasuredCostModel)


@pytest.mark.parametrize("call, words", [
    (lambda t, p: search_cost_model("bogus", t), "unknown cost model 'bogus' (expected one of auto, mac, measured)"),
    (lambda t, p: search_cost_model("measured", t, precision="int8"), "needs a profile database path"),
    (lambda t, p: search_cost_model("measured", t, precision="int4", db_path=p),
     "measured cost precision 'int4' is not one of float32, int8"),
    (lambda t, p: PipelineSettings(cost_model="bogus"), "unknown cost model 'bogus' (expected one of auto, mac, "
                                                        "measured)"),
])
def test_selection_errors_are_one_line(tmp_path, call, words):
    with pytest.raises(TvmnasError) as err:
        call(load_target("cortex-m4"), tmp_path / "p.sqlite")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_a_database_is_refused_when_pricing(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("my notes\n")
    model = MeasuredCostModel(load_target("cortex-m4"), bad, progress=None)
    with pytest.raises(TvmnasError, match="profile database .*not a"):
        model.price([DENSE])
    assert bad.read_text() == "my notes\n"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """Both layers measured on QEMU as int8 into one database (the path, the model)."""
    db = tmp_path_factory.mktemp("measured") / "p.sqlite"
    model = MeasuredCostModel(load_target("cortex-m4"), db, progress=None)
    model.price([BLOCK, DENSE])
    return db, model


@pytest.mark.slow
@pytest.mark.ci
def test_equal_macs_priced_apart_by_their_int8_cycles(emulated):
    _db, model = emulated
    block, dense = float(model.layer_cost(BLOCK).cycles), float(model.layer_cost(DENSE).cycles)
    assert MacCostModel().count(BLOCK).macs == MacCostModel().count(DENSE).macs == 25_600
    # the depthwise block costs far more per MAC in int8 than a dense 1x1 convolution (SIMD)
    assert block > 1.3 * dense > 0
    assert model.stats == {"measured": 2, "cached": 0}


@pytest.mark.slow
def test_emulated_measurements_are_reused(emulated, monkeypatch):
    db, model = emulated
    again = MeasuredCostModel(load_target("cortex-m4"), db, progress=None)

    def refuse(*_a, **_kw):
        raise AssertionError("measured again")

    monkeypatch.setattr(candidates, "measure_network", refuse)
    assert again.price([BLOCK, DENSE]) == model.price([BLOCK, DENSE])
    assert again.stats == {"measured": 0, "cached": 2}


def test_cli_search_names_an_unknown_cost_model_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tvmnas", "search", "--cost-model", "bogus", "--epochs", "1",
                           "--limit-train", "64", "--out", str(tmp_path / "s"), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown cost model 'bogus' (expected one of auto, mac, measured)" in proc.stderr.strip().splitlines()[-1]
