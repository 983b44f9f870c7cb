"""What is explained: a stored model seen as a function of rows, built with each family's own code.

A :class:`Subject` holds the model's ``answer(rows) -> (outputs, classes)``, the rows it is
asked about (one per bar or observation with a full input) and how those rows map to named
features. It is built per family from the family's own feature code, model adapter and
registry cache:

* ensemble: the 16 engineered features of :mod:`...services.ensemble.features`; a row is the
  flattened RAW feature window ending at a bar (``window x 16`` columns; feature ``f`` spans
  columns ``w * 16 + f``), scaled and clipped exactly as the model's own windows before the
  forward pass, which runs on the app's device thread;
* supervised: the rows sent, in the model's columns;
* rl: the policy's observation columns (its market features, regime probabilities included),
  in raw units (the stored scaler's inverse of what the policy observes; clipped values stay
  clipped), with the position held fixed; the policy answers on the CPU, as in ``/v1/rl/act``.

Building a subject reads the registry and may rebuild a model: call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.ensemble import CLASS_LABELS, EnsemblePredictRequest
from quantcrew.ml_server.schemas.explain import EXPLAINABLE, ExplainRequestBase
from quantcrew.ml_server.schemas.rl import ACTION_LABELS
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.ensemble import service as ensemble_service
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features
from quantcrew.ml_server.services.matrix import matrix_from_payload
from quantcrew.ml_server.services.rl import service as rl_service
from quantcrew.ml_server.services.rl.features import WARMUP as RL_WARMUP
from quantcrew.ml_server.services.supervised.model import SupervisedModel
from quantcrew.ml_server.services.supervised.split import check_magnitude
from quantcrew.quant import calibration

if TYPE_CHECKING:
    from quantcrew.ml_server.services.ensemble.model import EnsembleModel
    from quantcrew.ml_server.services.rl.policy import PolicyModel

__all__ = ["Answer", "Subject", "build_subject", "invalid"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Answer = tuple[FloatArray, IntArray | None]
"""Outputs of some rows, and their classes when the output has one."""

_DEVICE_CHUNK = 4096  # windows per forward pass


def invalid(message: str, *loc: str | int) -> InvalidInputError:
    """A 422 naming the field ``loc``."""
    return InvalidInputError(message, details=[{"loc": list(loc), "msg": message}])


@dataclass(frozen=True)
class Subject:
    """A model seen from outside, and the rows it is explained on.

    Attributes:
        family: The model's family.
        info: Its registry entry.
        answer: Rows -> (outputs, classes or None); blocking.
        x: Every row with a full input, oldest first, ``(n, d)``.
        names: One name per feature.
        groups: Column indices of each feature (None: one column each).
        value_columns: The column holding each feature's value at the row's own bar.
        row_names: Time (or index) of each row.
        positions: Each row's position among the bars or rows sent.
        output: What the output is.
        classes: Names of the output's classes, or None.
        input_field: The request field the rows came from (``data`` or ``features``).
        data_hash: Hash of the inputs as received.
        as_of: Time of the last bar or row, if dated.
        warnings: Things the caller should know.
    """

    family: str
    info: ModelInfo
    answer: Callable[[FloatArray], Answer]
    x: FloatArray
    names: list[str]
    groups: list[IntArray] | None
    value_columns: list[int]
    row_names: list[str]
    positions: list[int]
    output: str
    classes: tuple[str, ...] | None
    input_field: str
    data_hash: str
    as_of: datetime | None
    warnings: list[str] = field(default_factory=list)

    def predict(self, rows: FloatArray) -> FloatArray:
        """The outputs alone."""
        return self.answer(rows)[0]

    def readable(self, rows: FloatArray) -> FloatArray:
        """Each row's features at its own bar, ``(n, F)`` (what the surrogate's rules are written in)."""
        return np.asarray(rows, dtype=np.float64)[:, self.value_columns]


def _model_info(req: ExplainRequestBase, registry: ModelRegistry, deployments: DeploymentStore) -> ModelInfo:
    if req.model_id is None:  # the schema allows this for the ensemble deployed for a symbol only
        if req.data is None:
            raise invalid("an ensemble is explained on bars: send data", "data")
        resolved = ensemble_service.resolve(EnsemblePredictRequest(symbol=req.symbol, data=req.data), registry,
                                            deployments)
        return registry.get(resolved.model_id)
    info = registry.get(req.model_id)  # ModelNotFoundError: 404
    if info.family not in EXPLAINABLE:
        raise invalid(f"model '{info.model_id}' is a {info.family} model; explanations exist for "
                      f"{', '.join(EXPLAINABLE)} models", "model_id")
    if req.family is not None and req.family != info.family:
        raise invalid(f"model '{info.model_id}' is a {info.family} model, not {req.family}", "family")
    return info


def build_subject(req: ExplainRequestBase, registry: ModelRegistry, deployments: DeploymentStore, *,
                  device: str, executor: Executor) -> Subject:
    """The model the request names, as a :class:`Subject` over the inputs it sent.

    Raises:
        ModelNotFoundError: no such model (404); NotFoundError: no ensemble deployed for the symbol (404).
        InvalidInputError: a family that cannot be explained, another family than ``family``, the
            wrong inputs for the family, or columns that do not match the model (422 naming the field).
    """
    info = _model_info(req, registry, deployments)
    if info.family == "supervised":
        return _supervised(req, registry, info)
    if req.data is None:
        raise invalid(f"a {info.family} model is explained on bars: send data", "data")
    if info.family == "ensemble":
        return _ensemble(req, registry, info, device=device, executor=executor)
    return _rl(req, registry, info)


# -- supervised ------------------------------------------------------------------------------------


def _supervised(req: ExplainRequestBase, registry: ModelRegistry, info: ModelInfo) -> Subject:
    if req.features is None:
        raise invalid("a supervised model is explained on rows in its columns: send features", "features")
    model, info = adapter.rebuild(registry, info.model_id, SupervisedModel)
    matrix = matrix_from_payload(req.features, min_rows=1, field="features")
    model.check_columns(matrix.columns, "features")
    check_magnitude(matrix.values, "features.values")
    estimator = model.estimator_
    classes = model.classes_
    if classes is None:
        def answer(rows: FloatArray) -> Answer:
            return np.asarray(estimator.predict(rows), dtype=np.float64), None

        output, names = "prediction", None
    else:
        names = tuple(str(c) for c in classes)
        if req.target_class is None:
            target = len(names) - 1
        elif req.target_class in names:
            target = names.index(req.target_class)
        else:
            raise invalid(f"target_class '{req.target_class}' is not a class of this model ({list(names)})",
                          "target_class")

        def answer(rows: FloatArray) -> Answer:
            proba = np.nan_to_num(np.asarray(estimator.predict_proba(rows), dtype=np.float64))
            return proba[:, target], proba.argmax(axis=1).astype(np.int64)

        output = f"P({names[target]})"
    d = matrix.n_columns
    return Subject("supervised", info, answer, matrix.values, list(matrix.columns), None, list(range(d)),
                   matrix.row_names(), list(range(matrix.n_rows)), output, names, "features", matrix.data_hash,
                   matrix.as_of)


# -- ensemble --------------------------------------------------------------------------------------


def _ensemble(req: ExplainRequestBase, registry: ModelRegistry, info: ModelInfo, *, device: str,
              executor: Executor) -> Subject:
    assert req.data is not None
    model: EnsembleModel
    model, info = ensemble_service.load(registry, info.model_id, device)
    window = model.window
    first = WARMUP + window - 1  # the first bar with a full window of complete features
    if len(req.data) <= first:
        raise invalid(f"data has {len(req.data)} bars; this ensemble reads {window}-bar windows of features that "
                      f"need {WARMUP} warm-up bars, so at least {first + 1} are needed", "data")
    bars = bars_from_payload(req.data, min_rows=first + 1)
    feats = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)
    n_feat = feats.shape[1]
    ends = np.arange(first, len(bars), dtype=np.int64)
    view = np.lib.stride_tricks.sliding_window_view(feats, window, axis=0)  # (n - window + 1, F, window)
    x = view[ends - window + 1].transpose(0, 2, 1).reshape(len(ends), window * n_feat).astype(np.float64)
    mean, std = model.scaler_mean_, model.scaler_std_

    def forward(windows: npt.NDArray[np.float32]) -> FloatArray:
        _, probs, weights = model.member_probabilities(model.logits(windows), mc=False)
        return np.asarray(calibration.uncertainty(probs, weights).probs, dtype=np.float64)

    def answer(rows: FloatArray) -> Answer:
        raw = np.asarray(rows, dtype=np.float64).reshape(-1, window, n_feat)
        scaled = np.ascontiguousarray(np.clip((raw - mean) / std, -10.0, 10.0), dtype=np.float32)
        parts = [executor.submit(forward, scaled[i:i + _DEVICE_CHUNK]).result()
                 for i in range(0, len(scaled), _DEVICE_CHUNK)]
        p = np.concatenate(parts, axis=0)
        return p[:, 2] - p[:, 0], p.argmax(axis=1).astype(np.int64)

    groups = [np.arange(f, window * n_feat, n_feat, dtype=np.int64) for f in range(n_feat)]
    iso = bars.iso()
    return Subject("ensemble", info, answer, x, list(FEATURE_NAMES), groups,
                   [(window - 1) * n_feat + f for f in range(n_feat)], [iso[int(t)] for t in ends],
                   [int(t) for t in ends], "p_up - p_down", tuple(CLASS_LABELS), "data", bars.data_hash, bars.as_of)


# -- rl --------------------------------------------------------------------------------------------


def _policy_answer(policy: PolicyModel) -> Callable[[npt.NDArray[np.float32]], Answer]:
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy

    net = policy.policy_

    def answer(obs: npt.NDArray[np.float32]) -> Answer:
        if policy.algorithm == "dqn" or policy.action_mode != "discrete" or not isinstance(net, ActorCriticPolicy):
            pos = policy.target_positions(obs)
            codes = None if policy.action_mode != "discrete" else np.rint(pos + 1.0).astype(np.int64)
            return pos, codes
        with torch.no_grad():
            dist = net.get_distribution(torch.as_tensor(obs, dtype=torch.float32)).distribution
            assert isinstance(dist, torch.distributions.Categorical)
            p = dist.probs.numpy().astype(np.float64)
        return p[:, 2] - p[:, 0], p.argmax(axis=1).astype(np.int64)

    return answer


def _rl_output(policy: PolicyModel) -> str:
    if policy.action_mode != "discrete":
        return "target position (clipped mean weight)"
    return "target position (argmax Q - 1)" if policy.algorithm == "dqn" else "P(long) - P(short)"


def _rl(req: ExplainRequestBase, registry: ModelRegistry, info: ModelInfo) -> Subject:
    assert req.data is not None
    if len(req.data) < RL_WARMUP + 2:
        raise invalid(f"data has {len(req.data)} bars; policies observe {RL_WARMUP}-bar features, so at least "
                      f"{RL_WARMUP + 2} are needed", "data")
    bars = bars_from_payload(req.data, min_rows=RL_WARMUP + 2)
    policy, info = rl_service.load_policy(registry, info.model_id)
    market = rl_service.policy_market(registry, bars, info.metadata, {})
    scaler = market.scaler
    rows = np.arange(market.warmup, len(bars), dtype=np.int64)
    x = market.scaled[rows].astype(np.float64) * scaler.scale + scaler.mean
    held = np.float32(req.position)
    policy_answer = _policy_answer(policy)

    def answer(raw: FloatArray) -> Answer:
        obs = scaler.transform(np.asarray(raw, dtype=np.float64))
        obs = np.concatenate([obs, np.full((obs.shape[0], 1), held, dtype=np.float32)], axis=1)
        return policy_answer(obs)

    names = list(market.feature_names)
    classes = tuple(ACTION_LABELS) if policy.action_mode == "discrete" else None
    iso = bars.iso()
    return Subject("rl", info, answer, x, names, None, list(range(len(names))), [iso[int(t)] for t in rows],
                   [int(t) for t in rows], _rl_output(policy), classes, "data", bars.data_hash, bars.as_of)
