"""The member-batched layers the ensemble nets are made of: every parameter has a leading member axis.

``M`` independent members are one module: linear maps hold weights ``(M, in, out)`` applied
with ``einsum`` / ``bmm``, layer norms a scale and shift ``(M, d)``, an LSTM layer its gate
weights per member. A call takes a slice ``sel`` of the members (all of them, or one for the
slow comparison loop and MC dropout) and inputs whose leading axis is those members.

Dropout (:func:`apply_dropout`) draws its masks from an explicit ``torch.Generator`` and is switched
on per call, never by the module's train mode, so one net can serve inference and MC dropout
from several threads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EncoderBlock", "LSTMLayer", "MemberLayerNorm", "MemberLinear", "apply_dropout", "member_view"]

_FF_MULT = 2  # transformer feed-forward width, in multiples of d_model
_PROJECTION_FLOATS = 1 << 18  # LSTM input projections are computed in blocks of steps of about this size


def apply_dropout(x: Tensor, rate: float, active: bool, generator: torch.Generator | None) -> Tensor:
    """Inverted dropout whose mask comes from ``generator`` (the global RNG when None)."""
    if not active or rate == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - rate, generator=generator)
    return x * keep / (1.0 - rate)


def member_view(t: Tensor, ndim: int) -> Tensor:
    """``(m, d)`` -> ``(m, 1, ..., 1, d)`` broadcasting against an ``ndim``-dim member tensor."""
    return t.reshape(t.shape[0], *([1] * (ndim - 2)), t.shape[-1])


class MemberLinear(nn.Module):
    """``M`` independent linear maps: weight ``(M, in, out)``, bias ``(M, out)``."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out))
        self.bias = nn.Parameter(torch.empty(members, n_out))

    def reset(self, generator: torch.Generator) -> None:
        """Uniform initial weights in +-1/sqrt(in), as ``torch.nn.Linear``, drawn from ``generator``."""
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


class MemberLayerNorm(nn.Module):
    """Layer norm over the last axis with a scale and shift per member (``(M, d)`` each)."""

    def __init__(self, members: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, dim))
        self.bias = nn.Parameter(torch.zeros(members, dim))

    def reset(self) -> None:
        """Scale 1, shift 0."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def normalize(self, x: Tensor, sel: slice) -> Tensor:
        """``x (m, ..., d)`` normalised over ``d``, then scaled and shifted by each member's own parameters."""
        y = F.layer_norm(x, (x.shape[-1],))
        return torch.addcmul(member_view(self.bias[sel], x.dim()), y, member_view(self.weight[sel], x.dim()))


class LSTMLayer(nn.Module):
    """One LSTM layer per member; gate order i, f, o, g along the ``4H`` axis."""

    def __init__(self, members: int, n_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.w_ih = nn.Parameter(torch.empty(members, n_in, 4 * hidden))
        self.w_hh = nn.Parameter(torch.empty(members, hidden, 4 * hidden))
        self.bias = nn.Parameter(torch.empty(members, 4 * hidden))

    def reset(self, generator: torch.Generator) -> None:
        """Uniform initial weights in +-1/sqrt(H), as ``torch.nn.LSTM``, with the forget gate biased open."""
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


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block with member-batched projections."""

    def __init__(self, members: int, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = MemberLayerNorm(members, dim)
        self.qkv = MemberLinear(members, dim, 3 * dim)
        self.out = MemberLinear(members, dim, dim)
        self.norm2 = MemberLayerNorm(members, dim)
        self.ff1 = MemberLinear(members, dim, _FF_MULT * dim)
        self.ff2 = MemberLinear(members, _FF_MULT * dim, dim)

    def reset(self, generator: torch.Generator) -> None:
        """Fresh projections drawn from ``generator`` and identity layer norms."""
        for lin in (self.qkv, self.out, self.ff1, self.ff2):
            lin.reset(generator)
        self.norm1.reset()
        self.norm2.reset()

    def run(self, h: Tensor, sel: slice, rate: float, active: bool, generator: torch.Generator | None) -> Tensor:
        """Hidden states ``(m, B, T, d)`` through attention and the feed-forward block, residuals added."""
        m, b, t, d = h.shape
        qkv = self.qkv.project(self.norm1.normalize(h, sel), sel)
        # (m, B, T, 3, heads, dh) -> (3, m*B, heads, T, dh): every member and row is one attention batch
        qkv = qkv.reshape(m * b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        att = att.transpose(1, 2).reshape(m, b, t, d)
        h = h + apply_dropout(self.out.project(att, sel), rate, active, generator)
        ff = F.gelu(self.ff1.project(self.norm2.normalize(h, sel), sel))
        return h + apply_dropout(self.ff2.project(ff, sel), rate, active, generator)

