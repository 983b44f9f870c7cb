"""Member-batched LSTM and Transformer ensembles: one forward pass for every member.

An ensemble of ``M`` members is one module whose parameters all carry a leading member
dimension (weights ``(M, in, out)`` applied with ``einsum`` / ``bmm`` / ``baddbmm``, layer norms
``(M, d)``), so every member runs in one vectorised pass and training the ensemble is training
one model whose loss is the sum of the members' losses. Members share no parameter, and both
AdamW and the gradient clipping act per member, so no member's update depends on another
member's weights or loss. They differ by their initial weights (drawn in turn from one seeded generator) and by
their minibatch order (each member its own permutation of the training rows every epoch).

Dropout draws its masks from an explicit ``torch.Generator`` and is switched on per call
rather than by putting the module in train mode: MC dropout never changes the net's mode, so
one loaded net can serve inference and MC dropout from several threads, and a seed fixes the
samples.

Inputs are windows ``(B, T, F)`` shared by every member, or ``(M, B, T, F)`` with one batch
per member; logits come back as ``(M, B, C)``. The layers live in
:mod:`~quantcrew.ml_server.services.ensemble.layers`, the training loop in
:mod:`~quantcrew.ml_server.services.ensemble.fit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
from torch import Tensor, nn

from quantcrew.ml_server.services.ensemble.layers import (
    EncoderBlock,
    LSTMLayer,
    MemberLayerNorm,
    MemberLinear,
    apply_dropout,
)

__all__ = [
    "ALL_MEMBERS",
    "ARCHITECTURES",
    "LSTMNet",
    "MemberNet",
    "NetConfig",
    "TransformerNet",
    "build_net",
    "load_net",
    "mc_dropout_logits",
    "member_logits",
    "member_loop_logits",
    "net_state",
]

ARCHITECTURES: tuple[str, ...] = ("lstm", "transformer")
ALL_MEMBERS = slice(None)
"""The member selection meaning every member."""

_MAX_PASS_ROWS = 16_384  # windows (members or samples x rows) per inference pass, to bound memory


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a member-batched net (stored with its weights in the registry).

    Attributes:
        arch: ``lstm`` or ``transformer``.
        members: Ensemble members ``M`` (1 for an MC-dropout net).
        n_features: Features per bar ``F``.
        window: Bars per window ``T`` (the transformer's positional table has this length).
        hidden: LSTM hidden size / transformer ``d_model``.
        layers: LSTM layers / transformer encoder blocks.
        heads: Attention heads (transformer only); ``hidden`` must be a multiple of it.
        dropout: Dropout rate in [0, 1).
        n_classes: Output classes ``C``.
    """

    arch: str
    members: int = 4
    n_features: int = 16
    window: int = 32
    hidden: int = 32
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    n_classes: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHITECTURES:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHITECTURES)}")
        for name in ("members", "n_features", "window", "hidden", "layers", "heads"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("n_classes", self.n_classes, minimum=2)
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {rate!r}")
        object.__setattr__(self, "dropout", float(rate))
        if self.arch == "transformer" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NetConfig:
        """Rebuild a config from :meth:`to_dict` output.

        Raises:
            ValueError: an unknown or missing key, or a bad value (the message names it).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a NetConfig needs a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown NetConfig key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "arch" not in d:
            raise ValueError("NetConfig key 'arch' is missing")
        return cls(**dict(d))


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class MemberNet(nn.Module):
    """Base of the member-batched nets: ``forward`` maps windows to logits ``(M, B, C)``.

    Dropout is on in ``forward`` when the module is in train mode; :func:`member_logits`,
    :func:`mc_dropout_logits` and the training loop choose it per call instead.

    Args:
        config: The architecture.
        generator: Source of the initial weights (a generator with torch's default seed when
            None; :func:`build_net` derives one from a seed).
    """

    config: NetConfig

    def __init__(self, config: NetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config

    @property
    def members(self) -> int:
        """Number of members ``M``."""
        return self.config.members

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(M, B, C)`` of windows ``(B, T, F)`` (shared) or ``(M, B, T, F)`` (one batch per member)."""
        return self.logits(self.check_input(x), ALL_MEMBERS, dropout=self.training, generator=None)

    def logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        """Logits of the members in ``sel``; ``x`` is ``(B, T, F)`` or ``(m, B, T, F)`` with ``m`` = selected."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> Tensor:
        """``x`` on the net's device and dtype, once its shape fits the net.

        Raises:
            ValueError: not a tensor, or a shape the net cannot read (the message says why).
        """
        cfg = self.config
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(f"x must be (B, T, F) or (M, B, T, F), got shape {tuple(x.shape)}")
        if x.dim() == 4 and x.shape[0] != cfg.members:
            raise ValueError(f"x has {x.shape[0]} member batches, the net has {cfg.members} members")
        if x.shape[-1] != cfg.n_features:
            raise ValueError(f"x has {x.shape[-1]} features, the net expects {cfg.n_features}")
        if x.shape[-2] < 1 or x.shape[-3] < 1:
            raise ValueError(f"x must hold at least one window of one bar, got shape {tuple(x.shape)}")
        if cfg.arch == "transformer" and x.shape[-2] > cfg.window:
            raise ValueError(f"x has windows of {x.shape[-2]} bars, over the transformer's window of {cfg.window}")
        ref = next(self.parameters())
        return x.to(device=ref.device, dtype=ref.dtype)


class LSTMNet(MemberNet):
    """Member-batched LSTM: ``layers`` LSTM layers, dropout on the last hidden state, a linear head."""

    def __init__(self, config: NetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        m, h = config.members, config.hidden
        self.lstm = nn.ModuleList(
            [LSTMLayer(m, config.n_features if i == 0 else h, h) for i in range(config.layers)]
        )
        self.head = MemberLinear(m, h, config.n_classes)
        gen = generator if generator is not None else torch.Generator()
        for layer in self._layers():
            layer.reset(gen)
        self.head.reset(gen)

    def _layers(self) -> list[LSTMLayer]:
        return [cast(LSTMLayer, layer) for layer in self.lstm]

    def logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        rate = self.config.dropout
        layers = self._layers()
        seq = x.transpose(-3, -2).contiguous()  # time-major: (T, B, F) or (m, T, B, F)
        for layer in layers[:-1]:  # dropout between stacked layers, as torch.nn.LSTM does
            seq = apply_dropout(layer.run(seq, sel, sequence=True), rate, dropout, generator)
        last = layers[-1].run(seq, sel, sequence=False)
        return self.head.project(apply_dropout(last, rate, dropout, generator), sel)


class TransformerNet(MemberNet):
    """Member-batched pre-norm transformer encoder, mean-pooled over the window, with a linear head."""

    def __init__(self, config: NetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        m, d = config.members, config.hidden
        self.embed = MemberLinear(m, config.n_features, d)
        self.position = nn.Parameter(torch.empty(m, config.window, d))
        self.blocks = nn.ModuleList([EncoderBlock(m, d, config.heads) for _ in range(config.layers)])
        self.norm = MemberLayerNorm(m, d)
        self.head = MemberLinear(m, d, config.n_classes)
        gen = generator if generator is not None else torch.Generator()
        self.embed.reset(gen)
        with torch.no_grad():
            self.position.normal_(0.0, 0.02, generator=gen)
        for block in self._blocks():
            block.reset(gen)
        self.head.reset(gen)

    def _blocks(self) -> list[EncoderBlock]:
        return [cast(EncoderBlock, block) for block in self.blocks]

    def logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        rate = self.config.dropout
        steps = x.shape[-2]
        h = self.embed.project_input(x, sel) + self.position[sel][:, None, :steps, :]
        h = apply_dropout(h, rate, dropout, generator)
        for block in self._blocks():
            h = block.run(h, sel, rate, dropout, generator)
        pooled = self.norm.normalize(h, sel).mean(dim=2)
        return self.head.project(apply_dropout(pooled, rate, dropout, generator), sel)


_NETS: dict[str, type[MemberNet]] = {"lstm": LSTMNet, "transformer": TransformerNet}


def build_net(config: NetConfig, seed: int) -> MemberNet:
    """A fresh net in eval mode whose initial weights depend only on ``config`` and ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    net = _NETS[config.arch](config, generator=torch.Generator().manual_seed(seed))
    return net.eval()


def load_net(config: NetConfig, state: Mapping[str, Tensor], device: str = "cpu") -> MemberNet:
    """Rebuild a net from :func:`net_state` output, on ``device`` and in eval mode.

    Raises:
        ValueError: ``state`` does not fit ``config`` (missing, unexpected or misshapen tensors).
    """
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"state entries are not tensors: {', '.join(bad)}")
    net = _NETS[config.arch](config, generator=torch.Generator().manual_seed(0))
    try:
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"state does not fit the {config.arch} config {config.to_dict()}: {exc}") from exc
    return net.to(torch.device(device)).eval()


