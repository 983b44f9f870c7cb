"""The execution network: order size and timing from a strategic signal, with MC-dropout uncertainty.

A strategic ensemble says down / flat / up with a confidence; this small MLP turns that, plus
a few causal market inputs (:data:`EXECUTION_INPUTS`), into an order size (a fraction of the
maximum position, in ``[0, 1]``) and a timing decision (trade now, or wait for the next bar's
open). Uncertainty comes from Monte Carlo dropout: :func:`sample_plans` repeats the input ``S``
times along the batch axis and runs ONE forward pass with dropout active, so an answer costs
one small matrix product per layer whatever ``S`` is (the p99 budget is 100 ms).

Dropout draws and thread safety: the network's dropout layers draw their masks from an
explicit ``torch.Generator`` handed to them through a context variable while
:func:`sample_plans` or :func:`train_execution_net` runs. Sampling therefore never flips a
shared network into train mode (it stays in eval mode throughout, so concurrent requests on
one cached network cannot switch each other's dropout off), never touches torch's
process-wide generator, and is deterministic given its seed even while other threads train
or sample. Weight initialisation draws from its own generator too. Outside those two
functions the layers behave as ``torch.nn.Dropout``.

Inputs, labels and the input scaler live in :mod:`quantcrew.ml_server.services.execution_inputs`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 (torch's own idiom)

from quantcrew.ml_server.services.execution_inputs import EXECUTION_INPUTS

__all__ = [
    "ExecHistory",
    "ExecTrainConfig",
    "ExecutionConfig",
    "ExecutionNet",
    "PlanSamples",
    "Summary",
    "build_execution_net",
    "execution_state",
    "load_execution_net",
    "sample_plans",
    "summarize",
    "train_execution_net",
]

FloatArray = npt.NDArray[np.float64]
_EVAL_CHUNK = 8192  # rows per forward pass when scoring a validation set

# --- configuration and scaling ----------------------------------------------------------------


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
def _dropout_draws(generator: torch.Generator | None, *, force: bool) -> Iterator[None]:
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


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
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


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecTrainConfig:
    """Training settings (AdamW, minibatches, early stopping on the validation loss)."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need epochs, batch_size, patience >= 1, lr > 0, weight_decay >= 0; got {self!r}")


@dataclass(frozen=True)
class ExecHistory:
    """What a training run did.

    Attributes:
        epochs_run: Epochs completed.
        best_epoch: 1-based epoch whose weights were restored (0: none completed, initial weights kept).
        train_loss: Mean training loss per completed epoch.
        val_loss: Validation loss per completed epoch (eval mode, no dropout).
        stopped_early: Patience ran out before ``epochs``.
        cancelled: ``should_stop`` said stop.
        size_mae: Mean |sigmoid(size_logit) - size| on the validation set, restored weights.
        timing_accuracy: Share of validation rows whose argmax timing matches, restored weights.
    """

    epochs_run: int
    best_epoch: int
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    stopped_early: bool
    cancelled: bool
    size_mae: float
    timing_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["train_loss"], d["val_loss"] = list(self.train_loss), list(self.val_loss)
        return d


