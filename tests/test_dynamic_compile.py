"""One C artifact for K sub-networks: shared weights, per-config call sequences and arenas, switching."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from tvmnas.dynamic.compile import compile_dynamic
from tvmnas.dynamic.subnet import extract_subnet
from tvmnas.dynamic.supernet import DynamicSupernet, StageSpec, SubnetConfig, SupernetSpec, largest, smallest
from tvmnas.dynamic.train import recalibrate
from tvmnas.errors import BudgetExceededError, TvmnasError
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target

SPEC = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 2, 1), StageSpec(12, 1, 2)), width_fractions=(0.5, 1.0),
                    kernels=(3, 5), expands=(2, 3))
MIDDLE = SubnetConfig(8, (4, 12), (2, 1), (5, 3, 3), (2, 3, 2))


@pytest.fixture(scope="module")
def family():
    """Three sub-networks of one untrained super-network, each with its own BN statistics."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = DynamicSupernet(SPEC)
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    subnets = []
    for config in (smallest(SPEC), MIDDLE, largest(SPEC)):
        recalibrate(net, config, x)
        subnets.append(extract_subnet(net, config))
    return net, subnets


@pytest.fixture(scope="module")
def bundle(family, tmp_path_factory):
    net, subnets = family
    out = tmp_path_factory.mktemp("dyn") / "bundle"
    result = compile_dynamic(subnets, net.shared_tensors(), SPEC.input_shape, load_target("cortex-m4"), out,
                             accuracies=[0.5, 0.6, 0.7], cycles=[100, 200, 300])
    return out, result.manifest


def _inputs(n: int) -> list[np.ndarray]:
    return list(np.random.default_rng(1).standard_normal((n, 1, 8, 8)).astype(np.float32))


def _reference(subnets, configs, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        return [subnets[k](torch.from_numpy(x[None])).numpy().ravel() for k, x in zip(configs, inputs)]


@pytest.mark.slow
def test_manifest_has_per_config_arenas_and_weights_once(bundle):
    out, m = bundle
    assert m["num_configs"] == 3 and len(m["configs"]) == 3
    arenas = [c["arena_bytes"] for c in m["configs"]]
    assert m["arena_bytes"] == max(arenas) and arenas[0] < arenas[2]
    assert m["shared_weights_bytes"] + m["private_weights_bytes"] == m["weights_bytes"]
    assert m["weights_bytes"] < m["separate_weights_bytes"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["flash_bytes"] == m["flash_bytes"] > 0
    header = (out / "model.h").read_text()
    assert "#define MODEL_NUM_CONFIGS 3" in header and "int model_set_config(int k);" in header
    assert f"#define MODEL_ARENA_SIZE {m['arena_bytes']}" in header
    source = (out / "model.c").read_text()
    assert re.search(r"model_arena_sizes\[MODEL_NUM_CONFIGS\] = \{(\d+)u, (\d+)u, (\d+)u\}", source).groups() == \
        tuple(str(a) for a in arenas)


def test_each_configuration_names_the_source_layer_of_its_calls(bundle):
    out, m = bundle
    source = (out / "model.c").read_text()
    for k in range(m["num_configs"]):
        body = source.split(f"static int model_run_c{k}(")[1].split("\n}\n")[0]
        assert "/* 0 stem.0: conv2d" in body
        assert re.search(r"/\* \d+ blocks\.0\.depthwise\.0: conv2d", body)
        assert re.search(r"/\* \d+ fc: matmul", body)


@pytest.mark.slow
def test_every_shared_weight_array_is_stored_once(bundle):
    out, m = bundle
    weights = (out / "model_weights.c").read_text()
    arrays = re.findall(r"^const float (model_\w+)\[", weights, re.M)
    assert len(arrays) == len(set(arrays))
    shared = [a for a in arrays if a.startswith("model_shared_")]
    assert "model_shared_blocks_0_expand_weight" in shared and "model_shared_fc_weight_T" in shared
    # only BN scale/shift vectors are per configuration
    assert all(re.fullmatch(r"model_c\d_w\d+_\d+", a) for a in arrays if a not in shared)


@pytest.mark.slow
def test_host_build_switches_configs_mid_stream_and_matches_pytorch(family, bundle):
    _, subnets = family
    out, _ = bundle
    exe = build_host(out, out.parent / "host")
    configs = [0, 2, 1, 1, 0, 2, 2, 1, 0]
    inputs = _inputs(len(configs))
    got = run_host(exe, inputs, configs=configs)
    for y, ref in zip(got, _reference(subnets, configs, inputs)):
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_out_of_range_config_is_refused(bundle):
    out, _ = bundle
    exe = build_host(out, out.parent / "host2")
    with pytest.raises(TvmnasError, match="config index out of range"):
        run_host(exe, _inputs(1), configs=[3])


@pytest.mark.slow
@pytest.mark.ci
def test_qemu_one_process_switches_through_all_configs_several_times(family, bundle):
    _, subnets = family
    out, m = bundle
    target = load_target("cortex-m4")
    elf = build(out, target, out.parent / "qemu")
    configs = [0, 1, 2, 2, 1, 0, 1, 0, 2, 0, 2, 1]
    inputs = [_inputs(1)[0]] * len(configs)
    result = run(elf, target, inputs, configs=configs, timeout_s=120)
    assert result.configs == configs
    for y, ref in zip(result.outputs, _reference(subnets, configs, inputs)):
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    per_config: dict[int, set[int]] = {}
    for k, n in zip(configs, result.instructions):
        per_config.setdefault(k, set()).add(n)
    counts = {k: min(v) for k, v in per_config.items()}
    assert counts[0] < counts[1] < counts[2]
    # same input, same configuration: the count does not depend on what ran before (switching is free)
    assert all(max(v) - min(v) < 1000 for v in per_config.values())


@pytest.mark.slow
@pytest.mark.ci
def test_size_bundle_shares_kernels_that_the_speed_bundle_keeps_apart(family, bundle):
    net, subnets = family
    out, size = bundle
    speed = compile_dynamic(subnets, net.shared_tensors(), SPEC.input_shape, load_target("cortex-m4"),
                            out.parent / "speed", optimize="speed").manifest
    assert size["optimize"] == "size" and speed["optimize"] == "speed"
    assert len(size["kernels"]) < len(speed["kernels"]) and size["flash_bytes"] < speed["flash_bytes"]
    for folder in (out, out.parent / "speed"):
        headers = re.findall(r"^.*\bvoid \w+\(const float.*$", (folder / "model.c").read_text(), re.M)
        assert headers and all("noinline, noclone" in h for h in headers)


def test_no_subnetworks_is_an_error(tmp_path):
    with pytest.raises(TvmnasError, match="at least one sub-network"):
        compile_dynamic([], {}, SPEC.input_shape, load_target("cortex-m4"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_over_budget_leaves_no_output(family, tmp_path):
    net, subnets = family
    tiny = dataclasses.replace(load_target("cortex-m4"), flash_bytes=1000)
    with pytest.raises(BudgetExceededError, match="1,000 bytes"):
        compile_dynamic(subnets[:1], net.shared_tensors(), SPEC.input_shape, tiny, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
