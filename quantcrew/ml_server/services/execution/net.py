"""The execution network: order size and timing from a strategic signal, with MC-dropout uncertainty.

A strategic ensemble says down / flat / up with a confidence; this small MLP turns that, plus
a few causal market inputs (:data:`EXECUTION_INPUTS`), into an order size (a fraction of the
maximum position, in ``[0, 1]``) and a timing decision (trade now, or wait for the next bar's
open). Uncertainty comes from Monte Carlo dropout: :func:`sample_plans` repeats the input ``S``
times along the batch axis and runs ONE forward pass with dropout active, so an answer costs
one small matrix product per layer whatever ``S`` is (the p99 budget is 100 ms).

Dropout draws and thread safety: the network's dropout layers draw their masks from an
explicit ``torch.Generator`` handed to them through a context variable while
:func:`sample_plans` or the training loop runs (:func:`dropout_draws`). Sampling therefore never flips a
shared network into train mode (it stays in eval mode throughout, so concurrent requests on
one cached network cannot switch each other's dropout off), never touches torch's
process-wide generator, and is deterministic given its seed even while other threads train
or sample. Weight initialisation draws from its own generator too. Outside those two
functions the layers behave as ``torch.nn.Dropout``.

Inputs, labels and the input scaler live in :mod:`quantcrew.ml_server.services.execution.inputs`,
the training loop in :mod:`quantcrew.ml_server.services.execution.fit`.
"""


