"""Genotype: printing, exact JSON round trip, strict parsing, networkx graph."""

import json

import pytest
import torch

from tvmnas.errors import GenotypeError
from tvmnas.search.chain_supernet import ChainSupernet
from tvmnas.search.darts_supernet import DartsSupernet
from tvmnas.search.genotype import CellEdge, CellGenotype, ChainLayer, Genotype


def _derived(space: str) -> Genotype:
    torch.manual_seed(3)
    if space == "darts":
        net = DartsSupernet((1, 8, 8), 10, channels=8, cells=3, nodes=3)
    else:
        net = ChainSupernet((1, 8, 8), 10)
    return net.derive()[0]


@pytest.mark.parametrize("space", ["darts", "chain"])
def test_json_round_trip_is_exact(space, tmp_path):
    g = _derived(space)
    text = g.to_json()
    back = Genotype.from_json(text)
    assert back == g and back.to_json() == text
    g.save(tmp_path / "genotype.json")
    assert Genotype.load(tmp_path / "genotype.json") == g
    assert space in str(g)


def test_darts_genotype_fields_and_graph():
    g = _derived("darts")
    assert g.normal is not None and g.normal.nodes == 3 and g.reduction_cells == (1, 2)
    assert all(e.op != "none" for e in g.normal.edges + g.reduce.edges)
    graph = g.to_networkx()
    # each cell kind: 2 inputs + 3 nodes + out; 6 op edges + 3 concat edges
    assert graph.number_of_nodes() == 2 * 6 and graph.number_of_edges() == 2 * 9
    assert graph.edges["normal/n0", "normal/out"]["op"] == "concat"


def test_chain_genotype_graph_is_a_path():
    g = Genotype("chain", (1, 8, 8), 10, 8, layers=(ChainLayer("mb_k3_e6", 8, 1), ChainLayer("skip", 8, 1)))
    graph = g.to_networkx()
    assert list(graph.successors("l0")) == ["l1"] and graph.edges["l0", "l1"]["op"] == "skip"


def test_unknown_keys_and_ops_are_errors():
    g = _derived("chain")
    d = json.loads(g.to_json())
    d["kernel_sizes"] = [3]
    with pytest.raises(GenotypeError, match="unknown keys: kernel_sizes"):
        Genotype.from_dict(d)
    with pytest.raises(GenotypeError, match="unknown op 'mb_k9_e6'"):
        Genotype("chain", (1, 8, 8), 10, 8, layers=(ChainLayer("mb_k9_e6", 8, 1),))
    cell = CellGenotype((CellEdge("none", 0), CellEdge("skip_connect", 1)), (2,))
    with pytest.raises(GenotypeError, match="'none'"):
        Genotype("darts", (1, 8, 8), 10, 8, cells=1, normal=cell, reduce=cell)
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("{")


def test_search_writes_the_graph_beside_the_genotype(tmp_path):
    import networkx as nx

    from tvmnas.data import load_dataset
    from tvmnas.search.search import SearchConfig, search

    result = search(load_dataset("digits", limit_train=64, limit_test=16), tmp_path,
                    SearchConfig(space="chain", epochs=1, batch_size=32))
    graph = nx.read_graphml(tmp_path / "genotype.graphml")
    assert graph.number_of_edges() == len(result.genotype.layers) + 2
    assert Genotype.load(tmp_path / "genotype.json") == result.genotype
