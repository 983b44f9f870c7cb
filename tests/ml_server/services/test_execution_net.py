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

from quantcrew.ml_server.services.execution_net import (
    EXECUTION_INPUTS,
    MARKET_WARMUP,
    STRATEGIC_INPUTS,
    ExecTrainConfig,
    ExecutionConfig,
    ExecutionNet,
    InputScaler,
    build_execution_net,
    execution_state,
    execution_targets,
    load_execution_net,
    market_inputs,
    sample_plans,
    summarize,
    train_execution_net,
)

D = len(EXECUTION_INPUTS)


def _bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n))
    volume = rng.lognormal(12.0, 0.5, n)
    return open_, high, low, close, volume


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


def test_market_inputs_have_six_columns_and_nan_warmup() -> None:
    o, h, lo, c, v = _bars(200, 1)
    out = market_inputs(o, h, lo, c, v)
    assert out.shape == (200, 6) == (200, D - STRATEGIC_INPUTS)
    assert np.isnan(out[:MARKET_WARMUP]).all()
    assert np.isfinite(out[MARKET_WARMUP:]).all()
    assert not np.allclose(out[MARKET_WARMUP:, 5], 0.0)
    assert np.array_equal(market_inputs(o, h, lo, c, None)[MARKET_WARMUP:, 5], np.zeros(200 - MARKET_WARMUP))


