"""Training the member-batched nets: every member at once, AdamW, per-member clipping, early stopping.

The loss is the sum of the members' losses; both AdamW and the gradient clipping act per member
(every parameter carries a leading member axis), so no member's update depends on another
member's weights or loss. Each member sees its own permutation of the training rows every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantcrew.ml_server.services.ensemble.nets import ALL_MEMBERS, MemberNet, NetConfig

__all__ = ["TrainConfig", "TrainHistory", "train_net"]

_EVAL_CHUNK = 4096  # rows per validation forward pass
_CLIP_NORM = 1.0


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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
            logits = net.logits(x[start : start + _EVAL_CHUNK], ALL_MEMBERS, dropout=False, generator=None)
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
            logits = net.logits(xt[idx], ALL_MEMBERS, dropout=True, generator=dropout_gen)
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
