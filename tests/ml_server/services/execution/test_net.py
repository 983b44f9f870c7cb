"""Execution network: architecture, seeded weights, storage round trips, MC-dropout sampling."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from quantcrew.ml_server.services.execution.inputs import (
    EXECUTION_INPUTS,
)
from quantcrew.ml_server.services.execution.net import (
    ExecutionConfig,
    ExecutionNet,
    build_execution_net,
    execution_state,
    load_execution_net,
    sample_plans,
)

D = len(EXECUTION_INPUTS)


@pytest.fixture(scope="module")
def net() -> ExecutionNet:
    return load_execution_net(ExecutionConfig(), execution_state(build_execution_net(ExecutionConfig(), seed=3)))


@pytest.fixture(scope="module")
def x4() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(4, D)).astype(np.float32)


# --- market inputs ------------------------------------------------------------------------------


def test_execution_config_round_trips_through_json() -> None:
    cfg = ExecutionConfig(hidden=(32, 16, 8), dropout=0.1)
    assert ExecutionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ExecutionConfig().n_inputs == D


def test_execution_config_from_dict_names_bad_keys() -> None:
    with pytest.raises(ValueError, match="layers"):
        ExecutionConfig.from_dict({"layers": [3], "hidden": [4]})
    with pytest.raises(ValueError, match="dropout"):
        ExecutionConfig.from_dict({"dropout": 1.5})
    with pytest.raises(ValueError, match="hidden"):
        ExecutionConfig.from_dict({"hidden": []})


def test_forward_gives_size_logit_and_two_timing_logits(net: ExecutionNet, x4: np.ndarray) -> None:
    size_logit, timing_logits = net(torch.as_tensor(x4))
    assert size_logit.shape == (4,) and timing_logits.shape == (4, 2)
    kinds = [type(m) for m in net.body]
    assert kinds == [nn.Linear, nn.ReLU, type(net.body[2])] * 2
    assert all(isinstance(net.body[i], nn.Dropout) for i in (2, 5))


def test_build_execution_net_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a, b = build_execution_net(ExecutionConfig(), 5), build_execution_net(ExecutionConfig(), 5)
    c = build_execution_net(ExecutionConfig(), 6)
    assert torch.equal(torch.get_rng_state(), before)
    for k, v in execution_state(a).items():
        assert torch.equal(v, execution_state(b)[k])
    assert not torch.equal(execution_state(a)["body.0.weight"], execution_state(c)["body.0.weight"])


def test_load_execution_net_round_trip_is_exact(x4: np.ndarray) -> None:
    cfg = ExecutionConfig(hidden=(16, 8))
    original = build_execution_net(cfg, 9).eval()
    state = execution_state(original)
    loaded = load_execution_net(cfg, state)
    assert not loaded.training
    assert state.keys() == loaded.state_dict().keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k])
    with torch.no_grad():
        for got, want in zip(loaded(torch.as_tensor(x4)), original(torch.as_tensor(x4)), strict=True):
            assert torch.equal(got, want)


def test_load_execution_net_rejects_a_state_that_does_not_fit() -> None:
    cfg = ExecutionConfig(hidden=(16, 8))
    state = execution_state(build_execution_net(cfg, 0))
    with pytest.raises(ValueError, match="wrong shape"):
        load_execution_net(ExecutionConfig(hidden=(16, 9)), state)
    missing = dict(state)
    del missing["head.bias"]
    with pytest.raises(ValueError, match="head.bias"):
        load_execution_net(cfg, missing)
    with pytest.raises(ValueError, match="extra"):
        load_execution_net(cfg, {**state, "extra": torch.zeros(1)})


# --- MC-dropout sampling ----------------------------------------------------------------------


def test_sample_plans_shapes_ranges_and_spread(net: ExecutionNet, x4: np.ndarray) -> None:
    plans = sample_plans(net, x4, 30, seed=1)
    assert plans.size.shape == plans.wait_prob.shape == (30, 4)
    for a in (plans.size, plans.wait_prob):
        assert np.all((a >= 0.0) & (a <= 1.0))
        assert np.all(a.std(axis=0) > 0.0)  # dropout was active: draws differ
        assert len(np.unique(a[:, 0])) == 30


def test_sample_plans_same_seed_same_draws_even_after_global_reseed(net: ExecutionNet, x4: np.ndarray) -> None:
    a = sample_plans(net, x4, 20, seed=11)
    torch.manual_seed(123)
    torch.rand(17)
    b = sample_plans(net, x4, 20, seed=11)
    c = sample_plans(net, x4, 20, seed=12)
    assert np.array_equal(a.size, b.size) and np.array_equal(a.wait_prob, b.wait_prob)
    assert not np.array_equal(a.size, c.size)
    before = torch.get_rng_state()
    sample_plans(net, x4, 5, seed=3)
    assert torch.equal(torch.get_rng_state(), before)


def test_sample_plans_runs_one_batched_forward_pass(net: ExecutionNet, x4: np.ndarray) -> None:
    rows: list[int] = []
    handle = net.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    try:
        sample_plans(net, x4, 50, seed=0)
    finally:
        handle.remove()
    assert rows == [50 * 4]


def test_sample_plans_keeps_eval_mode_and_clears_dropout_even_on_error(net: ExecutionNet, x4: np.ndarray) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    handle = net.head.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            sample_plans(net, x4, 8, seed=0)
    finally:
        handle.remove()
    assert not any(m.training for m in net.modules())
    sample_plans(net, x4, 8, seed=0)
    assert not any(m.training for m in net.modules())
    with torch.no_grad():  # a plain call afterwards is deterministic: dropout is off again
        assert torch.equal(net(torch.as_tensor(x4))[0], net(torch.as_tensor(x4))[0])


def test_sample_plans_rows_are_draw_major() -> None:
    deterministic = build_execution_net(ExecutionConfig(dropout=0.0), 2).eval()
    x = np.random.default_rng(0).normal(size=(3, D)).astype(np.float32)
    plans = sample_plans(deterministic, x, 4, seed=0)
    with torch.no_grad():
        size_logit, timing_logits = deterministic(torch.as_tensor(x))
    want_size = torch.sigmoid(size_logit).numpy()
    want_wait = torch.softmax(timing_logits, dim=1)[:, 1].numpy()
    for s in range(4):
        np.testing.assert_allclose(plans.size[s], want_size, rtol=1e-6)
        np.testing.assert_allclose(plans.wait_prob[s], want_wait, rtol=1e-6)


def test_sample_plans_concurrent_calls_match_sequential_ones(net: ExecutionNet, x4: np.ndarray) -> None:
    want = {seed: sample_plans(net, x4, 16, seed=seed).size for seed in range(8)}
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda s: (s, sample_plans(net, x4, 16, seed=s).size), list(range(8)) * 5))
    for seed, size in got:
        assert np.array_equal(size, want[seed])


def test_sample_plans_rejects_bad_arguments(net: ExecutionNet, x4: np.ndarray) -> None:
    for samples in (0, -3):
        with pytest.raises(ValueError, match="samples"):
            sample_plans(net, x4, samples)
    with pytest.raises(ValueError, match="shape"):
        sample_plans(net, x4[:, :-1], 5)
    with pytest.raises(ValueError, match="shape"):
        sample_plans(net, x4[0], 5)
