"""Member-batched nets: one pass equals the member loop, members are independent, training learns."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quantcrew.ml_server.services import ensemble_nets
from quantcrew.ml_server.services.ensemble_nets import (
    ARCHITECTURES,
    MemberNet,
    NetConfig,
    TrainConfig,
    build_net,
    load_net,
    mc_dropout_logits,
    member_logits,
    member_loop_logits,
    net_state,
    train_net,
)

_SMALL = {"members": 2, "n_features": 4, "window": 8, "hidden": 16, "heads": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small nets run faster (and reproducibly) on one intra-op thread, especially on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# --- one pass == the loop -----------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_member_logits_equal_loop_default_size(arch: str, layers: int) -> None:
    net = build_net(NetConfig(arch, layers=layers), seed=3)
    x = torch.randn(64, 32, 16, generator=torch.Generator().manual_seed(0))
    batched = member_logits(net, x)
    looped = member_loop_logits(net, x)
    assert batched.shape == (4, 64, 3)
    assert looped.shape == (4, 64, 3)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0.0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_member_logits_per_member_batches_go_to_their_member(arch: str) -> None:
    net = build_net(_small(arch, members=3), seed=1)
    x = torch.randn(3, 5, 8, 4, generator=torch.Generator().manual_seed(1))
    out = member_logits(net, x)
    assert out.shape == (3, 5, 3)
    for m in range(3):
        # member m on its own batch == member m when every member sees that batch
        torch.testing.assert_close(out[m], member_logits(net, x[m])[m], atol=1e-5, rtol=0.0)
    torch.testing.assert_close(out, member_loop_logits(net, x), atol=1e-5, rtol=0.0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_member_logits_shorter_window_accepted(arch: str) -> None:
    net = build_net(_small(arch), seed=0)
    out = member_logits(net, torch.randn(2, 5, 4))
    assert out.shape == (2, 2, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_large_batches_go_in_blocks_with_same_result(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net = build_net(_small(arch, dropout=0.0), seed=2)
    x = torch.randn(13, 8, 4)
    x4 = torch.randn(2, 13, 8, 4)
    whole, whole4 = member_logits(net, x), member_logits(net, x4)
    mc_whole = mc_dropout_logits(net, x, 3, member=1, seed=0)
    monkeypatch.setattr(ensemble_nets, "_MAX_PASS_ROWS", 8)  # 4 rows per pass for 2 members, 2 for 3 samples
    torch.testing.assert_close(member_logits(net, x), whole, atol=1e-5, rtol=0.0)
    torch.testing.assert_close(member_logits(net, x4), whole4, atol=1e-5, rtol=0.0)
    torch.testing.assert_close(mc_dropout_logits(net, x, 3, member=1, seed=0), mc_whole, atol=1e-5, rtol=0.0)


@pytest.mark.parametrize(
    ("arch", "shape", "match"),
    [
        ("lstm", (2, 8, 5), "features"),
        ("lstm", (3, 2, 8, 4), "member batches"),
        ("lstm", (8, 4), r"\(B, T, F\)"),
        ("transformer", (2, 9, 4), "window"),
    ],
)
def test_member_logits_bad_shape_raises(arch: str, shape: tuple[int, ...], match: str) -> None:
    net = build_net(_small(arch), seed=0)
    with pytest.raises(ValueError, match=match):
        member_logits(net, torch.randn(*shape))


# --- members: distinct, independent, reproducible ----------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_parameter_has_leading_member_axis(arch: str) -> None:
    net = build_net(_small(arch, members=3, layers=2), seed=0)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes
    assert all(s[0] == 3 for s in shapes.values()), shapes


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_members_differ_by_initialisation(arch: str) -> None:
    net = build_net(_small(arch), seed=0)
    out = member_logits(net, torch.randn(16, 8, 4))
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    for p in net.parameters():
        if p.dim() == 3:  # weight matrices (layer norms start at 1 / 0 in every member)
            assert not torch.equal(p[0], p[1])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_build_net_same_seed_identical_other_seed_different(arch: str) -> None:
    a, b, c = (net_state(build_net(_small(arch), seed=s)) for s in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_member_gradients_do_not_cross(arch: str) -> None:
    net = build_net(_small(arch, layers=2), seed=0).train()
    x = torch.randn(2, 6, 8, 4)
    logits = net(x)
    F.cross_entropy(logits[0], torch.tensor([0, 1, 2, 0, 1, 2])).backward()  # type: ignore[no-untyped-call]
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad[1]) == 0, f"member 1's {name} got a gradient from member 0's loss"
    assert any(torch.count_nonzero(p.grad[0]) > 0 for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_member_output_ignores_other_members_weights(arch: str) -> None:
    net = build_net(_small(arch), seed=0)
    x = torch.randn(4, 8, 4)
    before = member_logits(net, x)
    with torch.no_grad():
        for p in net.parameters():
            p[1].add_(torch.randn_like(p[1]))
    after = member_logits(net, x)
    torch.testing.assert_close(after[0], before[0], atol=0.0, rtol=0.0)
    assert not torch.allclose(after[1], before[1])


def test_gradient_clipping_is_per_member() -> None:
    net = build_net(_small("lstm"), seed=0)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
        p.grad[0].fill_(1e-4)  # member 0: tiny norm, must be left alone
        p.grad[1].fill_(10.0)  # member 1: huge norm, clipped to 1
    ensemble_nets._clip_per_member(params, 1.0)
    assert all(torch.all(p.grad[0] == 1e-4) for p in params if p.grad is not None)
    norm1 = torch.stack([(p.grad[1] ** 2).sum() for p in params if p.grad is not None]).sum().sqrt()
    assert float(norm1) == pytest.approx(1.0, rel=1e-4)


# --- MC dropout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_mc_dropout_samples_differ_and_seed_repeats(arch: str) -> None:
    net = build_net(_small(arch, dropout=0.3), seed=0)
    x = torch.randn(5, 8, 4)
    a = mc_dropout_logits(net, x, 30, member=1, seed=11)
    b = mc_dropout_logits(net, x, 30, member=1, seed=11)
    c = mc_dropout_logits(net, x, 30, member=1, seed=12)
    assert a.shape == (30, 5, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a[0], a[1])  # dropout is active: every sample its own masks
    assert not net.training


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_mc_dropout_uses_the_requested_member(arch: str) -> None:
    net = build_net(_small(arch, dropout=0.0), seed=0)  # no dropout: every sample is the member itself
    x = torch.randn(5, 8, 4)
    samples = mc_dropout_logits(net, x, 3, member=1, seed=0)
    expected = member_logits(net, x)[1]
    for s in range(3):
        torch.testing.assert_close(samples[s], expected, atol=1e-5, rtol=0.0)


def test_mc_dropout_leaves_train_mode_alone_and_one_sample_works() -> None:
    net = build_net(_small("lstm"), seed=0)
    out = mc_dropout_logits(net, torch.randn(4, 8, 4), 1, seed=0)
    assert out.shape == (1, 4, 3)
    assert not net.training
    net.train()
    mc_dropout_logits(net, torch.randn(4, 8, 4), 2, seed=0)
    assert net.training  # the caller's mode is the caller's


@pytest.mark.parametrize(("samples", "member"), [(0, 0), (-3, 0), (2, 2), (2, -1)])
def test_mc_dropout_bad_arguments_raise(samples: int, member: int) -> None:
    net = build_net(_small("transformer"), seed=0)
    with pytest.raises(ValueError, match="samples" if samples < 1 else "member"):
        mc_dropout_logits(net, torch.randn(4, 8, 4), samples, member=member)


def test_forward_dropout_only_in_train_mode() -> None:
    net = build_net(_small("lstm", dropout=0.5), seed=0)
    x = torch.randn(8, 8, 4)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


# --- state round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_load_net_reproduces_logits_exactly(arch: str) -> None:
    config = _small(arch, layers=2)
    net = build_net(config, seed=5)
    buffer = io.BytesIO()
    torch.save(net_state(net), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    loaded = load_net(NetConfig.from_dict(config.to_dict()), state)
    assert not loaded.training
    x = torch.randn(6, 8, 4)
    assert torch.equal(member_logits(loaded, x), member_logits(net, x))


def test_net_state_is_detached_cpu_clones() -> None:
    net = build_net(_small("lstm"), seed=0)
    state = net_state(net)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in state.values())
    next(iter(state.values())).add_(1.0)
    assert not torch.equal(next(iter(state.values())), next(iter(net.state_dict().values())))


@pytest.mark.parametrize(
    "other",
    [
        {"hidden": 8},
        {"members": 3},
        {"layers": 2},
        {"arch": "transformer"},
    ],
)
def test_load_net_wrong_config_raises(other: dict[str, object]) -> None:
    config = _small("lstm")
    state = net_state(build_net(config, seed=0))
    with pytest.raises(ValueError, match="does not fit"):
        load_net(replace(config, **other), state)  # type: ignore[arg-type]


def test_load_net_missing_or_foreign_entries_raise() -> None:
    config = _small("transformer")
    state = net_state(build_net(config, seed=0))
    missing = dict(state)
    missing.pop("head.bias")
    with pytest.raises(ValueError, match="head.bias"):
        load_net(config, missing)
    with pytest.raises(ValueError, match="not tensors"):
        load_net(config, {**state, "head.bias": [0.0, 1.0]})  # type: ignore[dict-item]


# --- config -------------------------------------------------------------------------------------


def test_net_config_round_trips_through_dict() -> None:
    config = NetConfig("transformer", members=2, hidden=24, heads=3, dropout=0.2)
    assert NetConfig.from_dict(config.to_dict()) == config
    assert NetConfig.from_dict({"arch": "lstm", "dropout": 0}).dropout == 0.0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"arch": "gru"}, "arch"),
        ({"members": 4}, "arch"),
        ({"arch": "lstm", "hiden": 32}, "hiden"),
        ({"arch": "lstm", "members": 0}, "members"),
        ({"arch": "lstm", "window": 2.5}, "window"),
        ({"arch": "lstm", "dropout": 1.0}, "dropout"),
        ({"arch": "lstm", "n_classes": 1}, "n_classes"),
        ({"arch": "transformer", "hidden": 30, "heads": 4}, "heads"),
    ],
)
def test_net_config_from_dict_bad_input_names_it(data: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NetConfig.from_dict(data)


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
