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
per member; logits come back as ``(M, B, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "LSTMNet",
    "MemberNet",
    "NetConfig",
    "TrainConfig",
    "TrainHistory",
    "TransformerNet",
    "build_net",
    "load_net",
    "mc_dropout_logits",
    "member_logits",
    "member_loop_logits",
    "net_state",
    "train_net",
]

ARCHITECTURES: tuple[str, ...] = ("lstm", "transformer")

_FF_MULT = 2  # transformer feed-forward width, in multiples of d_model
_EVAL_CHUNK = 4096  # rows per validation forward pass
_MAX_PASS_ROWS = 16_384  # windows (members or samples x rows) per inference pass, to bound memory
_PROJECTION_FLOATS = 1 << 18  # LSTM input projections are computed in blocks of steps of about this size
_CLIP_NORM = 1.0
_ALL = slice(None)


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


def _dropout(x: Tensor, rate: float, active: bool, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout whose mask comes from ``generator`` (the global RNG when None)."""
    if not active or rate == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - rate, generator=generator)
    return x * keep / (1.0 - rate)


def _member_view(t: Tensor, ndim: int) -> Tensor:
    """``(m, d)`` -> ``(m, 1, ..., 1, d)`` broadcasting against an ``ndim``-dim member tensor."""
    return t.reshape(t.shape[0], *([1] * (ndim - 2)), t.shape[-1])


class _MemberLinear(nn.Module):
    """``M`` independent linear maps: weight ``(M, in, out)``, bias ``(M, out)``."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out))
        self.bias = nn.Parameter(torch.empty(members, n_out))

    def reset(self, generator: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
            self.bias.uniform_(-bound, bound, generator=generator)

    def project(self, x: Tensor, sel: slice) -> Tensor:
        """``x (m, ..., in)`` -> ``(m, ..., out)``, member ``i`` through its own weights."""
        w, b = self.weight[sel], self.bias[sel]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        # bmm then an in-place broadcast add: baddbmm would first copy the broadcast bias into the
        # output, which is several times slower on the CPU for outputs this size
        return torch.bmm(flat, w).add_(b.unsqueeze(1)).reshape(*x.shape[:-1], w.shape[-1])

    def project_input(self, x: Tensor, sel: slice) -> Tensor:
        """Windows ``(B, T, in)`` shared by the members, or ``(m, B, T, in)``, -> ``(m, B, T, out)``."""
        w, b = self.weight[sel], self.bias[sel]
        spec = "bti,mio->mbto" if x.dim() == 3 else "mbti,mio->mbto"
        return torch.einsum(spec, x, w).add_(b[:, None, None, :])


class _MemberLayerNorm(nn.Module):
    """Layer norm over the last axis with a scale and shift per member (``(M, d)`` each)."""

    def __init__(self, members: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, dim))
        self.bias = nn.Parameter(torch.zeros(members, dim))

    def reset(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def normalize(self, x: Tensor, sel: slice) -> Tensor:
        y = F.layer_norm(x, (x.shape[-1],))
        return torch.addcmul(_member_view(self.bias[sel], x.dim()), y, _member_view(self.weight[sel], x.dim()))


class _LSTMLayer(nn.Module):
    """One LSTM layer per member; gate order i, f, o, g along the ``4H`` axis."""

    def __init__(self, members: int, n_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.w_ih = nn.Parameter(torch.empty(members, n_in, 4 * hidden))
        self.w_hh = nn.Parameter(torch.empty(members, hidden, 4 * hidden))
        self.bias = nn.Parameter(torch.empty(members, 4 * hidden))

    def reset(self, generator: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.hidden)
        with torch.no_grad():
            for p in (self.w_ih, self.w_hh, self.bias):
                p.uniform_(-bound, bound, generator=generator)
            self.bias[:, self.hidden : 2 * self.hidden] += 1.0  # forget gate open at the start

    def run(self, x: Tensor, sel: slice, *, sequence: bool) -> Tensor:
        """Time-major ``x``: ``(T, B, in)`` shared by the members or ``(m, T, B, in)``.

        Returns the hidden states ``(m, T, B, H)`` when ``sequence``, else the last ``(m, B, H)``.
        """
        hid = self.hidden
        # tanh(z) = 2 sigmoid(2z) - 1: doubling the g-gate columns lets one sigmoid serve all four
        # gates (torch's CPU tanh is several times slower than its sigmoid)
        scale = torch.ones(4 * hid, dtype=self.w_ih.dtype, device=self.w_ih.device)
        scale[3 * hid :] = 2.0
        w_ih, w_hh, bias = self.w_ih[sel] * scale, self.w_hh[sel] * scale, self.bias[sel] * scale
        m, steps, batch = w_ih.shape[0], x.shape[-3], x.shape[-2]
        chunk = max(1, _PROJECTION_FLOATS // (m * batch * 4 * hid))
        h: Tensor | None = None
        c: Tensor | None = None
        outputs: list[Tensor] = []
        for t0 in range(0, steps, chunk):
            # input projection of a block of steps in one batched matmul (blocks keep it cache-sized)
            block = x[t0 : t0 + chunk] if x.dim() == 3 else x[:, t0 : t0 + chunk]
            n = block.shape[-3]
            flat = block.reshape(n * batch, -1) if x.dim() == 3 else block.reshape(m, n * batch, -1)
            xp = torch.matmul(flat, w_ih).add_(bias.unsqueeze(1)).view(m, n, batch, 4 * hid)
            for s in range(n):
                gates = xp[:, s] if h is None else torch.baddbmm(xp[:, s], h, w_hh)
                i, f, o, g = torch.sigmoid(gates).chunk(4, dim=-1)
                g = g * 2.0 - 1.0
                c = i * g if c is None else torch.addcmul(f * c, i, g)
                h = o * (torch.sigmoid(c * 2.0) * 2.0 - 1.0)
                if sequence:
                    outputs.append(h)
        if h is None:  # pragma: no cover - windows are checked non-empty
            raise ValueError("empty window")
        return torch.stack(outputs, dim=1) if sequence else h


class _EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block with member-batched projections."""

    def __init__(self, members: int, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = _MemberLayerNorm(members, dim)
        self.qkv = _MemberLinear(members, dim, 3 * dim)
        self.out = _MemberLinear(members, dim, dim)
        self.norm2 = _MemberLayerNorm(members, dim)
        self.ff1 = _MemberLinear(members, dim, _FF_MULT * dim)
        self.ff2 = _MemberLinear(members, _FF_MULT * dim, dim)

    def reset(self, generator: torch.Generator) -> None:
        for lin in (self.qkv, self.out, self.ff1, self.ff2):
            lin.reset(generator)
        self.norm1.reset()
        self.norm2.reset()

    def run(self, h: Tensor, sel: slice, rate: float, active: bool, generator: torch.Generator | None) -> Tensor:
        m, b, t, d = h.shape
        qkv = self.qkv.project(self.norm1.normalize(h, sel), sel)
        # (m, B, T, 3, heads, dh) -> (3, m*B, heads, T, dh): every member and row is one attention batch
        qkv = qkv.reshape(m * b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        att = att.transpose(1, 2).reshape(m, b, t, d)
        h = h + _dropout(self.out.project(att, sel), rate, active, generator)
        ff = F.gelu(self.ff1.project(self.norm2.normalize(h, sel), sel))
        return h + _dropout(self.ff2.project(ff, sel), rate, active, generator)


class MemberNet(nn.Module):
    """Base of the member-batched nets: ``forward`` maps windows to logits ``(M, B, C)``.

    Dropout is on in ``forward`` when the module is in train mode; :func:`member_logits`,
    :func:`mc_dropout_logits` and :func:`train_net` choose it per call instead.

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
        return self._logits(self._check_input(x), _ALL, dropout=self.training, generator=None)

    def _logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        """Logits of the members in ``sel``; ``x`` is ``(B, T, F)`` or ``(m, B, T, F)`` with ``m`` = selected."""
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> Tensor:
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
            [_LSTMLayer(m, config.n_features if i == 0 else h, h) for i in range(config.layers)]
        )
        self.head = _MemberLinear(m, h, config.n_classes)
        gen = generator if generator is not None else torch.Generator()
        for layer in self._layers():
            layer.reset(gen)
        self.head.reset(gen)

    def _layers(self) -> list[_LSTMLayer]:
        return [cast(_LSTMLayer, layer) for layer in self.lstm]

    def _logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        rate = self.config.dropout
        layers = self._layers()
        seq = x.transpose(-3, -2).contiguous()  # time-major: (T, B, F) or (m, T, B, F)
        for layer in layers[:-1]:  # dropout between stacked layers, as torch.nn.LSTM does
            seq = _dropout(layer.run(seq, sel, sequence=True), rate, dropout, generator)
        last = layers[-1].run(seq, sel, sequence=False)
        return self.head.project(_dropout(last, rate, dropout, generator), sel)


class TransformerNet(MemberNet):
    """Member-batched pre-norm transformer encoder, mean-pooled over the window, with a linear head."""

    def __init__(self, config: NetConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        m, d = config.members, config.hidden
        self.embed = _MemberLinear(m, config.n_features, d)
        self.position = nn.Parameter(torch.empty(m, config.window, d))
        self.blocks = nn.ModuleList([_EncoderBlock(m, d, config.heads) for _ in range(config.layers)])
        self.norm = _MemberLayerNorm(m, d)
        self.head = _MemberLinear(m, d, config.n_classes)
        gen = generator if generator is not None else torch.Generator()
        self.embed.reset(gen)
        with torch.no_grad():
            self.position.normal_(0.0, 0.02, generator=gen)
        for block in self._blocks():
            block.reset(gen)
        self.head.reset(gen)

    def _blocks(self) -> list[_EncoderBlock]:
        return [cast(_EncoderBlock, block) for block in self.blocks]

    def _logits(self, x: Tensor, sel: slice, *, dropout: bool, generator: torch.Generator | None) -> Tensor:
        rate = self.config.dropout
        steps = x.shape[-2]
        h = self.embed.project_input(x, sel) + self.position[sel][:, None, :steps, :]
        h = _dropout(h, rate, dropout, generator)
        for block in self._blocks():
            h = block.run(h, sel, rate, dropout, generator)
        pooled = self.norm.normalize(h, sel).mean(dim=2)
        return self.head.project(_dropout(pooled, rate, dropout, generator), sel)


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
    x = net._check_input(x)
    rows = max(1, _MAX_PASS_ROWS // net.members)
    with torch.no_grad():
        if x.shape[-3] <= rows:
            return net._logits(x, _ALL, dropout=False, generator=None)
        blocks = [
            net._logits(x[s : s + rows] if x.dim() == 3 else x[:, s : s + rows], _ALL, dropout=False, generator=None)
            for s in range(0, x.shape[-3], rows)
        ]
    return torch.cat(blocks, dim=1)


def member_loop_logits(net: MemberNet, x: Tensor) -> Tensor:
    """What :func:`member_logits` returns, computed one member at a time (the slow way, for benches)."""
    x = net._check_input(x)
    with torch.no_grad():
        outs = [
            net._logits(x if x.dim() == 3 else x[m : m + 1], slice(m, m + 1), dropout=False, generator=None)
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
    x = net._check_input(x)
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, F) for MC dropout, got shape {tuple(x.shape)}")
    generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
    sel = slice(member, member + 1)
    rows = max(1, _MAX_PASS_ROWS // samples)  # bounded memory: blocks of rows, all S samples per pass
    blocks = []
    with torch.no_grad():
        for s in range(0, x.shape[0], rows):
            block = x[s : s + rows]
            logits = net._logits(block.repeat(samples, 1, 1), sel, dropout=True, generator=generator)
            blocks.append(logits.reshape(samples, block.shape[0], -1))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of :func:`train_net`."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")


@dataclass
class TrainHistory:
    """What :func:`train_net` did. Losses are mean member cross-entropies, one per finished epoch."""

    epochs_run: int
    best_epoch: int
    train_loss: list[float]
    val_loss: list[float]
    stopped_early: bool
    cancelled: bool


def _training_arrays(x: np.ndarray, y: np.ndarray, config: NetConfig, xname: str, yname: str) -> tuple[Tensor, Tensor]:
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.ndim != 3 or xa.shape[0] < 1 or xa.shape[1] < 1 or xa.shape[2] != config.n_features:
        raise ValueError(f"{xname} must be (N >= 1, T, {config.n_features}), got shape {xa.shape}")
    if config.arch == "transformer" and xa.shape[1] > config.window:
        raise ValueError(f"{xname} has windows of {xa.shape[1]} bars, over the transformer's window of {config.window}")
    if not np.issubdtype(xa.dtype, np.number) or not np.all(np.isfinite(xa)):
        raise ValueError(f"{xname} must hold finite numbers")
    if ya.shape != (xa.shape[0],):
        raise ValueError(f"{yname} must have shape ({xa.shape[0]},) to match {xname}, got {ya.shape}")
    if not np.issubdtype(ya.dtype, np.integer):
        raise ValueError(f"{yname} must hold integer class labels, got dtype {ya.dtype}")
    if ya.min() < 0 or ya.max() >= config.n_classes:
        raise ValueError(f"{yname} labels must be in [0, {config.n_classes}), got [{ya.min()}, {ya.max()}]")
    return torch.from_numpy(np.ascontiguousarray(xa, dtype=np.float32)), torch.from_numpy(ya.astype(np.int64))


def _clip_per_member(params: list[nn.Parameter], max_norm: float) -> None:
    """Clip each member's gradient to ``max_norm`` on its own (a global norm would couple members)."""
    squares: Tensor | None = None
    for p in params:
        if p.grad is not None:
            s = p.grad.detach().pow(2).reshape(p.shape[0], -1).sum(dim=1)
            squares = s if squares is None else squares + s
    if squares is None:
        return
    scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(scale.reshape(-1, *([1] * (p.dim() - 1))))


def _mean_member_nll(net: MemberNet, x: Tensor, y: Tensor) -> float:
    """Mean over members of the mean cross-entropy, dropout off."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], _EVAL_CHUNK):
            logits = net._logits(x[start : start + _EVAL_CHUNK], _ALL, dropout=False, generator=None)
            labels = y[start : start + _EVAL_CHUNK].repeat(logits.shape[0])  # member-major, as logits.reshape
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="sum"))
    return total / (x.shape[0] * net.members)


def _snapshot(net: MemberNet) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def train_net(
    net: MemberNet,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig,
    *,
    device: str = "cpu",
    on_epoch: Callable[[int, int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainHistory:
    """Train every member at once with AdamW, early stopping on the validation NLL.

    The loss is the sum over members of each member's mean cross-entropy (dropout on), each
    member seeing its own permutation of the training rows every epoch. After each epoch the
    mean member NLL on the validation rows (dropout off) is measured; training stops after
    ``patience`` epochs without improvement, and the net ends with the weights of its best
    epoch (its initial weights if cancelled before the first epoch ended), in eval mode.
    Deterministic on the CPU given ``config.seed`` and the net's initial weights.

    Args:
        net: The net, trained in place (moved to ``device``).
        x_train: ``(N, T, F)`` windows.
        y_train: ``(N,)`` integer labels in ``[0, C)``.
        x_val: Validation windows.
        y_val: Validation labels.
        config: Epochs, batch size, optimiser, patience, seed.
        device: Torch device to train on.
        on_epoch: Called as ``(epoch, epochs, train_loss, val_loss)`` after each epoch (1-based).
        should_stop: Checked before every minibatch; True cancels.

    Returns:
        The history; ``cancelled`` is True when ``should_stop`` ended it.

    Raises:
        ValueError: misshapen arrays, non-finite features or labels out of range.
    """
    cfg = net.config
    xt, yt = _training_arrays(x_train, y_train, cfg, "x_train", "y_train")
    xv, yv = _training_arrays(x_val, y_val, cfg, "x_val", "y_val")
    dev = torch.device(device)
    net.to(dev)
    xt, yt, xv, yv = xt.to(dev), yt.to(dev), xv.to(dev), yv.to(dev)
    params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    order_seed, dropout_seed = (int(s) for s in np.random.SeedSequence(config.seed).generate_state(2))
    order_gen = torch.Generator().manual_seed(order_seed)
    dropout_gen = torch.Generator(device=dev).manual_seed(dropout_seed)

    n, members = xt.shape[0], cfg.members
    initial = _snapshot(net)
    best_state: dict[str, Tensor] | None = None
    best_val, best_epoch, since_best = math.inf, 0, 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    stopped_early = cancelled = False
    for epoch in range(1, config.epochs + 1):
        order = torch.argsort(torch.rand(members, n, generator=order_gen), dim=1).to(dev)
        running = 0.0
        for start in range(0, n, config.batch_size):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            idx = order[:, start : start + config.batch_size]  # (M, b): each member its own rows
            logits = net._logits(xt[idx], _ALL, dropout=True, generator=dropout_gen)
            per_member = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), yt[idx].reshape(-1), reduction="none"
            ).reshape(members, -1).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            per_member.sum().backward()  # type: ignore[no-untyped-call]
            _clip_per_member(params, _CLIP_NORM)
            optimizer.step()
            running += float(per_member.detach().sum()) * idx.shape[1]
        if cancelled:
            break
        train_loss = running / (n * members)
        val_loss = _mean_member_nll(net, xv, yv)
        train_losses.append(train_loss)
        val_losses.append(val_loss)
        if val_loss < best_val:
            best_val, best_epoch, since_best = val_loss, epoch, 0
            best_state = _snapshot(net)
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, train_loss, val_loss)
        if since_best >= config.patience:
            stopped_early = True
            break
    net.load_state_dict(best_state if best_state is not None else initial)
    net.eval()
    return TrainHistory(
        epochs_run=len(val_losses),
        best_epoch=best_epoch,
        train_loss=train_losses,
        val_loss=val_losses,
        stopped_early=stopped_early,
        cancelled=cancelled,
    )
