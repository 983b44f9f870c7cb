"""Execution network: causal inputs, hand-checked labels, MC-dropout sampling, training, storage."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from quantcrew.ml_server.services.execution_inputs import (
    EXECUTION_INPUTS,
)
from quantcrew.ml_server.services.execution_net import (
    ExecTrainConfig,
    ExecutionConfig,
    ExecutionNet,
    build_execution_net,
    execution_state,
    load_execution_net,
    sample_plans,
    summarize,
    train_execution_net,
)

D = len(EXECUTION_INPUTS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread: these nets are tiny, and extra threads only fight over a loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_summarize_known_samples() -> None:
    samples = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [5.0, 10.0]])
    s = summarize(samples, level=0.5)
    np.testing.assert_allclose(s.mean, [3.0, 10.0])
    np.testing.assert_allclose(s.std, [math.sqrt(2.0), 0.0])
    np.testing.assert_allclose(s.lower, [2.0, 10.0])
    np.testing.assert_allclose(s.upper, [4.0, 10.0])
    wide = summarize(np.arange(101.0)[:, None], level=0.9)
    assert wide.lower[0] == pytest.approx(5.0) and wide.upper[0] == pytest.approx(95.0)
    for level in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match="level"):
            summarize(samples, level)


# --- training ---------------------------------------------------------------------------------


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled inputs; size falls with vol and rises with confidence; wait when ret_1 is high."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    x[:, 0] = rng.choice([-1.0, 1.0], n)
    x[:, 1] = rng.uniform(0.34, 1.0, n)
    conf, vol, ret_1 = x[:, 1], x[:, EXECUTION_INPUTS.index("vol_10")], x[:, EXECUTION_INPUTS.index("ret_1")]
    size = np.clip(1.5 * (conf - 0.4) - 0.25 * vol, 0.0, 1.0).astype(np.float32)
    timing = (ret_1 > 0.3).astype(np.int64)
    return x, size, timing


def test_train_execution_net_learns_size_and_timing() -> None:
    xt, st, tt = _synthetic(2000, 0)
    xv, sv, tv = _synthetic(500, 1)
    net = build_execution_net(ExecutionConfig(hidden=(32, 32), dropout=0.1), 0)
    epochs: list[tuple[int, int, float, float]] = []
    hist = train_execution_net(net, xt, st, tt, xv, sv, tv, ExecTrainConfig(epochs=25, batch_size=128, lr=3e-3),
                               on_epoch=lambda *a: epochs.append(a))
    baseline_mae = float(np.abs(sv - st.mean()).mean())
    assert hist.size_mae < 0.4 * baseline_mae
    assert hist.timing_accuracy > 0.93
    assert [e[0] for e in epochs] == list(range(1, hist.epochs_run + 1))
    assert all(e[1] == 25 for e in epochs)
    assert hist.val_loss[hist.best_epoch - 1] == min(hist.val_loss)
    assert not net.training and not hist.cancelled
    json.dumps(hist.to_dict())


def test_train_execution_net_is_deterministic_and_leaves_global_rng_alone() -> None:
    xt, st, tt = _synthetic(400, 2)
    xv, sv, tv = _synthetic(100, 3)
    cfg = ExecTrainConfig(epochs=3, batch_size=64, seed=4)
    before = torch.get_rng_state()
    a, b = build_execution_net(ExecutionConfig(), 1), build_execution_net(ExecutionConfig(), 1)
    ha = train_execution_net(a, xt, st, tt, xv, sv, tv, cfg)
    torch.manual_seed(99)
    hb = train_execution_net(b, xt, st, tt, xv, sv, tv, cfg)
    assert ha == hb
    for k, v in execution_state(a).items():
        assert torch.equal(v, execution_state(b)[k])
    torch.manual_seed(99)
    c = build_execution_net(ExecutionConfig(), 1)
    train_execution_net(c, xt, st, tt, xv, sv, tv, ExecTrainConfig(epochs=3, batch_size=64, seed=5))
    assert not torch.equal(execution_state(a)["head.weight"], execution_state(c)["head.weight"])
    torch.set_rng_state(before)


def test_train_execution_net_stops_early_and_restores_best_weights() -> None:
    rng = np.random.default_rng(5)
    xt, xv = rng.normal(size=(300, D)), rng.normal(size=(300, D))  # pure noise: val loss soon rises
    st, sv = rng.uniform(size=300), rng.uniform(size=300)
    tt, tv = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    net = build_execution_net(ExecutionConfig(hidden=(128, 128), dropout=0.0), 0)
    hist = train_execution_net(net, xt, st, tt, xv, sv, tv,
                               ExecTrainConfig(epochs=200, batch_size=32, lr=1e-2, weight_decay=0.0, patience=2))
    assert hist.stopped_early and hist.epochs_run < 200
    assert hist.epochs_run == hist.best_epoch + 2
    with torch.no_grad():
        size_logit, timing_logits = net(torch.as_tensor(xv, dtype=torch.float32))
        loss = F.binary_cross_entropy_with_logits(size_logit, torch.as_tensor(sv, dtype=torch.float32)) \
            + F.cross_entropy(timing_logits, torch.as_tensor(tv))
    assert float(loss) == pytest.approx(min(hist.val_loss), rel=1e-5)


def test_train_execution_net_cancels_between_minibatches() -> None:
    xt, st, tt = _synthetic(640, 6)
    xv, sv, tv = _synthetic(64, 7)
    net = build_execution_net(ExecutionConfig(), 0)
    initial = execution_state(net)
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 13  # 10 minibatches per epoch: stop in the second epoch

    hist = train_execution_net(net, xt, st, tt, xv, sv, tv, ExecTrainConfig(epochs=10, batch_size=64),
                               should_stop=stop)
    assert hist.cancelled and hist.epochs_run == 1 and hist.best_epoch == 1 and calls == 14
    assert not torch.equal(execution_state(net)["head.weight"], initial["head.weight"])

    fresh = build_execution_net(ExecutionConfig(), 0)
    hist = train_execution_net(fresh, xt, st, tt, xv, sv, tv, ExecTrainConfig(), should_stop=lambda: True)
    assert hist.cancelled and hist.epochs_run == 0 and hist.best_epoch == 0
    assert torch.equal(execution_state(fresh)["head.weight"], initial["head.weight"])


def test_train_execution_net_rejects_bad_data() -> None:
    xt, st, tt = _synthetic(50, 8)
    net = build_execution_net(ExecutionConfig(), 0)
    with pytest.raises(ValueError, match="train"):
        train_execution_net(net, xt[:, :-1], st, tt, xt, st, tt, ExecTrainConfig(epochs=1))
    with pytest.raises(ValueError, match="validation"):
        train_execution_net(net, xt, st, tt, xt, st + 2.0, tt, ExecTrainConfig(epochs=1))
    with pytest.raises(ValueError, match="epochs"):
        ExecTrainConfig(epochs=0)