def net_state(net: MemberNet) -> dict[str, Tensor]:
    """The net's tensors, detached CPU clones (what the registry stores)."""
    return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}


def member_logits(net: MemberNet, x: Tensor) -> Tensor:
    """Logits ``(M, B, C)`` of every member, dropout off, in one vectorised pass.

    Batches over ``_MAX_PASS_ROWS / M`` windows are cut into blocks of rows (every member still
    in one pass per block) so that memory stays bounded.
    """
    x = net.check_input(x)
    rows = max(1, _MAX_PASS_ROWS // net.members)
    with torch.no_grad():
        if x.shape[-3] <= rows:
            return net.logits(x, ALL_MEMBERS, dropout=False, generator=None)
        blocks = [
            net.logits(x[s : s + rows] if x.dim() == 3 else x[:, s : s + rows], ALL_MEMBERS, dropout=False,
                       generator=None)
            for s in range(0, x.shape[-3], rows)
        ]
    return torch.cat(blocks, dim=1)


def member_loop_logits(net: MemberNet, x: Tensor) -> Tensor:
    """What :func:`member_logits` returns, computed one member at a time (the slow way, for benches)."""
    x = net.check_input(x)
    with torch.no_grad():
        outs = [
            net.logits(x if x.dim() == 3 else x[m : m + 1], slice(m, m + 1), dropout=False, generator=None)
            for m in range(net.members)
        ]
    return torch.cat(outs, dim=0)


def mc_dropout_logits(
    net: MemberNet, x: Tensor, samples: int, *, member: int = 0, seed: int | None = None
) -> Tensor:
    """MC-dropout logits ``(S, B, C)``: one member with dropout on, the ``S`` samples in one pass.

    The windows are repeated ``S`` times along the batch axis, so every sample gets its own
    dropout masks (large batches go in blocks of rows, each block one pass of all ``S``
    samples). The net's mode is never changed.

    Args:
        net: The net.
        x: Windows ``(B, T, F)``.
        samples: ``S`` >= 1.
        member: Which member to sample.
        seed: Fixes the dropout masks (the global torch RNG when None).

    Raises:
        ValueError: ``samples`` < 1, ``member`` out of range, or a misshapen ``x``.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < net.members:
        raise ValueError(f"member must be in [0, {net.members}), got {member!r}")
    x = net.check_input(x)
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, F) for MC dropout, got shape {tuple(x.shape)}")
    generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
    sel = slice(member, member + 1)
    rows = max(1, _MAX_PASS_ROWS // samples)  # bounded memory: blocks of rows, all S samples per pass
    blocks = []
    with torch.no_grad():
        for s in range(0, x.shape[0], rows):
            block = x[s : s + rows]
            logits = net.logits(block.repeat(samples, 1, 1), sel, dropout=True, generator=generator)
            blocks.append(logits.reshape(samples, block.shape[0], -1))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

