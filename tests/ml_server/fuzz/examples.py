"""One valid, small, deterministic request per operation of the ML server, in the order they depend on each other.

The fuzz test sends these first (its 'examples' phase): each must answer 2xx, which is what makes the
fuzzing reach the compute paths rather than only the validation in front of them. An example that needs an
id from an earlier reply (a fitted model, a job, a bandit decision) reads it from the ``Ids`` a previous
example's ``keep`` filled in. Training stays tiny: a few hundred RL timesteps, one epoch.

The same payloads (with the ids filled in) are the base the 'compute' phase of the fuzz test lays generated
parameters over: for each compute operation, ``PINNED`` names the fields that keep the example's value (the
data, the ids, and the knobs that only make a request slower: tree counts, paths, restarts, epochs); every
other field takes the generated value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from quantcrew.data import generate_regime_market, to_payload_dict

__all__ = ["BEFORE", "COMPUTE", "EXAMPLES", "JOB_STARTERS", "PINNED", "Example", "Ids"]

Ids = dict[str, Any]
"""Ids and results kept from earlier replies, by name."""

Build = Callable[[Ids], dict[str, Any]]


def _none(_: Ids) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Example:
    """One request: the operation (``"POST /v1/regime/fit"``) and how to build its parts from the ids so far."""

    label: str
    body: Build | None = None
    path: Build = _none
    query: Build = _none
    keep: Callable[[Any, Ids], None] | None = None
    """Reads what later examples need out of the reply's JSON."""
    wait: bool = False
    """The reply is a job: wait for it and keep its finished JobInfo as the reply (it must succeed)."""


@cache
def _bars(n: int, seed: int) -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(n, seed=seed).bars)


def bars(n: int = 240) -> dict[str, Any]:
    """A regime-switching market's daily bars (the same every run)."""
    return _bars(n, 3)


def rl_bars() -> dict[str, Any]:
    """The bars the RL policies and the ensemble train on: enough for a train span, a validation and a test
    (the ensemble trains its execution network only on 120 out-of-sample rows or more)."""
    return _bars(600, 5)


def tail(payload: dict[str, Any], n: int) -> dict[str, Any]:
    """The last ``n`` bars of a payload."""
    return {k: (v[-n:] if isinstance(v, list) else v) for k, v in payload.items()}


@cache
def _table(rows: int, seed: int) -> tuple[tuple[float, ...], ...]:
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    return tuple(tuple(float(round(x, 8)) for x in row) for row in rng.normal(0.0, 0.01, (rows, 3)) @ mix)


def returns(rows: int = 120, seed: int = 1) -> dict[str, Any]:
    """Daily simple returns of three correlated assets."""
    return {"columns": ["AAA", "BBB", "CCC"], "values": [list(r) for r in _table(rows, seed)]}


def _target(rows: int) -> list[float]:
    values = np.asarray(_table(rows, 1))
    return [float(round(v, 8)) for v in values @ np.array([2.0, -1.0, 0.5])]


_SIGNALS = [{"signal": "up", "confidence": 0.7}, {"signal": "down", "confidence": 0.55}]
_MARKET = [{"ret_1": 0.001, "ret_5": 0.01, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.012},
           {"ret_1": -0.002, "ret_5": -0.01, "vol_10": 0.015, "vol_ratio": 1.2, "range": 0.02, "volume_z": 0.5}]
_RL = {"agents": ["aggressive", "balanced"], "algorithm": "a2c", "timesteps": 256, "n_envs": 2, "seeds": 1,
       "grid": {"reward_scale": [1.0]}, "regime_features": False, "symbol": "FUZZ"}
_ENSEMBLE = {"architectures": ["lstm"], "members": 1, "window": 8, "hidden": 8, "epochs": 1, "folds": 1,
             "batch_size": 64, "mc_samples": 2, "symbol": "FUZZ", "name": "fuzz-ensemble"}
_REGIME = {"n_states": 2, "n_restarts": 1}
_SMALL_MODEL = {"n_estimators": 10, "max_iter": 50, "hidden_layer_sizes": [8]}


