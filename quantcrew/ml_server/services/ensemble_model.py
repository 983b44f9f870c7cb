"""A stored ensemble, rebuilt from its state dict and metadata, answering batches of feature windows.

The registry holds one torch artifact per ensemble version: the member-batched nets' tensors
under ``<arch>.`` prefixes, loaded with ``torch.load(weights_only=True)``. Everything else
(architectures, temperatures, weights, the feature scaler, window and horizon) is plain JSON
metadata. A loaded ensemble is cached per (model id, SHA-256, device).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services import calibration
from quantcrew.ml_server.services.ensemble_nets import (
    MemberNet,
    NetConfig,
    load_net,
    mc_dropout_logits,
    member_logits,
    net_state,
)

__all__ = ["EnsembleSpec", "LoadedEnsemble", "load_ensemble", "pack_state", "scaled_windows"]

FloatArray = npt.NDArray[np.float64]
_CACHE: OrderedDict[tuple[str, str, str], LoadedEnsemble] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


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
        return list(self.configs)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "configs": {a: c.to_dict() for a, c in self.configs.items()},
            "temperatures": self.temperatures, "mc_temperatures": self.mc_temperatures, "weights": self.weights,
            "scaler": {"mean": list(self.scaler_mean), "std": list(self.scaler_std)},
            "feature_names": list(self.feature_names), "window": self.window, "horizon": self.horizon,
            "up_threshold": self.up_threshold, "down_threshold": self.down_threshold, "symbol": self.symbol,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> EnsembleSpec:
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
        except (KeyError, TypeError, ValueError) as exc:
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


class LoadedEnsemble:
    """An ensemble version ready to answer, its nets on one device."""

    def __init__(self, info: ModelInfo, spec: EnsembleSpec, nets: dict[str, MemberNet], device: str) -> None:
        self.info = info
        self.spec = spec
        self.nets = nets
        self.device = device
        self.mean = np.asarray(spec.scaler_mean, dtype=np.float64)
        self.std = np.asarray(spec.scaler_std, dtype=np.float64)

    @property
    def n_features(self) -> int:
        return len(self.spec.feature_names)

    def logits(self, windows: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Every member's logits, one pass per architecture: ``{arch: (M, B, C)}``."""
        x = torch.from_numpy(windows).to(self.device)
        return {a: member_logits(net, x).float().cpu().numpy() for a, net in self.nets.items()}

    def mc_logits(self, windows: npt.NDArray[np.float32], samples: int,
                  seed: int | None) -> dict[str, npt.NDArray[np.float32]]:
        """Member 0 of each architecture with dropout on, ``samples`` passes in one batch: ``{arch: (S, B, C)}``."""
        x = torch.from_numpy(windows).to(self.device)
        out: dict[str, npt.NDArray[np.float32]] = {}
        for i, (a, net) in enumerate(self.nets.items()):
            s = None if seed is None else seed + i
            out[a] = mc_dropout_logits(net, x, samples, member=0, seed=s).float().cpu().numpy()
        return out

    def batch_logits(self, items: Sequence[npt.NDArray[np.float32]]) -> list[dict[str, npt.NDArray[np.float32]]]:
        """Gathered requests through one pass: the dynamic batcher's ``run``."""
        return _split(self.logits(np.concatenate(items, axis=0)), [len(w) for w in items], axis=1)

    def batch_mc_logits(self, items: Sequence[npt.NDArray[np.float32]],
                        samples: int) -> list[dict[str, npt.NDArray[np.float32]]]:
        return _split(self.mc_logits(np.concatenate(items, axis=0), samples, None), [len(w) for w in items], axis=1)

    def member_probabilities(self, logits: Mapping[str, npt.NDArray[np.float32]], *,
                             mc: bool) -> tuple[list[str], FloatArray, FloatArray]:
        """Temperature-scaled member probabilities of all architectures, stacked, with their weights.

        Returns:
            ``(sources, probs (K, B, C), weights (K,))``: an architecture's weight is shared
            evenly by its members (or dropout samples).
        """
        temps = self.spec.mc_temperatures if mc else self.spec.temperatures
        probs, weights = [], []
        for a, lg in logits.items():
            p = calibration.softmax(lg.astype(np.float64), temps[a])
            probs.append(p)
            weights.append(np.full(len(p), self.spec.weights[a] / len(p)))
        return list(logits), np.concatenate(probs, axis=0), np.concatenate(weights)


def _split(out: Mapping[str, npt.NDArray[np.float32]], sizes: Sequence[int],
           axis: int) -> list[dict[str, npt.NDArray[np.float32]]]:
    bounds = np.cumsum([0, *sizes])
    return [{a: np.take(v, range(int(bounds[i]), int(bounds[i + 1])), axis=axis) for a, v in out.items()}
            for i in range(len(sizes))]


def is_loaded(model_id: str, device: str) -> bool:
    """Whether some version of ``model_id`` is cached on ``device`` (its SHA-256 is checked again on use)."""
    with _CACHE_LOCK:
        return any(k[0] == model_id and k[2] == device for k in _CACHE)


def load_ensemble(registry: ModelRegistry, model_id: str, device: str) -> LoadedEnsemble:
    """Verify, load and cache an ensemble version.

    Raises:
        ModelNotFoundError: unknown id or not an ensemble.
        ArtifactIntegrityError: the artifact changed, or its tensors do not fit its metadata.
    """
    info = registry.get(model_id)
    key = (model_id, info.sha256, device)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    state, info = registry.load(model_id, family="ensemble")
    try:
        spec = EnsembleSpec.from_metadata(info.metadata)
        nets = {a: load_net(cfg, {k[len(a) + 1:]: v for k, v in state.items() if k.startswith(a + ".")}, device)
                for a, cfg in spec.configs.items()}
    except ValueError as exc:
        raise ArtifactIntegrityError(f"ensemble '{model_id}' cannot be rebuilt: {exc}",
                                     details={"model_id": model_id}) from exc
    loaded = LoadedEnsemble(info, spec, nets, device)
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded

