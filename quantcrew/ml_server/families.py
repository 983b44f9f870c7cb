"""The server's families, listed once: name -> router, whether it stores models, its model adapter.

:data:`FAMILIES` is a plain dict written out here; nothing registers itself by being imported.
The app mounts the routers in this order, under ``/v1``. A stateful family stores models in the
registry through its model adapter (see :mod:`quantcrew.ml_server.services.adapter`); the adapter
is named by a ``"module:Class"`` path and imported on first use, so that importing this module
(and starting the server) never imports torch or stable-baselines3.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from quantcrew.ml_server.routes import (
    anomaly,
    bandit,
    cluster,
    decompose,
    ensemble,
    execution,
    explain,
    monitor,
    regime,
    risk,
    rl,
    supervised,
)

__all__ = ["FAMILIES", "Family", "UnknownFamilyError", "get_family", "stateful_families"]


class UnknownFamilyError(LookupError):
    """No family by that name; the message lists the valid ones."""


@dataclass(frozen=True)
class Family:
    """One family of models served under ``/v1/<name>``.

    Attributes:
        name: The family's name: its URL prefix and the ``family`` of its registry entries.
        router: Its routes.
        stateful: Whether it stores models in the registry.
        adapter: Its model adapter, as a class or a ``"module:Class"`` path (imported on first use);
            None for a family that stores nothing.
        description: One line on what it serves.
    """

    name: str
    router: APIRouter
    stateful: bool
    adapter: str | type[Any] | None
    description: str

    def adapter_class(self) -> type[Any]:
        """The model adapter class, imported now if it was named by path.

        Raises:
            ValueError: the family stores no models.
            ImportError, AttributeError: the path names no class.
        """
        if self.adapter is None:
            raise ValueError(f"family {self.name!r} stores no models: it has no model adapter")
        if not isinstance(self.adapter, str):
            return self.adapter
        module, _, attr = self.adapter.partition(":")
        found: type[Any] = getattr(importlib.import_module(module), attr)
        return found


_SERVICES = "quantcrew.ml_server.services"

FAMILIES: dict[str, Family] = {
    "regime": Family("regime", regime.router, True, f"{_SERVICES}.regime.model:RegimeDetector",
                     "Gaussian HMM market regimes from filtered (causal) probabilities."),
    "risk": Family("risk", risk.router, False, None,
                   "Shrunk covariance, portfolio VaR / CVaR and rolling VaR backtests."),
    "decompose": Family("decompose", decompose.router, True, f"{_SERVICES}.decompose.model:DecompositionModel",
                        "PCA, FastICA and NMF factors of a returns matrix."),
    "cluster": Family("cluster", cluster.router, True, f"{_SERVICES}.cluster.model:ClusterModel",
                      "KMeans, DBSCAN and Gaussian mixtures of market states or assets."),
    "anomaly": Family("anomaly", anomaly.router, True, f"{_SERVICES}.anomaly.model:AnomalyDetector",
                      "IsolationForest scores and flags on causal OHLCV features."),
    "supervised": Family("supervised", supervised.router, True, f"{_SERVICES}.supervised.model:SupervisedModel",
                         "RandomForest, GradientBoosting and MLP models with a chronological holdout."),
    "rl": Family("rl", rl.router, True, f"{_SERVICES}.rl.policy:PolicyModel",
                 "Specialised trading policies (stable-baselines3), trained as jobs."),
    "bandit": Family("bandit", bandit.router, False, None,
                     "One multi-armed bandit per regime choosing among the specialised agents."),
    "ensemble": Family("ensemble", ensemble.router, True, f"{_SERVICES}.ensemble.model:EnsembleModel",
                       "Walk-forward ensembles with calibrated uncertainty and deployment stages."),
    "execution": Family("execution", execution.router, True, f"{_SERVICES}.execution.model:ExecutionModel",
                        "Order size and timing with MC-dropout uncertainty."),
    "monitor": Family("monitor", monitor.router, False, None,
                      "Prediction log and outcomes, live quality per version, drift, alerts."),
    "explain": Family("explain", explain.router, False, None,
                      "Permutation importance, a global surrogate with its fidelity, local explanations."),
}
"""Every family, in the order the app mounts them (which is the order of the OpenAPI paths)."""


def get_family(name: str) -> Family:
    """The family called ``name``.

    Raises:
        UnknownFamilyError: no such family (the message lists the valid names).
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown family {name!r}; valid: {', '.join(FAMILIES)}") from None


def stateful_families() -> list[Family]:
    """The families that store models, in :data:`FAMILIES` order."""
    return [f for f in FAMILIES.values() if f.stateful]