def _put(name: str, *path: str | int) -> Callable[[Any, Ids], None]:
    """A ``keep`` that stores ``reply[path...]`` under ``name``."""

    def keep(reply: Any, ids: Ids) -> None:
        value = reply
        for part in path:
            value = value[part]
        ids[name] = value

    return keep


def _keep_job(name: str) -> Callable[[Any, Ids], None]:
    return _put(name, "job_id")


def _keep_rl(reply: Any, ids: Ids) -> None:
    ids["rl_ids"] = [p["model_id"] for p in reply["result"]["policies"]]


def _keep_ensemble(reply: Any, ids: Ids) -> None:
    ids["ensemble_id"] = reply["result"]["model"]["model_id"]
    if reply["result"]["execution_model"] is not None:  # trained on 120 out-of-sample rows or more
        ids["execution_id"] = reply["result"]["execution_model"]["model_id"]


EXAMPLES: tuple[Example, ...] = (
    Example("GET /health"),
    Example("GET /ready"),
    Example("GET /metrics"),
    # jobs first, so that they train while the synchronous examples run; one worker: the victim waits queued
    Example("POST /v1/ensemble/train", lambda _: {"data": rl_bars(), **_ENSEMBLE}, keep=_keep_job("ensemble_job")),
    Example("POST /v1/rl/train", lambda _: {"data": rl_bars(), **_RL}, keep=_keep_job("rl_job")),
    Example("POST /v1/regime/causal",
            lambda _: {"data": bars(), **_REGIME, "min_train": 150, "refit_every": 45, "symbol": "FUZZ"},
            keep=_keep_job("victim_job")),
    Example("DELETE /v1/jobs/{job_id}", path=lambda ids: {"job_id": ids["victim_job"]}),
    Example("POST /v1/regime/label", lambda _: {"data": bars(), **_REGIME}),
    Example("POST /v1/regime/fit", lambda _: {"data": bars(), **_REGIME, "name": "fuzz-regime"},
            keep=_put("regime_id", "model", "model_id")),
    Example("POST /v1/regime/predict", lambda ids: {"model_id": ids["regime_id"], "data": tail(bars(), 60)}),
    Example("POST /v1/monitor/drift", lambda ids: {"model_id": ids["regime_id"], "data": tail(bars(), 80)}),
    Example("GET /v1/monitor/drift/{model_id}", path=lambda ids: {"model_id": ids["regime_id"]}),
    Example("POST /v1/monitor/outcomes", lambda _: {"outcomes": [
        {"outcome_id": "fuzz-1:FUZZ", "subject": "FUZZ", "as_of": "2020-01-02", "realised_return": 0.01}]}),
    Example("GET /v1/monitor/outcomes", query=lambda _: {"subject": "FUZZ"}),
    Example("GET /v1/monitor/predictions/{model_id}", path=lambda ids: {"model_id": ids["regime_id"]}),
    Example("GET /v1/monitor/models/{model_id}", path=lambda ids: {"model_id": ids["regime_id"]}),
    # alerts: a client's breaker opening, the default rule on it evaluated, the alert acknowledged and resolved
    Example("POST /v1/monitor/events", lambda _: {"kind": "breaker_open", "client": "fuzz", "failures": 3}),
    Example("POST /v1/monitor/alerts/evaluate", lambda _: {"rules": ["client-breaker-open"]},
            keep=_put("alert_id", "changed", 0, "alert_id")),
    Example("GET /v1/monitor/alerts", query=lambda _: {"status": "firing"}),
    Example("GET /v1/monitor/alerts/{alert_id}", path=lambda ids: {"alert_id": ids["alert_id"]}),
    Example("POST /v1/monitor/alerts/{alert_id}/ack", lambda _: {"by": "fuzz"},
            path=lambda ids: {"alert_id": ids["alert_id"]}),
    Example("POST /v1/monitor/alerts/{alert_id}/resolve", lambda _: {"by": "fuzz", "note": "fuzzed"},
            path=lambda ids: {"alert_id": ids["alert_id"]}),
    Example("POST /v1/risk/covariance", lambda _: {"data": returns()}),
    Example("POST /v1/risk/var",
            lambda _: {"data": returns(), "methods": ["historical", "parametric_normal", "parametric_t",
                                                     "monte_carlo"], "n_paths": 2000, "levels": [0.95, 0.99]}),
    Example("POST /v1/risk/backtest",
            lambda _: {"data": returns(), "methods": ["historical", "parametric_normal"], "window": 60,
                       "weights": [0.5, 0.3, 0.2], "n_paths": 1000}),
    Example("POST /v1/decompose/analyze",
            lambda _: {"data": returns(), "method": "pca", "n_components": 2, "rolling_step": 21}),
    Example("POST /v1/decompose/fit",
            lambda _: {"data": returns(), "n_components": 2, "rolling_step": 21, "name": "fuzz-decompose"},
            keep=_put("decompose_id", "model", "model_id")),
    Example("POST /v1/decompose/transform",
            lambda ids: {"model_id": ids["decompose_id"], "data": returns(10, seed=2)}),
    Example("POST /v1/cluster/analyze", lambda _: {"data": returns(), "n_clusters": 2, "max_clusters": 6}),
    Example("POST /v1/cluster/fit",
            lambda _: {"data": returns(), "n_clusters": 2, "max_clusters": 6, "name": "fuzz-cluster"},
            keep=_put("cluster_id", "model", "model_id")),
    Example("POST /v1/cluster/predict", lambda ids: {"model_id": ids["cluster_id"], "data": returns(10, seed=2)}),
    Example("POST /v1/anomaly/detect", lambda _: {"data": bars(), "n_estimators": 20}),
    Example("POST /v1/anomaly/fit", lambda _: {"data": bars(), "n_estimators": 20, "name": "fuzz-anomaly"},
            keep=_put("anomaly_id", "model", "model_id")),
    Example("POST /v1/anomaly/score", lambda ids: {"model_id": ids["anomaly_id"], "data": tail(bars(), 40)}),
    Example("POST /v1/supervised/analyze",
            lambda _: {"features": returns(), "target": _target(120), "task": "regression", **_SMALL_MODEL,
                       "predict_features": returns(5, seed=2)}),
    Example("POST /v1/supervised/fit",
            lambda _: {"features": returns(), "target": _target(120), "task": "regression", **_SMALL_MODEL,
                       "name": "fuzz-supervised"},
            keep=_put("supervised_id", "model", "model_id")),
    Example("POST /v1/supervised/predict",
            lambda ids: {"model_id": ids["supervised_id"], "features": returns(5, seed=2)}),
    Example("POST /v1/bandit", lambda _: {"name": "fuzz", "arms": ["aggressive", "balanced"],
                                          "regimes": ["bull", "bear"]}),
    Example("GET /v1/bandit"),
    Example("POST /v1/bandit/select", lambda _: {"bandit": "fuzz", "regime": "bull"},
            keep=_put("decision_id", "decision_id")),
    Example("POST /v1/bandit/reward", lambda ids: {"decision_id": ids["decision_id"], "reward": 0.5}),
    Example("GET /v1/bandit/{bandit}", path=lambda _: {"bandit": "fuzz"}),
    Example("POST /v1/bandit/{bandit}/reset", lambda _: {"regime": "bull"}, path=lambda _: {"bandit": "fuzz"}),
    Example("POST /v1/bandit/simulate", lambda _: {"rounds": 200, "means": [0.2, 0.5, 0.6], "checkpoints": 4}),
    Example("POST /v1/bandit", lambda _: {"name": "fuzz-gone", "arms": ["a", "b"]}),
    Example("DELETE /v1/bandit/{bandit}", path=lambda _: {"bandit": "fuzz-gone"}),
    # the jobs started above, waited for
    Example("GET /v1/jobs/{job_id}", path=lambda ids: {"job_id": ids["ensemble_job"]}, wait=True,
            keep=_keep_ensemble),
    Example("GET /v1/jobs/{job_id}", path=lambda ids: {"job_id": ids["rl_job"]}, wait=True, keep=_keep_rl),
    Example("GET /v1/jobs", query=lambda _: {"limit": 10}),
    Example("POST /v1/ensemble/predict",
            lambda ids: {"data": tail(rl_bars(), 90), "model_id": ids["ensemble_id"], "last": 2}),
    Example("POST /v1/ensemble/deployments", lambda ids: {"model_id": ids["ensemble_id"], "stage": "full"}),
    Example("GET /v1/ensemble/deployments", query=lambda _: {"name": "fuzz-ensemble"}),
    Example("GET /v1/ensemble/deployments/{model_id}/shadow", path=lambda ids: {"model_id": ids["ensemble_id"]},
            query=lambda _: {"limit": 5}),
    Example("POST /v1/execution/plan",
            lambda ids: {"signals": _SIGNALS, "market": _MARKET, "model_id": ids["execution_id"], "samples": 8,
                         "seed": 1}),
    Example("POST /v1/rl/act", lambda ids: {"data": tail(rl_bars(), 80), "model_ids": ids["rl_ids"]}),
    Example("POST /v1/explain/global",
            lambda ids: {"model_id": ids["supervised_id"], "features": returns(), "rows": 60, "repeats": 2}),
    Example("POST /v1/explain/local", lambda ids: {"model_id": ids["ensemble_id"], "data": tail(rl_bars(), 120)}),
    Example("POST /v1/rl/evaluate", lambda ids: {"data": rl_bars(), "model_ids": ids["rl_ids"]}),
    Example("POST /v1/bandit/replay",
            lambda ids: {"bandit": "fuzz-replay", "symbol": "FUZZ", "data": rl_bars(), "model_ids": ids["rl_ids"],
                         "create": {"arms": ["aggressive", "balanced"]}},
            keep=_keep_job("replay_job")),
    Example("POST /v1/regime/causal",
            lambda _: {"data": bars(), **_REGIME, "min_train": 150, "refit_every": 45, "symbol": "FUZZ"},
            keep=_keep_job("causal_job")),
    Example("GET /v1/jobs/{job_id}", path=lambda ids: {"job_id": ids["replay_job"]}, wait=True),
    Example("GET /v1/jobs/{job_id}", path=lambda ids: {"job_id": ids["causal_job"]}, wait=True),
    Example("GET /v1/models", query=lambda _: {"family": "regime"}),
    Example("GET /v1/models/{model_id}", path=lambda ids: {"model_id": ids["regime_id"]}),
    # the model lifecycle: a second supervised version, staged, promoted, rolled back, compared, cleaned up
    Example("POST /v1/supervised/fit",
            lambda _: {"features": returns(), "target": _target(120), "task": "regression", **_SMALL_MODEL,
                       "name": "fuzz-supervised", "seed": 1, "trigger": "schedule"},
            keep=_put("supervised_id2", "model", "model_id")),
    Example("POST /v1/models/{model_id}/stage", lambda _: {"stage": "full", "reason": "fuzz champion"},
            path=lambda ids: {"model_id": ids["supervised_id"]}),
    Example("POST /v1/models/{model_id}/stage", lambda _: {"stage": "shadow"},
            path=lambda ids: {"model_id": ids["supervised_id2"]}),
    Example("POST /v1/models/{name}/promote", lambda _: {"to_stage": "full"},
            path=lambda _: {"name": "fuzz-supervised"}),
    Example("POST /v1/models/{name}/rollback", lambda _: {"reason": "fuzz"},
            path=lambda _: {"name": "fuzz-supervised"}),
    Example("GET /v1/models/{model_id}/lineage", path=lambda ids: {"model_id": ids["supervised_id2"]}),
    Example("GET /v1/models/events", query=lambda _: {"name": "fuzz-supervised"}),
    Example("POST /v1/models/compare",
            lambda ids: {"champion_id": ids["supervised_id"], "challenger_id": ids["supervised_id2"],
                         "features": returns(), "target": _target(120)}),
    Example("POST /v1/models/cleanup", lambda _: {"dry_run": True}),
)