def test_market_inputs_match_direct_formulas() -> None:
    o, h, lo, c, v = _bars(150, 2)
    out = market_inputs(o, h, lo, c, v)
    r = np.diff(np.log(c))  # r[s - 1] is the return of bar s
    lv = np.log1p(v)
    for t in (MARKET_WARMUP, 97, 149):
        vol_10, vol_60 = np.std(r[t - 10 : t]), np.std(r[t - 60 : t])
        window = lv[t - 19 : t + 1]
        expected = [np.log(c[t] / c[t - 1]), np.log(c[t] / c[t - 5]), vol_10, vol_10 / vol_60,
                    (h[t] - lo[t]) / c[t], (lv[t] - window.mean()) / window.std()]
        np.testing.assert_allclose(out[t], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t", [MARKET_WARMUP, MARKET_WARMUP + 1, 88, 140])
def test_market_inputs_row_t_unchanged_when_later_bars_change(t: int) -> None:
    o, h, lo, c, v = _bars(160, 5)
    full = market_inputs(o, h, lo, c, v)
    rng = np.random.default_rng(t)
    later = slice(t + 1, None)
    c2, o2, v2 = c.copy(), o.copy(), v.copy()
    c2[later] *= np.exp(rng.normal(0.0, 0.05, c.shape[0] - t - 1))
    o2[later] *= 1.03
    v2[later] *= 7.0
    h2, lo2 = np.maximum(h, np.maximum(o2, c2)) * 1.01, np.minimum(lo, np.minimum(o2, c2)) * 0.99
    h2[: t + 1], lo2[: t + 1] = h[: t + 1], lo[: t + 1]
    changed = market_inputs(o2, h2, lo2, c2, v2)
    truncated = market_inputs(o[: t + 1], h[: t + 1], lo[: t + 1], c[: t + 1], v[: t + 1])
    assert np.array_equal(changed[: t + 1], full[: t + 1], equal_nan=True)
    assert np.array_equal(truncated, full[: t + 1], equal_nan=True)
    assert not np.array_equal(changed[t + 1 :], full[t + 1 :])


def test_market_inputs_reject_ragged_or_non_positive_prices() -> None:
    o, h, lo, c, v = _bars(80, 6)
    with pytest.raises(ValueError, match="one length"):
        market_inputs(o, h, lo, c[:-1], v)
    bad = c.copy()
    bad[10] = 0.0
    with pytest.raises(ValueError, match="close"):
        market_inputs(o, h, lo, bad, v)
    with pytest.raises(ValueError, match="volume"):
        market_inputs(o, h, lo, c, -v)


# --- labels ------------------------------------------------------------------------------------


def _hand_path() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """80 bars: alternating +-1% returns up to bar 65, then a known path; opens at the previous close."""
    n = 80
    r = np.where(np.arange(n) % 2 == 0, 0.01, -0.01)
    r[0] = 0.0
    close = 100.0 * np.exp(np.cumsum(r))
    close[70] = close[65] * 1.03  # buy at 65, +3% over 5 bars
    open_ = np.concatenate([[close[0]], close[:-1]])
    open_[67] = close[66] * 0.99  # gap down 100 bps after the buy at 66: waiting pays
    open_[69] = close[68] * 1.0005  # gap up 5 bps after the sell at 68: under the 10 bps bar
    open_[72] = close[71] * 1.002  # gap up 20 bps after the sell at 71: waiting pays
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    return open_, high, low, close


def test_execution_targets_on_hand_built_path() -> None:
    o, h, lo, c = _hand_path()
    signal = np.zeros(c.shape[0])
    signal[[65, 66, 68, 71]] = [1.0, 1.0, -1.0, -1.0]
    size, timing, valid = execution_targets(o, h, lo, c, signal, horizon=5, wait_bps=10.0, risk_multiple=2.0)

    vol_65 = np.std(np.diff(np.log(c))[55:65])  # returns of bars 56..65
    assert vol_65 == pytest.approx(0.01, rel=1e-9)
    assert size[65] == pytest.approx(0.03 / (2.0 * vol_65 * math.sqrt(5.0)), rel=1e-12)
    assert 0.0 < size[65] < 1.0
    assert timing[65] == 0  # the next open is the close: no better fill
    assert timing[66] == 1  # a buy, gap down 100 bps
    assert timing[68] == 0  # a sell, gap up only 5 bps
    assert timing[71] == 1  # a sell, gap up 20 bps
    sell_move = -(c[73] / c[68] - 1.0) / (2.0 * np.std(np.diff(np.log(c))[58:68]) * math.sqrt(5.0))
    assert size[68] == pytest.approx(np.clip(sell_move, 0.0, 1.0), abs=1e-12)
    flat = (signal == 0) & valid
    assert flat.sum() > 5
    assert np.all(size[flat] == 0.0) and np.all(timing[flat] == 0)
    assert not valid[:MARKET_WARMUP].any()
    assert valid[MARKET_WARMUP : c.shape[0] - 5].all()
    assert not valid[-5:].any()
    assert np.all(size[~valid] == 0.0) and np.all(timing[~valid] == 0)


def test_execution_targets_size_clips_to_zero_and_one() -> None:
    o, h, lo, c = _hand_path()
    signal = np.zeros(c.shape[0])
    signal[65] = -1.0  # a sell before a 3% rise: size 0
    size, _, _ = execution_targets(o, h, lo, c, signal)
    assert size[65] == 0.0
    signal[65] = 1.0
    size, _, _ = execution_targets(o, h, lo, c, signal, risk_multiple=0.1)  # tiny risk unit: full size
    assert size[65] == 1.0


def test_execution_targets_reject_bad_signal_and_parameters() -> None:
    o, h, lo, c = _hand_path()
    with pytest.raises(ValueError, match="signal"):
        execution_targets(o, h, lo, c, np.full(c.shape[0], 2.0))
    with pytest.raises(ValueError, match="horizon"):
        execution_targets(o, h, lo, c, np.zeros(c.shape[0]), horizon=0)
    nan_signal = np.zeros(c.shape[0])
    nan_signal[70] = np.nan
    assert not execution_targets(o, h, lo, c, nan_signal)[2][70]


# --- config and scaler ------------------------------------------------------------------------


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


def test_input_scaler_passes_strategic_columns_and_standardises_market_ones() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=(500, D))
    x[:, -1] = 4.0  # a constant column: centred, never divided by ~0
    scaler = InputScaler.fit(x)
    z = scaler.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(scaler.mean[:STRATEGIC_INPUTS], 0.0)
    np.testing.assert_array_equal(scaler.std[:STRATEGIC_INPUTS], 1.0)
    np.testing.assert_allclose(z[:, :STRATEGIC_INPUTS], x[:, :STRATEGIC_INPUTS], rtol=1e-6)
    np.testing.assert_allclose(z[:, STRATEGIC_INPUTS:-1].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, STRATEGIC_INPUTS:-1].std(axis=0), 1.0, rtol=1e-5)
    assert scaler.std[-1] == 1.0 and np.all(z[:, -1] == 0.0)
    again = InputScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert np.array_equal(again.mean, scaler.mean) and np.array_equal(again.std, scaler.std)


def test_input_scaler_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        InputScaler.fit(np.full((3, D), np.nan))
    scaler = InputScaler.fit(np.ones((3, D)))
    with pytest.raises(ValueError, match="shape"):
        scaler.transform(np.ones((3, D - 1)))
    with pytest.raises(ValueError, match="std"):
        InputScaler.from_dict({"mean": [0.0], "std": [0.0]})
    with pytest.raises(ValueError, match="mean"):
        InputScaler.from_dict({"std": [1.0]})


# --- network, storage -----------------------------------------------------------------------


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
