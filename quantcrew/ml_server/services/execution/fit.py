"""Training the execution network: size as a soft label, timing as a class, early stopping.

Minibatch order and dropout masks come from generators seeded by the training config (never
torch's global one), and dropout draws reach the network through
:func:`~quantcrew.ml_server.services.execution.net.dropout_draws`, so training is reproducible
on one device even while other threads sample.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 (torch's own idiom)

from quantcrew.ml_server.services.execution.net import ExecutionNet, dropout_draws, seeded_generator

__all__ = ["ExecHistory", "ExecTrainConfig", "train_execution_net"]

_EVAL_CHUNK = 8192  # rows per forward pass when scoring a validation set


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
    dropout_gen = seeded_generator(config.seed, dev)

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
        with dropout_draws(dropout_gen, force=False):
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