JOB_STARTERS = frozenset({"POST /v1/regime/causal", "POST /v1/rl/train", "POST /v1/ensemble/train",
                          "POST /v1/bandit/replay"})
"""Operations that answer 202 with a job: the fuzz phases cancel any job they start."""

COMPUTE = frozenset({
    "POST /v1/regime/label", "POST /v1/regime/fit", "POST /v1/regime/predict", "POST /v1/regime/causal",
    "POST /v1/risk/covariance", "POST /v1/risk/var", "POST /v1/risk/backtest",
    "POST /v1/decompose/analyze", "POST /v1/decompose/fit", "POST /v1/decompose/transform",
    "POST /v1/cluster/analyze", "POST /v1/cluster/fit", "POST /v1/cluster/predict",
    "POST /v1/anomaly/detect", "POST /v1/anomaly/fit", "POST /v1/anomaly/score",
    "POST /v1/supervised/analyze", "POST /v1/supervised/fit", "POST /v1/supervised/predict",
    "POST /v1/rl/train", "POST /v1/rl/act", "POST /v1/rl/evaluate",
    "POST /v1/bandit/select", "POST /v1/bandit/reward", "POST /v1/bandit/simulate", "POST /v1/bandit/replay",
    "POST /v1/ensemble/train", "POST /v1/ensemble/predict", "POST /v1/execution/plan",
    "POST /v1/explain/global", "POST /v1/explain/local", "POST /v1/monitor/drift",
})
"""The operations that run a model: fit, predict, simulate, train. Each must answer 2xx to its example."""

