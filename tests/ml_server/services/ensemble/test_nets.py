"""Member-batched nets: one pass equals the member loop, members are independent, MC dropout, save and load."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from quantcrew.ml_server.services.ensemble import nets as ensemble_nets
from quantcrew.ml_server.services.ensemble.nets import (
    ARCHITECTURES,
    NetConfig,
    build_net,
    load_net,
    mc_dropout_logits,
    member_logits,
    member_loop_logits,
    net_state,
)

_SMALL = {"members": 2, "n_features": 4, "window": 8, "hidden": 16, "heads": 2}


def _small(arch: str, **overrides: object) -> NetConfig:
    return NetConfig.from_dict({"arch": arch, **_SMALL, **overrides})


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
