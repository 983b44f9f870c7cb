"""Training the member-batched nets: per-member clipping and minibatches, early stopping, cancel, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quantcrew.ml_server.services.ensemble import fit as ensemble_fit
from quantcrew.ml_server.services.ensemble.fit import TrainConfig, train_net
from quantcrew.ml_server.services.ensemble.nets import (
    ARCHITECTURES,
    MemberNet,
    NetConfig,
    build_net,
    member_logits,
    net_state,
)

_SMALL = {"members": 2, "n_features": 4, "window": 8, "hidden": 16, "heads": 2}


def _small(arch: str, **overrides: object) -> NetConfig:
    return NetConfig.from_dict({"arch": arch, **_SMALL, **overrides})


def _windows(n: int, seed: int, *, window: int = 8, features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Class = sign of the mean of feature 0 over the window, with a flat band around 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, window, features)).astype(np.float32)
    mean = x[:, :, 0].mean(axis=1)
    y = np.where(mean < -0.15, 0, np.where(mean > 0.15, 2, 1)).astype(np.int64)
    return x, y


def _mean_member_nll(net: MemberNet, x: np.ndarray, y: np.ndarray) -> float:
    logits = member_logits(net, torch.from_numpy(x))
    labels = torch.from_numpy(y)
    return float(np.mean([F.cross_entropy(member, labels).item() for member in logits]))


def test_gradient_clipping_is_per_member() -> None:
    net = build_net(_small("lstm"), seed=0)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
        p.grad[0].fill_(1e-4)  # member 0: tiny norm, must be left alone
        p.grad[1].fill_(10.0)  # member 1: huge norm, clipped to 1
    ensemble_fit._clip_per_member(params, 1.0)
    assert all(torch.all(p.grad[0] == 1e-4) for p in params if p.grad is not None)
    norm1 = torch.stack([(p.grad[1] ** 2).sum() for p in params if p.grad is not None]).sum().sqrt()
    assert float(norm1) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("patience", 0),
                                              ("weight_decay", -1.0), ("seed", -1)])
def test_train_config_bad_values_raise(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


# --- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def separable() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train = _windows(2000, seed=0)
    x_val, y_val = _windows(500, seed=1)
    return x_train, y_train, x_val, y_val


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_net_learns_separable_problem(
    arch: str, separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x_train, y_train, x_val, y_val = separable
    net = build_net(_small(arch), seed=0)
    seen: list[tuple[int, int, float, float]] = []
    history = train_net(net, x_train, y_train, x_val, y_val,
                        TrainConfig(epochs=8, batch_size=64, lr=1e-2, patience=8, seed=0),
                        on_epoch=lambda *a: seen.append(a))
    assert not net.training
    accuracy = (member_logits(net, torch.from_numpy(x_val)).argmax(-1).numpy() == y_val).mean(axis=1)
    assert accuracy.min() > 0.85, accuracy
    assert history.epochs_run == len(history.val_loss) == len(history.train_loss) == len(seen) == 8
    assert [s[:2] for s in seen] == [(e, 8) for e in range(1, 9)]
    assert min(history.val_loss) < history.val_loss[0]
    assert not history.cancelled


def test_train_net_early_stopping_restores_best(
    separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_val, y_val = separable
    x_train, y_train = x_train[:600], y_train[:600]
    net = build_net(_small("lstm"), seed=0)
    # a learning rate this high overfits / oscillates quickly, so patience 1 triggers
    history = train_net(net, x_train, y_train, x_val, y_val,
                        TrainConfig(epochs=40, batch_size=32, lr=3e-2, patience=1, seed=0))
    assert history.stopped_early
    assert history.epochs_run < 40
    assert history.best_epoch == int(np.argmin(history.val_loss)) + 1
    assert history.best_epoch < history.epochs_run
    assert _mean_member_nll(net, x_val, y_val) == pytest.approx(min(history.val_loss), abs=1e-5)


def test_train_net_is_deterministic_given_seed(
    separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_val, y_val = separable
    states = []
    for seed in (4, 4, 5):
        net = build_net(_small("transformer", dropout=0.2), seed=0)
        train_net(net, x_train[:300], y_train[:300], x_val[:100], y_val[:100],
                  TrainConfig(epochs=1, batch_size=64, seed=seed))
        states.append(net_state(net))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_train_net_members_see_different_minibatches(
    separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_val, y_val = separable
    # identical initial weights in both members (copied), no dropout: only the row order can make them differ
    net = build_net(_small("lstm", dropout=0.0), seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p[1].copy_(p[0])
    train_net(net, x_train[:256], y_train[:256], x_val[:64], y_val[:64],
              TrainConfig(epochs=1, batch_size=32, seed=0))
    assert any(not torch.equal(p[0], p[1]) for p in net.parameters())


def test_train_net_should_stop_cancels_and_keeps_initial_weights(
    separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_val, y_val = separable
    net = build_net(_small("lstm"), seed=0)
    initial = net_state(net)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    history = train_net(net, x_train, y_train, x_val, y_val, TrainConfig(epochs=5, batch_size=64), should_stop=stop)
    assert history.cancelled
    assert history.epochs_run == 0
    assert calls["n"] == 4  # checked before every minibatch, stopped at the fourth
    assert all(torch.equal(initial[k], v) for k, v in net_state(net).items())
    assert not net.training


def test_train_net_cancel_mid_epoch_keeps_best_finished_epoch(
    separable: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_val, y_val = separable
    x_train, y_train = x_train[:512], y_train[:512]
    net = build_net(_small("transformer"), seed=0)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 8 + 3  # 8 minibatches per epoch: cancel 3 batches into the second epoch

    history = train_net(net, x_train, y_train, x_val, y_val, TrainConfig(epochs=5, batch_size=64, lr=1e-2),
                        should_stop=stop)
    assert history.cancelled
    assert history.epochs_run == 1
    assert _mean_member_nll(net, x_val, y_val) == pytest.approx(history.val_loss[0], abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x_train": np.zeros((10, 8, 5), np.float32)}, "x_train"),
        ({"y_train": np.full(10, 3)}, "y_train"),
        ({"y_train": np.zeros(9, np.int64)}, "y_train"),
        ({"y_val": np.zeros(4, np.float32)}, "y_val"),
        ({"x_val": np.full((4, 8, 4), np.nan, np.float32)}, "x_val"),
        ({"x_val": np.zeros((0, 8, 4), np.float32), "y_val": np.zeros(0, np.int64)}, "x_val"),
    ],
)
def test_train_net_bad_arrays_raise(kwargs: dict[str, np.ndarray], match: str) -> None:
    arrays: dict[str, np.ndarray] = {
        "x_train": np.zeros((10, 8, 4), np.float32),
        "y_train": np.zeros(10, np.int64),
        "x_val": np.zeros((4, 8, 4), np.float32),
        "y_val": np.zeros(4, np.int64),
    }
    arrays.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_net(build_net(_small("lstm"), seed=0), arrays["x_train"], arrays["y_train"], arrays["x_val"],
                  arrays["y_val"], TrainConfig(epochs=1))
