"""The ensemble model: member-batched nets per architecture, calibrated and weighted, as a registry adapter.

:class:`EnsembleModel` follows scikit-learn's estimator contract: its configuration (the nets'
architectures, window, horizon, label thresholds, training settings) is given to ``__init__``;
:meth:`EnsembleModel.fit` trains every architecture's members on a span of rows, then fits on a
later validation span the temperature of the ensemble and of MC dropout and the architecture
weights, and returns the model; what it learned lives in attributes ending in ``_``.

The registry holds one torch artifact per ensemble version: the member-batched nets' tensors
under ``<arch>.`` prefixes, loaded with ``torch.load(weights_only=True)``. Everything else
(architectures, temperatures, weights, the feature scaler, window and horizon) is plain JSON
metadata (:class:`EnsembleSpec`). A rebuilt ensemble lives in the registry's one cache, one copy
per device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch

from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP
from quantcrew.ml_server.services.ensemble.fit import TrainConfig, train_net
from quantcrew.ml_server.services.ensemble.nets import (
    MemberNet,
    NetConfig,
    build_net,
    load_net,
    mc_dropout_logits,
    member_logits,
    net_state,
)
from quantcrew.quant import calibration

__all__ = ["EnsembleModel", "EnsembleSpec", "pack_state", "scaled_windows"]

FloatArray = npt.NDArray[np.float64]
Logits = dict[str, npt.NDArray[np.float32]]
EpochReport = Callable[[str, int, int, float, float], None]
"""Called after each training epoch as ``(architecture, epoch, epochs, train_loss, val_loss)``."""

_NET_SEED_STRIDE = 7919  # architecture k's members start from seed + 7919 k


@dataclass(frozen=True)
class EnsembleSpec:
    """What an ensemble needs besides its weights (stored as the artifact's metadata)."""

    configs: dict[str, NetConfig]
    temperatures: dict[str, float]
    mc_temperatures: dict[str, float]
    weights: dict[str, float]
    scaler_mean: tuple[float, ...]
    scaler_std: tuple[float, ...]
    feature_names: tuple[str, ...]
    window: int
    horizon: int
    up_threshold: float
    down_threshold: float
    symbol: str | None

    @property
    def architectures(self) -> list[str]:
        """The architectures, in the order they were trained."""
        return list(self.configs)

    def to_metadata(self) -> dict[str, Any]:
        """The spec as JSON-able metadata."""
        return {
            "configs": {a: c.to_dict() for a, c in self.configs.items()},
            "temperatures": self.temperatures, "mc_temperatures": self.mc_temperatures, "weights": self.weights,
            "scaler": {"mean": list(self.scaler_mean), "std": list(self.scaler_std)},
            "feature_names": list(self.feature_names), "window": self.window, "horizon": self.horizon,
            "up_threshold": self.up_threshold, "down_threshold": self.down_threshold, "symbol": self.symbol,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> EnsembleSpec:
        """The spec stored by :meth:`to_metadata`.

        Raises:
            ValueError: a key is missing or a value malformed.
        """
        try:
            return cls(
                configs={a: NetConfig.from_dict(c) for a, c in meta["configs"].items()},
                temperatures={a: float(t) for a, t in meta["temperatures"].items()},
                mc_temperatures={a: float(t) for a, t in meta["mc_temperatures"].items()},
                weights={a: float(w) for a, w in meta["weights"].items()},
                scaler_mean=tuple(float(v) for v in meta["scaler"]["mean"]),
                scaler_std=tuple(float(v) for v in meta["scaler"]["std"]),
                feature_names=tuple(str(v) for v in meta["feature_names"]),
                window=int(meta["window"]), horizon=int(meta["horizon"]),
                up_threshold=float(meta["up_threshold"]), down_threshold=float(meta["down_threshold"]),
                symbol=meta.get("symbol"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"ensemble metadata is incomplete or malformed: {exc}") from exc


def pack_state(nets: Mapping[str, MemberNet]) -> dict[str, torch.Tensor]:
    """One flat state dict for all architectures, keys prefixed ``<arch>.``."""
    return {f"{arch}.{k}": v for arch, net in nets.items() for k, v in net_state(net).items()}


def scaled_windows(features: FloatArray, mean: FloatArray, std: FloatArray, rows: npt.NDArray[np.int64],
                   window: int) -> npt.NDArray[np.float32]:
    """Windows ending at each of ``rows``: ``(len(rows), window, F)`` float32 of standardised features.

    Standardised values are clipped at +-10 so one extreme bar cannot saturate a member.
    """
    scaled = np.clip((features - mean) / std, -10.0, 10.0)
    view = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0)  # (n - window + 1, F, window)
    out = view[rows - window + 1].transpose(0, 2, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _rows(span: tuple[int, int]) -> npt.NDArray[np.int64]:
    return np.arange(span[0], span[1], dtype=np.int64)


class EnsembleModel:
    """A deep ensemble (and its MC-dropout view) over windows of engineered features.

    Args:
        configs: One member-batched net per architecture, in the order they are trained.
        window: Bars of features each prediction reads.
        horizon: Bars ahead whose move is classified (recorded with the model).
        up_threshold: Move above which a bar is labelled up (recorded with the model).
        down_threshold: Move below minus this is labelled down (recorded with the model).
        symbol: Instrument the model was trained on, if one.
        feature_names: The feature columns the model reads, in order.
        train: Epochs, batch size, optimiser and patience; its seed seeds the members' initial
            weights (architecture ``k`` from ``seed + 7919 k``) and the MC-dropout samples of
            the temperature fit (``seed + k``).
        mc_samples: MC-dropout samples the MC temperature is fitted on.
        device: Torch device the nets train and answer on.

    Attributes:
        nets_: The trained nets, by architecture.
        scaler_mean_: Feature means over the fit rows.
        scaler_std_: Feature standard deviations over the fit rows (1 where constant).
        temperatures_: Ensemble temperature per architecture.
        mc_temperatures_: MC-dropout temperature per architecture.
        weights_: Mixture weight per architecture (they sum to 1).
        cancelled_: True when ``should_stop`` ended :meth:`fit` (the model is then not fitted).
    """

    family: ClassVar[str] = "ensemble"

    nets_: dict[str, MemberNet]
    scaler_mean_: FloatArray
    scaler_std_: FloatArray
    temperatures_: dict[str, float]
    mc_temperatures_: dict[str, float]
    weights_: dict[str, float]

    def __init__(self, configs: Mapping[str, NetConfig], *, window: int, horizon: int, up_threshold: float,
                 down_threshold: float, symbol: str | None = None, feature_names: Sequence[str] = FEATURE_NAMES,
                 train: TrainConfig | None = None, mc_samples: int = 30, device: str = "cpu") -> None:
        self.configs = dict(configs)
        self.window = window
        self.horizon = horizon
        self.up_threshold = up_threshold
        self.down_threshold = down_threshold
        self.symbol = symbol
        self.feature_names = tuple(feature_names)
        self.train = train if train is not None else TrainConfig()
        self.mc_samples = mc_samples
        self.device = device
        self.cancelled_ = False

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, features: FloatArray, labels: npt.NDArray[np.int64], fit_rows: tuple[int, int],
            val_rows: tuple[int, int], *, on_epoch: EpochReport | None = None,
            should_stop: Callable[[], bool] | None = None) -> Self:
        """Train every architecture on windows ending at ``fit_rows``, calibrate on ``val_rows``.

        The feature scaler sees feature rows up to the last fit row only (never a validation
        or test bar). Each architecture's members stop early on the validation rows; then
        the ensemble and MC-dropout temperatures and the architecture weights are fitted there.

        Args:
            features: Engineered features of every bar, ``(n, F)``.
            labels: Direction label of every bar, ``(n,)``.
            fit_rows: ``[start, stop)`` of the bars whose windows train the nets.
            val_rows: ``[start, stop)`` of the later bars that stop training and calibrate.
            on_epoch: Progress, after each epoch of each architecture.
            should_stop: Polled before every minibatch; True abandons the fit (``cancelled_``).

        Returns:
            The model, fitted unless ``cancelled_``.
        """
        (fs, fe) = fit_rows
        fit_feats = features[WARMUP:fe]
        mean = fit_feats.mean(axis=0)
        std = np.where(fit_feats.std(axis=0) > 1e-12, fit_feats.std(axis=0), 1.0)
        x_fit = scaled_windows(features, mean, std, _rows(fit_rows), self.window)
        x_val = scaled_windows(features, mean, std, _rows(val_rows), self.window)
        y_fit, y_val = labels[fs:fe], labels[val_rows[0]:val_rows[1]]
        seed = self.train.seed
        nets: dict[str, MemberNet] = {}
        temps: dict[str, float] = {}
        mc_temps: dict[str, float] = {}
        val_probs: list[FloatArray] = []
        xv = torch.from_numpy(x_val).to(self.device)
        for k, (arch, config) in enumerate(self.configs.items()):
            net = build_net(config, seed=seed + _NET_SEED_STRIDE * k).to(self.device)
            report = None if on_epoch is None else _for_arch(on_epoch, arch)
            history = train_net(net, x_fit, y_fit, x_val, y_val, self.train, device=self.device, on_epoch=report,
                                should_stop=should_stop)
            if history.cancelled:
                self.cancelled_ = True
                return self
            logits = member_logits(net, xv).float().cpu().numpy().astype(np.float64)
            temps[arch] = calibration.fit_temperature(logits, y_val)
            mc = mc_dropout_logits(net, xv, self.mc_samples, member=0, seed=seed + k).float().cpu().numpy()
            mc_temps[arch] = calibration.fit_temperature(mc.astype(np.float64), y_val)
            val_probs.append(calibration.mean_probs(logits, temps[arch]))
            nets[arch] = net
        w = calibration.fit_mixture_weights(val_probs, y_val)
        self.nets_ = nets
        self.scaler_mean_, self.scaler_std_ = mean, std
        self.temperatures_, self.mc_temperatures_ = temps, mc_temps
        self.weights_ = {str(a): float(v) for a, v in zip(self.configs, w, strict=True)}
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "nets_"):
            raise NotFittedError("this EnsembleModel is not fitted: call fit, or rebuild a stored one")

    # -- the registry side -------------------------------------------------------------------

    @property
    def spec(self) -> EnsembleSpec:
        """Everything but the weights, as stored in the registry."""
        self._check_fitted()
        return EnsembleSpec(
            configs=self.configs, temperatures=self.temperatures_, mc_temperatures=self.mc_temperatures_,
            weights=self.weights_, scaler_mean=tuple(float(v) for v in self.scaler_mean_),
            scaler_std=tuple(float(v) for v in self.scaler_std_), feature_names=self.feature_names, window=self.window,
            horizon=self.horizon, up_threshold=self.up_threshold, down_threshold=self.down_threshold,
            symbol=self.symbol)

    def to_artifact(self) -> Artifact:
        """The nets' tensors (one flat state dict) and the spec as metadata."""
        spec = self.spec
        return Artifact(obj=pack_state(self.nets_), fmt="torch", method="+".join(self.configs),
                        metadata=spec.to_metadata())

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> Self:
        """The stored ensemble on ``context["device"]`` (the CPU by default).

        Raises:
            ValueError: the metadata is malformed, or the tensors do not fit the recorded architectures.
        """
        spec = EnsembleSpec.from_metadata(info.metadata)
        if not isinstance(obj, Mapping):
            raise ValueError(f"an ensemble artifact is a state dict, not a {type(obj).__name__}")
        device = str(context.get("device", "cpu"))
        model = cls(spec.configs, window=spec.window, horizon=spec.horizon, up_threshold=spec.up_threshold,
                    down_threshold=spec.down_threshold, symbol=spec.symbol, feature_names=spec.feature_names,
                    device=device)
        model.nets_ = {a: load_net(cfg, {k[len(a) + 1:]: v for k, v in obj.items() if k.startswith(a + ".")}, device)
                       for a, cfg in spec.configs.items()}
        model.scaler_mean_ = np.asarray(spec.scaler_mean, dtype=np.float64)
        model.scaler_std_ = np.asarray(spec.scaler_std, dtype=np.float64)
        model.temperatures_, model.mc_temperatures_ = spec.temperatures, spec.mc_temperatures
        model.weights_ = spec.weights
        return model

    # -- answering ---------------------------------------------------------------------------

    def windows(self, features: FloatArray, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Standardised windows ending at each of ``rows`` (see :func:`scaled_windows`)."""
        self._check_fitted()
        return scaled_windows(features, self.scaler_mean_, self.scaler_std_, rows, self.window)

    def logits(self, windows: npt.NDArray[np.float32]) -> Logits:
        """Every member's logits, one pass per architecture: ``{arch: (M, B, C)}``."""
        self._check_fitted()
        x = torch.from_numpy(windows).to(self.device)
        return {a: member_logits(net, x).float().cpu().numpy() for a, net in self.nets_.items()}

    def mc_logits(self, windows: npt.NDArray[np.float32], samples: int, seed: int | None) -> Logits:
        """Member 0 of each architecture with dropout on, ``samples`` passes in one batch: ``{arch: (S, B, C)}``.

        Architecture ``i`` draws its masks with ``seed + i`` (torch's global generator without a seed).
        """
        self._check_fitted()
        x = torch.from_numpy(windows).to(self.device)
        out: Logits = {}
        for i, (a, net) in enumerate(self.nets_.items()):
            s = None if seed is None else seed + i
            out[a] = mc_dropout_logits(net, x, samples, member=0, seed=s).float().cpu().numpy()
        return out

    def batch_logits(self, items: Sequence[npt.NDArray[np.float32]]) -> list[Logits]:
        """Gathered requests through one pass: the dynamic batcher's ``run``."""
        return _split(self.logits(np.concatenate(items, axis=0)), [len(w) for w in items], axis=1)

    def batch_mc_logits(self, items: Sequence[npt.NDArray[np.float32]], samples: int) -> list[Logits]:
        """Gathered requests through one MC-dropout pass (unseeded): the dynamic batcher's ``run``."""
        return _split(self.mc_logits(np.concatenate(items, axis=0), samples, None), [len(w) for w in items], axis=1)

    def member_probabilities(self, logits: Mapping[str, npt.NDArray[np.float32]], *,
                             mc: bool) -> tuple[list[str], FloatArray, FloatArray]:
        """Temperature-scaled member probabilities of all architectures, stacked, with their weights.

        Returns:
            ``(sources, probs (K, B, C), weights (K,))``: an architecture's weight is shared
            evenly by its members (or dropout samples).
        """
        self._check_fitted()
        temps = self.mc_temperatures_ if mc else self.temperatures_
        probs, weights = [], []
        for a, lg in logits.items():
            p = calibration.softmax(lg.astype(np.float64), temps[a])
            probs.append(p)
            weights.append(np.full(len(p), self.weights_[a] / len(p)))
        return list(logits), np.concatenate(probs, axis=0), np.concatenate(weights)


def _for_arch(on_epoch: EpochReport, arch: str) -> Callable[[int, int, float, float], None]:
    def report(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
        on_epoch(arch, epoch, epochs, train_loss, val_loss)

    return report


def _split(out: Mapping[str, npt.NDArray[np.float32]], sizes: Sequence[int], axis: int) -> list[Logits]:
    bounds = np.cumsum([0, *sizes])
    return [{a: np.take(v, range(int(bounds[i]), int(bounds[i + 1])), axis=axis) for a, v in out.items()}
            for i in range(len(sizes))]