from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (torch's own idiom)

from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS

__all__ = [
    "ExecutionConfig",
    "ExecutionNet",
    "PlanSamples",
    "build_execution_net",
    "dropout_draws",
    "execution_state",
    "load_execution_net",
    "sample_plans",
    "seeded_generator",
]

FloatArray = npt.NDArray[np.float64]

@dataclass(frozen=True)
class ExecutionConfig:
    """Architecture of an :class:`ExecutionNet`.

    Attributes:
        n_inputs: Input width (``len(EXECUTION_INPUTS)``).
        hidden: Hidden layer widths; each layer is Linear -> ReLU -> dropout.
        dropout: Dropout rate in ``[0, 1)`` (0 gives a deterministic net: zero MC spread).
    """

    n_inputs: int = len(EXECUTION_INPUTS)
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        bad = []
        if isinstance(self.n_inputs, bool) or not isinstance(self.n_inputs, int) or self.n_inputs < 1:
            bad.append("n_inputs")
        if (not isinstance(self.hidden, tuple) or not self.hidden
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.hidden)):
            bad.append("hidden")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            bad.append("dropout")
        if bad:
            raise ValueError(f"invalid execution config {', '.join(bad)}: need n_inputs >= 1, a non-empty tuple "
                             f"of positive hidden widths, 0 <= dropout < 1; got {self!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``hidden`` as a list)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExecutionConfig:
        """Rebuild from :meth:`to_dict`; missing keys take the defaults.

        Raises:
            ValueError: Unknown keys (named) or invalid values (named).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown execution config keys {unknown}; valid: {sorted(known)}")
        kwargs = dict(d)
        if "hidden" in kwargs:
            hidden = kwargs["hidden"]
            if not isinstance(hidden, list | tuple):
                raise ValueError(f"execution config key 'hidden' must be a list of widths, got {hidden!r}")
            kwargs["hidden"] = tuple(hidden)
        return cls(**kwargs)


# --- the network ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Draws:
    generator: torch.Generator | None
    force: bool  # True: drop out even in eval mode (MC sampling)


_DRAWS: ContextVar[_Draws | None] = ContextVar("quantcrew_execution_dropout", default=None)


@contextmanager
def dropout_draws(generator: torch.Generator | None, *, force: bool) -> Iterator[None]:
    """While inside: dropout layers draw from ``generator``; ``force`` drops out even in eval mode."""
    token = _DRAWS.set(_Draws(generator, force))
    try:
        yield
    finally:
        _DRAWS.reset(token)


class _Dropout(nn.Dropout):
    """``nn.Dropout`` that draws from the generator of the current sampling or training call."""

    def forward(self, x: Tensor) -> Tensor:
        draws = _DRAWS.get()
        if draws is None:
            return F.dropout(x, self.p, self.training)
        if self.p == 0.0 or not (self.training or draws.force):
            return x
        keep = torch.rand(x.shape, generator=draws.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A private generator on ``device`` seeded with ``seed``; None (torch's global one) without a seed."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    """A Linear layer with uninitialised weights (its default init would draw from the global generator)."""
    return nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")


class ExecutionNet(nn.Module):
    """MLP from scaled execution inputs to a size logit and timing logits (0 = now, 1 = wait).

    Each hidden layer is Linear -> ReLU -> dropout; one linear head gives three outputs.

    Args:
        config: The architecture.
        seed: Seeds the initial weights (PyTorch's default Linear init, drawn from a private
            generator).
    """

    def __init__(self, config: ExecutionConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.n_inputs
        for h in config.hidden:
            layers += [_linear(width, h), nn.ReLU(), _Dropout(config.dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = _linear(width, 3)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5.0), generator=gen)
                    nn.init.uniform_(module.bias, -bound, bound, generator=gen)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, D) scaled -> size logit (B,), timing logits (B, 2)."""
        out = self.head(self.body(x))
        return out[:, 0], out[:, 1:]


def build_execution_net(config: ExecutionConfig, seed: int) -> ExecutionNet:
    """A fresh network with weights fixed by ``seed`` (torch's global generator is not touched)."""
    return ExecutionNet(config, seed=seed)


def execution_state(net: ExecutionNet) -> dict[str, Tensor]:
    """The network's tensors, detached, on the CPU: what the registry stores."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def load_execution_net(config: ExecutionConfig, state: Mapping[str, Tensor], device: str = "cpu") -> ExecutionNet:
    """Rebuild a stored network, in eval mode, on ``device``.

    Raises:
        ValueError: ``state`` does not fit ``config`` exactly (missing, unexpected or misshapen
            tensors, or values that are not tensors).
    """
    net = ExecutionNet(config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) if isinstance(v, Tensor) else None for k, v in state.items()}
    if got != expected:
        missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        misfit = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(f"stored execution weights do not fit {config}: missing {missing}, unexpected "
                         f"{unexpected}, wrong shape or type {misfit}")
    try:
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"stored execution weights do not fit {config}: {exc}") from exc
    return net.to(device).eval()


# --- MC-dropout sampling ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PlanSamples:
    """MC-dropout draws of the execution plan.

    Attributes:
        size: Order size per draw and row, shape ``(S, B)``, in ``[0, 1]``.
        wait_prob: Probability of "wait" per draw and row, shape ``(S, B)``.
    """

    size: FloatArray
    wait_prob: FloatArray


def sample_plans(net: ExecutionNet, x: npt.ArrayLike | Tensor, samples: int, *, seed: int | None = None,
                 device: str = "cpu") -> PlanSamples:
    """Draw ``samples`` plans per row in ONE forward pass over ``samples * B`` rows, dropout active.

    The input is repeated ``samples`` times along the batch axis (draw-major, so row
    ``s * B + b`` is draw ``s`` of row ``b``). Dropout is forced on through the sampling
    context; the net itself stays in eval mode (it is never switched to train mode, so a
    cached net can serve concurrent calls), and the context is cleared even on error.

    Args:
        net: A loaded network (already on ``device``).
        x: Scaled inputs, shape ``(B, D)``.
        samples: Draws per row, >= 1.
        seed: Fixes the dropout masks (a private ``torch.Generator``); None draws from torch's
            global generator.
        device: Device the forward pass runs on.

    Raises:
        ValueError: ``samples <= 0``, or ``x`` not ``(B, D)`` with ``B >= 1``, ``D = config.n_inputs``, finite.
    """
    if samples <= 0:
        raise ValueError(f"samples must be >= 1, got {samples}")
    dev = torch.device(device)
    xt = torch.as_tensor(x, dtype=torch.float32, device=dev)
    if xt.ndim != 2 or xt.shape[0] == 0 or xt.shape[1] != net.config.n_inputs:
        raise ValueError(f"x must have shape (B, {net.config.n_inputs}) with B >= 1, got {tuple(xt.shape)}")
    if not bool(torch.isfinite(xt).all()):
        raise ValueError("x must be finite")
    b = xt.shape[0]
    with torch.inference_mode(), dropout_draws(seeded_generator(seed, dev), force=True):
        size_logit, timing_logits = net(xt.repeat(samples, 1))
        size = torch.sigmoid(size_logit).reshape(samples, b)
        wait = torch.softmax(timing_logits, dim=1)[:, 1].reshape(samples, b)
    return PlanSamples(size=size.cpu().numpy().astype(np.float64), wait_prob=wait.cpu().numpy().astype(np.float64))
