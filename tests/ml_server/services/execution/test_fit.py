"""Training the execution network: it learns, is deterministic, stops early, cancels, refuses bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from quantcrew.ml_server.services.execution.fit import ExecTrainConfig, train_execution_net
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.net import ExecutionConfig, build_execution_net, execution_state

D = len(EXECUTION_INPUTS)


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
