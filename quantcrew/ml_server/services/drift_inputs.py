"""A stored model's inputs on bars, for drift: each family's own feature rows and, where cheap, its outputs.

The monitor family compares these to the model's training reference (``POST /v1/monitor/drift``).
The feature code belongs to each family, and each family logs its predictions through the
monitor family; so this dispatch lives beside the families, not inside the monitor package (which
the families import), and the monitor's drift verb is handed :func:`bar_inputs`.

* ``regime``, ``anomaly``: the model's own features and its output on every bar;
* ``ensemble``: the unscaled feature rows after the warm-up (inputs only: its networks run on the
  device thread, and their outputs on real requests are in the traffic report);
* ``rl``: the policy's scaled observations after the warm-up and, when asked, its positions.

Other families are refused: ``supervised`` and ``cluster`` read a feature table, not bars;
``execution`` reads another model's answers. Their drift is read from their recent traffic.
"""

from __future__ import annotations

import numpy as np

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.monitor.reference import FloatArray

__all__ = ["BAR_FAMILIES", "bar_inputs"]

BAR_FAMILIES = ("regime", "anomaly", "ensemble", "rl")
"""Families whose drift can be computed from bars."""


def bar_inputs(registry: ModelRegistry, family: str, model_id: str, bars: Bars, *,
               outputs: bool) -> tuple[tuple[str, ...], FloatArray, FloatArray | None]:
    """A stored model's feature rows on ``bars`` (the names and values its prediction log records) and, where
    cheap and asked for, its output scalar on them.

    Raises:
        InvalidInputError: a family whose drift cannot be computed from bars (naming ``model_id``).
    """
    if family == "regime":
        from quantcrew.ml_server.services.regime.model import RegimeDetector
        from quantcrew.ml_server.services.regime.service import drift_inputs as regime_inputs

        detector, _ = adapter.rebuild(registry, model_id, RegimeDetector)
        names, matrix, out = regime_inputs(detector, bars)
        return names, matrix, out if outputs else None
    if family == "anomaly":
        from quantcrew.ml_server.services.anomaly.model import AnomalyDetector
        from quantcrew.ml_server.services.anomaly.service import drift_inputs as anomaly_inputs

        anomaly, _ = adapter.rebuild(registry, model_id, AnomalyDetector)
        names, matrix, out = anomaly_inputs(anomaly, bars)
        return names, matrix, out if outputs else None
    if family == "ensemble":
        from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features

        table = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)[WARMUP:]
        return tuple(FEATURE_NAMES), table, None
    if family == "rl":
        from quantcrew.ml_server.services.rl.evaluation import run_policy
        from quantcrew.ml_server.services.rl.service import load_policy, policy_market

        policy, info = load_policy(registry, model_id)
        market = policy_market(registry, bars, info.metadata, {})
        rows = np.asarray(market.scaled[market.warmup:], dtype=np.float64)
        positions = run_policy(policy, market, market.warmup, len(bars)) if outputs else None
        return tuple(market.feature_names), rows, positions
    message = (f"drift of a {family} model cannot be computed from bars: "
               + ("its inputs are a feature table" if family in ("supervised", "cluster")
                  else "its inputs include another model's answers")
               + f"; read GET /v1/monitor/drift/{model_id} (its recent traffic) instead")
    raise InvalidInputError(message, details=[{"loc": ["model_id"], "msg": f"a {family} model"}])
