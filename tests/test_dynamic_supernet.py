"""Super-network: nested sub-networks, static extraction, BN recalibration, sandwich training."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tvmnas.dynamic.subnet import ChannelAffine, bn_as_affine, extract_subnet
from tvmnas.dynamic.supernet import (
    DynamicSupernet,
    StageSpec,
    SubnetConfig,
    SupernetSpec,
    block_shapes,
    largest,
    sample,
    smallest,
    validate,
)
from tvmnas.dynamic.train import SupernetTrainConfig, finetune_selected, recalibrate, sandwich_step
from tvmnas.errors import GenotypeError

SPEC = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 2, 1), StageSpec(12, 1, 2)), width_fractions=(0.5, 1.0),
                    kernels=(3, 5), expands=(2, 3))


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is fastest on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net() -> DynamicSupernet:
    torch.manual_seed(0)
    return DynamicSupernet(SPEC)


def _images(n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def test_largest_and_smallest_are_valid_and_differ():
    big, small = largest(SPEC), smallest(SPEC)
    assert validate(SPEC, big) == big
    assert small.widths == (4, 8) and small.depths == (1, 1)
    assert [s.c_out for s in block_shapes(SPEC, big)] == [8, 8, 12]
    assert [s.residual for s in block_shapes(SPEC, big)] == [False, True, False]


def test_validate_rejects_a_width_outside_the_choices():
    bad = SubnetConfig(8, (7, 12), (2, 1), (3, 3, 3), (2, 2, 2))
    with pytest.raises(GenotypeError, match="stage 0 width 7"):
        validate(SPEC, bad)


def test_config_and_spec_round_trip_through_dicts():
    config = sample(SPEC, random.Random(3))
    assert SubnetConfig.from_dict(config.to_dict()) == config
    assert SupernetSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(GenotypeError, match="unknown keys"):
        SupernetSpec.from_dict(SPEC.to_dict() | {"bogus": 1})


@pytest.mark.parametrize("pick", ["smallest", "largest", "random"])
def test_extracted_subnet_computes_what_the_supernet_computes(pick):
    net = _net()
    config = {"smallest": smallest(SPEC), "largest": largest(SPEC), "random": sample(SPEC, random.Random(1))}[pick]
    x = _images()
    recalibrate(net, config, x)
    sub = extract_subnet(net, config)
    with torch.no_grad():
        np.testing.assert_allclose(sub(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x), config).numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_subnet_weights_are_nested_slices_of_the_shared_tensors():
    net = _net()
    config = smallest(SPEC)
    sub = extract_subnet(net, config)
    shared = net.shared_tensors()
    dw = sub.blocks[0].depthwise[0].weight.detach().numpy()         # 3x3 cut from the 5x5 centre
    np.testing.assert_array_equal(dw, shared["blocks.0.depthwise.weight"][: dw.shape[0], :, 1:4, 1:4])
    np.testing.assert_array_equal(sub.fc.weight.detach().numpy(), shared["fc.weight"][:, : sub.fc.in_features])


def test_recalibration_gives_each_config_its_own_statistics():
    net = _net()
    x = _images(64)
    recalibrate(net, smallest(SPEC), x, batch_size=64, max_batches=1)
    small_mean = net.stem_bn.running_mean[:4].clone()
    with torch.no_grad():
        stem = torch.nn.functional.conv2d(torch.from_numpy(x), net.stem.weight[:4], padding=1)
    torch.testing.assert_close(small_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    recalibrate(net, largest(SPEC), x, batch_size=64, max_batches=1)
    sub_small = extract_subnet(net, smallest(SPEC))
    # the largest config's deeper blocks see different inputs, so their statistics change
    assert not torch.allclose(net.blocks[1].expand_bn.running_mean[:8], torch.zeros(8))
    assert sub_small.stem[1].running_mean.shape == (4,)


def test_bn_as_affine_keeps_outputs_and_removes_batchnorm():
    net = _net()
    config = largest(SPEC)
    x = _images()
    recalibrate(net, config, x)
    sub = extract_subnet(net, config)
    with torch.no_grad():
        before = sub(torch.from_numpy(x)).numpy()
        affine = bn_as_affine(sub)
        after = affine(torch.from_numpy(x)).numpy()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in affine.modules())
    assert any(isinstance(m, ChannelAffine) for m in affine.modules())
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("label_weight", [0.0, 0.5])
def test_sandwich_training_lowers_the_losses_of_large_and_small_subnets(label_weight):
    torch.manual_seed(0)
    net = _net()
    x = torch.from_numpy(_images(64))
    y = torch.arange(64) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = random.Random(0)

    def losses():
        net.train()
        with torch.no_grad():
            big = torch.nn.functional.cross_entropy(net(x, largest(SPEC)), y)
            small = torch.nn.functional.cross_entropy(net(x, smallest(SPEC)), y)
        return float(big), float(small)

    big0, small0 = losses()
    for _ in range(15):
        opt.zero_grad()
        sandwich_step(net, x, y, largest(SPEC), [smallest(SPEC), sample(SPEC, rng)], label_weight)
        opt.step()
    big1, small1 = losses()
    assert big1 < 0.7 * big0
    assert small1 < small0


def test_finetuning_the_chosen_subnets_lowers_their_losses_and_keeps_weights_nested():
    net = _net()
    x = _images(128, seed=1)
    y = np.arange(128) % 10
    chosen = [smallest(SPEC), sample(SPEC, random.Random(3))]

    def loss(config):
        net.train()
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net(torch.from_numpy(x), config), torch.from_numpy(y)))

    before = [loss(c) for c in [largest(SPEC), *chosen]]
    history = finetune_selected(net, largest(SPEC), chosen, x, y, SupernetTrainConfig(batch_size=32), epochs=3)
    after = [loss(c) for c in [largest(SPEC), *chosen]]
    assert len(history) == 3
    assert all(a < b for a, b in zip(after, before)), (before, after)
    # still one set of shared weights: the small config reads a slice of the fine-tuned tensors
    sub = extract_subnet(net, smallest(SPEC))
    torch.testing.assert_close(sub.stem[0].weight, net.stem.weight[:sub.stem[0].weight.shape[0], :, :, :])