def _training_tensors(x: npt.ArrayLike, size: npt.ArrayLike, timing: npt.ArrayLike, n_inputs: int, name: str,
                      device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    xa = np.asarray(x, dtype=np.float32)
    sa = np.asarray(size, dtype=np.float32)
    ta = np.asarray(timing)
    if xa.ndim != 2 or xa.shape[1] != n_inputs or xa.shape[0] == 0 or sa.shape != (xa.shape[0],) \
            or ta.shape != sa.shape:
        raise ValueError(f"{name}: need x (n, {n_inputs}) with n >= 1 and size, timing (n,); got {xa.shape}, "
                         f"{sa.shape}, {ta.shape}")
    if not (np.all(np.isfinite(xa)) and np.all((sa >= 0.0) & (sa <= 1.0)) and np.all(np.isin(ta, (0, 1)))):
        raise ValueError(f"{name}: x must be finite, size in [0, 1], timing 0 or 1")
    return (torch.as_tensor(xa, device=device), torch.as_tensor(sa, device=device),
            torch.as_tensor(ta.astype(np.int64), device=device))


def _loss(net: ExecutionNet, x: Tensor, size: Tensor, timing: Tensor) -> Tensor:
    size_logit, timing_logits = net(x)
    return F.binary_cross_entropy_with_logits(size_logit, size) + F.cross_entropy(timing_logits, timing)


@torch.no_grad()
def _evaluate(net: ExecutionNet, x: Tensor, size: Tensor, timing: Tensor) -> tuple[float, float, float]:
    """Validation loss, size MAE and timing accuracy in eval mode (rows weighted equally)."""
    net.eval()
    loss = mae = hits = 0.0
    for i in range(0, x.shape[0], _EVAL_CHUNK):
        xb, sb, tb = x[i : i + _EVAL_CHUNK], size[i : i + _EVAL_CHUNK], timing[i : i + _EVAL_CHUNK]
        size_logit, timing_logits = net(xb)
        rows = xb.shape[0]
        loss += rows * float(F.binary_cross_entropy_with_logits(size_logit, sb)
                             + F.cross_entropy(timing_logits, tb))
        mae += float((torch.sigmoid(size_logit) - sb).abs().sum())
        hits += float((timing_logits.argmax(dim=1) == tb).sum())
    n = x.shape[0]
    return loss / n, mae / n, hits / n


def train_execution_net(
    net: ExecutionNet,
    x_train: npt.ArrayLike,
    size_train: npt.ArrayLike,
    timing_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    size_val: npt.ArrayLike,
    timing_val: npt.ArrayLike,
    config: ExecTrainConfig,
    *,
    device: str = "cpu",
    on_epoch: Callable[[int, int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExecHistory:
    """Train in place: BCE-with-logits on the size (a soft label) + cross-entropy on the timing.

    Minibatches are shuffled and dropout masks drawn from generators seeded by ``config.seed``
    (not torch's global one), so the same net, data and config give the same weights on one
    device. After each epoch the validation loss is taken in eval mode; the best weights are
    restored at the end (also after early stopping or a cancel). The net is left in eval mode
    on ``device``.

    Args:
        net: The network (moved to ``device``).
        x_train, x_val: Scaled inputs, shape ``(n, D)``.
        size_train, size_val: Size targets in ``[0, 1]``, shape ``(n,)``.
        timing_train, timing_val: Timing targets, 0 (now) or 1 (wait), shape ``(n,)``.
        config: Epochs, batch size, optimiser and early-stopping settings.
        device: Torch device string.
        on_epoch: Called after each epoch with ``(epoch, epochs, train_loss, val_loss)``.
        should_stop: Polled before each minibatch; True stops training (``cancelled``).

    Returns:
        The run's :class:`ExecHistory`.

    Raises:
        ValueError: Shapes that do not fit the net, empty sets, non-finite inputs, targets out of range.
    """
    dev = torch.device(device)
    net.to(dev)
    n_inputs = net.config.n_inputs
    xt, st, tt = _training_tensors(x_train, size_train, timing_train, n_inputs, "train", dev)
    xv, sv, tv = _training_tensors(x_val, size_val, timing_val, n_inputs, "validation", dev)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order_gen = torch.Generator().manual_seed(config.seed)
    dropout_gen = _generator(config.seed, dev)

    best_state = copy.deepcopy(net.state_dict())
    best_loss, best_epoch, since_best = math.inf, 0, 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    stopped_early = cancelled = False
    n = xt.shape[0]
    for epoch in range(1, config.epochs + 1):
        net.train()
        total = 0.0
        order = torch.randperm(n, generator=order_gen).to(dev)
        with _dropout_draws(dropout_gen, force=False):
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                if should_stop is not None and should_stop():
                    cancelled = True
                    break
                loss = _loss(net, xt[idx], st[idx], tt[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += float(loss.detach()) * idx.shape[0]
        if cancelled:
            break
        val_loss = _evaluate(net, xv, sv, tv)[0]
        train_losses.append(total / n)
        val_losses.append(val_loss)
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, total / n, val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch, since_best = val_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            since_best += 1
            if since_best >= config.patience and epoch < config.epochs:
                stopped_early = True
                break
    net.load_state_dict(best_state)
    _, mae, accuracy = _evaluate(net, xv, sv, tv)
    return ExecHistory(epochs_run=len(train_losses), best_epoch=best_epoch, train_loss=tuple(train_losses),
                       val_loss=tuple(val_losses), stopped_early=stopped_early, cancelled=cancelled,
                       size_mae=mae, timing_accuracy=accuracy)


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
    with torch.inference_mode(), _dropout_draws(_generator(seed, dev), force=True):
        size_logit, timing_logits = net(xt.repeat(samples, 1))
        size = torch.sigmoid(size_logit).reshape(samples, b)
        wait = torch.softmax(timing_logits, dim=1)[:, 1].reshape(samples, b)
    return PlanSamples(size=size.cpu().numpy().astype(np.float64), wait_prob=wait.cpu().numpy().astype(np.float64))


@dataclass(frozen=True, eq=False)
class Summary:
    """Mean, std (population, over draws) and an equal-tailed interval per row, each ``(B,)``."""

    mean: FloatArray
    std: FloatArray
    lower: FloatArray
    upper: FloatArray


def summarize(samples: npt.ArrayLike, level: float = 0.9) -> Summary:
    """Summarise draws over axis 0: mean, std (ddof 0) and the ``level`` equal-tailed quantile interval.

    Quantiles use numpy's default linear interpolation.

    Raises:
        ValueError: ``level`` outside ``(0, 1)``, or no draws.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"samples must have at least one draw along axis 0, got shape {a.shape}")
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(a, [tail, 1.0 - tail], axis=0)
    return Summary(mean=a.mean(axis=0), std=a.std(axis=0), lower=lower, upper=upper)
