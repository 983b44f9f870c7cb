"""The execution model: the input scaler and the MC-dropout network, as a registry adapter.

:class:`ExecutionModel` follows scikit-learn's estimator contract: the architecture and the
training settings are given to ``__init__``; :meth:`ExecutionModel.fit` fits the input scaler
on the leading training rows, trains the network with early stopping on the rest, and returns
the model; what it learned lives in attributes ending in ``_``. The registry holds the
network's state dict (a torch artifact); the architecture and the scaler are its metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.execution.fit import ExecHistory, ExecTrainConfig, train_execution_net
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS, InputScaler, SeededRows
from quantcrew.ml_server.services.execution.net import (
    ExecutionConfig,
    ExecutionNet,
    PlanSamples,
    build_execution_net,
    execution_state,
    load_execution_net,
    sample_plans,
)

__all__ = ["ExecutionModel"]

FloatArray = npt.NDArray[np.float64]


class ExecutionModel:
    """Order size and timing per decision, with MC-dropout draws.

    Args:
        config: The network's architecture.
        train: Epochs, batch size, optimiser and patience; its seed also fixes the initial weights.
        train_fraction: Leading share of the rows the scaler and the weights are fitted on; the
            rest stops training early and scores it.
        device: Torch device the network trains and answers on.

    Attributes:
        scaler_: The input scaler, fitted on the training rows.
        net_: The trained network (eval mode).
        history_: What training did (None for a model rebuilt from the registry).
        n_train_: Training rows.
        n_validation_: Validation rows.
        cancelled_: True when ``should_stop`` ended :meth:`fit` (the model is then not fitted).
    """

    family: ClassVar[str] = "execution"

    scaler_: InputScaler
    net_: ExecutionNet
    history_: ExecHistory | None

    def __init__(self, config: ExecutionConfig | None = None, *, train: ExecTrainConfig | None = None,
                 train_fraction: float = 0.8, device: str = "cpu") -> None:
        self.config = config if config is not None else ExecutionConfig()
        self.train = train if train is not None else ExecTrainConfig()
        self.train_fraction = train_fraction
        self.device = device
        self.cancelled_ = False

    def fit(self, x: FloatArray, size: FloatArray, timing: npt.NDArray[Any], *,
            on_epoch: Callable[[int, int, float, float], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Self:
        """Fit the scaler and train the network on the leading rows, stopping early on the rest.

        Args:
            x: Unscaled inputs ``(n, D)`` in :data:`EXECUTION_INPUTS` order.
            size: Size targets in ``[0, 1]``.
            timing: Timing targets, 0 (now) or 1 (wait).
            on_epoch: Called after each epoch with ``(epoch, epochs, train_loss, val_loss)``.
            should_stop: Polled before each minibatch; True abandons the fit (``cancelled_``).

        Returns:
            The model, fitted unless ``cancelled_``.

        Raises:
            ValueError: shapes that do not fit the network, non-finite inputs, targets out of range.
        """
        cut = int(len(x) * self.train_fraction)
        scaler = InputScaler.fit(x[:cut])
        net = build_execution_net(self.config, seed=self.train.seed).to(self.device)
        history = train_execution_net(
            net, scaler.transform(x[:cut]), size[:cut], timing[:cut], scaler.transform(x[cut:]), size[cut:],
            timing[cut:], self.train, device=self.device, on_epoch=on_epoch, should_stop=should_stop)
        if history.cancelled:
            self.cancelled_ = True
            return self
        self.scaler_, self.net_, self.history_ = scaler, net, history
        self.n_train_, self.n_validation_ = cut, len(x) - cut
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError("this ExecutionModel is not fitted: call fit, or rebuild a stored one")

    # -- the registry side -------------------------------------------------------------------

    def to_artifact(self) -> Artifact:
        """The network's state dict; its architecture, the scaler and the input names as metadata."""
        self._check_fitted()
        return Artifact(obj=execution_state(self.net_), fmt="torch", method="mc_dropout_mlp",
                        metadata={"config": self.config.to_dict(), "scaler": self.scaler_.to_dict(),
                                  "inputs": list(EXECUTION_INPUTS)})

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> Self:
        """The stored network on ``context["device"]`` (the CPU by default).

        Raises:
            KeyError: the metadata lacks the architecture or the scaler.
            ValueError: they are malformed, or the tensors do not fit the architecture.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"an execution artifact is a state dict, not a {type(obj).__name__}")
        device = str(context.get("device", "cpu"))
        config = ExecutionConfig.from_dict(info.metadata["config"])
        model = cls(config, device=device)
        model.scaler_ = InputScaler.from_dict(info.metadata["scaler"])
        model.net_ = load_execution_net(config, obj, device)
        model.history_ = None
        return model

    # -- answering ---------------------------------------------------------------------------

    def transform(self, x: FloatArray) -> npt.NDArray[np.float32]:
        """Unscaled inputs ``(B, D)`` -> the network's float32 inputs."""
        self._check_fitted()
        return self.scaler_.transform(x).astype(np.float32)

    def sample(self, x: npt.NDArray[np.float32], samples: int, seed: int | None) -> PlanSamples:
        """``samples`` MC-dropout draws of every row of scaled ``x``, in one forward pass."""
        self._check_fitted()
        return sample_plans(self.net_, x, samples, seed=seed, device=self.device)

    def batch_sample(self, items: Sequence[SeededRows], samples: int) -> list[PlanSamples]:
        """Gathered requests in one device-thread call: the dynamic batcher's ``run``.

        Each request is drawn with its own seeded generator, so its plan does not depend on the
        requests it was gathered with (one small pass each: the net is a few thousand weights).
        """
        return [self.sample(item.x, samples, item.seed) for item in items]