_DATA = ("data", "n_restarts")
_BY_ID = ("model_id", "data")
_SUPERVISED = ("features", "target", "predict_features", "n_estimators", "max_iter", "hidden_layer_sizes")

PINNED: dict[str, tuple[str, ...]] = {
    "POST /v1/regime/label": _DATA,
    "POST /v1/regime/fit": _DATA,
    "POST /v1/regime/predict": _BY_ID,
    "POST /v1/monitor/drift": _BY_ID,
    "POST /v1/regime/causal": (*_DATA, "min_train", "refit_every"),
    "POST /v1/risk/covariance": ("data",),
    "POST /v1/risk/var": ("data", "weights", "n_paths"),
    "POST /v1/risk/backtest": ("data", "weights", "n_paths", "window"),
    "POST /v1/decompose/analyze": ("data", "rolling_step"),
    "POST /v1/decompose/fit": ("data", "rolling_step"),
    "POST /v1/decompose/transform": _BY_ID,
    "POST /v1/cluster/analyze": ("data", "max_clusters"),
    "POST /v1/cluster/fit": ("data", "max_clusters"),
    "POST /v1/cluster/predict": _BY_ID,
    "POST /v1/anomaly/detect": ("data", "n_estimators"),
    "POST /v1/anomaly/fit": ("data", "n_estimators"),
    "POST /v1/anomaly/score": _BY_ID,
    "POST /v1/supervised/analyze": _SUPERVISED,
    "POST /v1/supervised/fit": _SUPERVISED,
    "POST /v1/supervised/predict": ("model_id", "features"),
    "POST /v1/rl/train": ("data", "timesteps", "seeds", "grid", "n_envs"),
    "POST /v1/rl/act": ("data", "model_ids"),
    "POST /v1/rl/evaluate": ("data", "model_ids"),
    "POST /v1/bandit/select": ("bandit", "regime"),
    "POST /v1/bandit/reward": ("decision_id",),
    "POST /v1/bandit/simulate": ("rounds", "schedule"),
    "POST /v1/bandit/replay": ("data", "model_ids", "symbol"),
    "POST /v1/ensemble/train": ("data", "members", "epochs", "hidden", "heads", "layers", "window", "folds",
                                "mc_samples", "batch_size", "architectures"),
    "POST /v1/ensemble/predict": ("data", "features", "model_id", "name", "symbol", "samples"),
    "POST /v1/execution/plan": ("signals", "market", "data", "model_id", "symbol", "samples"),
    "POST /v1/explain/global": ("model_id", "features", "data", "symbol"),
    "POST /v1/explain/local": ("model_id", "features", "data", "symbol"),
}
"""Per compute operation, the fields whose value the compute phase takes from the example (removed when the
example has none); the others are generated."""

BEFORE: dict[str, str] = {"POST /v1/bandit/reward": "POST /v1/bandit/select"}
"""An example the compute phase sends again before each case of an operation: a reward needs a fresh decision."""
