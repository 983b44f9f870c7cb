"""The anomaly model: a scaled IsolationForest on causal bar features, with its flag threshold.

:class:`AnomalyDetector` follows scikit-learn's estimator contract and is the anomaly family's
model adapter: the fitted pipeline goes to the registry through skops, everything else it
learned in the metadata. Scores, threshold and percentiles are described in
:mod:`quantcrew.ml_server.services.anomaly.service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.anomaly import AnomalyFeature, AnomalyPoint, AnomalyResponse
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.anomaly.features import build_features, resolve_features, warmup_bars
from quantcrew.ml_server.services.bars import Bars

if TYPE_CHECKING:  # scikit-learn loads on the first fit or load, not when the server imports its routes
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline

__all__ = ["METHOD", "REFERENCE_POINTS", "AnomalyDetector", "AnomalyScores"]

FloatArray = npt.NDArray[np.float64]

METHOD = "isolation_forest"
REFERENCE_POINTS = 1001
"""Most training scores kept (sorted, or as quantiles) to place a new score among them."""
_METADATA_FORMAT = 1


@dataclass(frozen=True)
class AnomalyScores:
    """Scores of the bars after the warm-up.

    Attributes:
        timestamps: ISO time of each scored bar.
        features: The scored bars' feature values, ``(n, k)``.
        scores: Anomaly score of each bar (higher = more anomalous).
        n_warmup: Bars dropped at the start.
    """

    timestamps: list[str]
    features: FloatArray
    scores: FloatArray
    n_warmup: int


class AnomalyDetector:
    """IsolationForest anomaly detector following scikit-learn's estimator contract; the anomaly model adapter.

    Args:
        features: Feature names, or None for every available one (``volume_z`` only with volume).
        contamination: Expected share of anomalies; sets the threshold.
        n_estimators: Number of isolation trees.
        zscore_window: Trailing window of ``volume_z``.
        seed: ``random_state`` of the forest.

    Attributes (learned by :meth:`fit`):
        pipeline_: The fitted ``Pipeline(scale=StandardScaler, forest=IsolationForest)``.
        features_: Features used, in column order.
        threshold_: Score above which a bar is flagged.
        reference_: Sorted training scores (or their quantiles), for percentiles.
        constant_features_: Features that did not vary over the training bars.
    """

    family: ClassVar[str] = "anomaly"

    def __init__(
        self,
        *,
        features: Sequence[str] | None = None,
        contamination: float = 0.01,
        n_estimators: int = 200,
        zscore_window: int = 20,
        seed: int = 0,
    ) -> None:
        self.features = None if features is None else tuple(features)
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.zscore_window = zscore_window
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""
        return {
            "features": None if self.features is None else list(self.features),
            "contamination": self.contamination,
            "n_estimators": self.n_estimators,
            "zscore_window": self.zscore_window,
            "seed": self.seed,
        }

    def fit(self, bars: Bars, *, min_rows: int = 30) -> AnomalyDetector:
        """Fit the scaler and forest on the bars after the warm-up.

        Args:
            bars: Training bars.
            min_rows: Fewest SCORED bars (after the warm-up) accepted.

        Raises:
            InvalidInputError: too few bars, or ``volume_z`` without volume.
            ValueError: an invalid configuration.
        """
        if not 0.0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination}")
        names = resolve_features(self.features, has_volume=bars.volume is not None)
        need = warmup_bars(names, self.zscore_window) + min_rows
        if len(bars) < need:
            raise InvalidInputError(
                f"data has {len(bars)} bars; with features {list(names)} the first "
                f"{need - min_rows} are warm-up, and at least {min_rows} scored bars are needed: send at least "
                f"{need} bars",
                details=[{"loc": ["data", "timestamps"], "msg": f"need at least {need} rows",
                          "rows": len(bars)}],
            )
        table = build_features(bars, names, window=self.zscore_window)
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        pipeline = Pipeline([
            ("scale", StandardScaler()),
            ("forest", IsolationForest(n_estimators=self.n_estimators, contamination=self.contamination,
                                       random_state=self.seed)),
        ])
        try:
            pipeline.fit(table.values)
        except ValueError as exc:  # scikit-learn's input checks; the features are finite by construction
            raise InvalidInputError(f"the isolation forest could not be fitted on these bars: {exc}",
                                    details=[{"loc": ["data"], "msg": str(exc)}]) from exc
        self.pipeline_ = pipeline
        self.features_ = names
        forest: IsolationForest = pipeline.named_steps["forest"]
        self.threshold_ = float(-forest.offset_)
        train_scores = self._score(table.values)
        self.reference_ = _reference(train_scores)
        spread = table.values.max(axis=0) - table.values.min(axis=0)
        self.constant_features_ = [name for name, s in zip(names, spread, strict=True) if not s > 0.0]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("this AnomalyDetector is not fitted yet: call fit(bars) or rebuild a stored one")

    def _score(self, values: FloatArray) -> FloatArray:
        return np.asarray(-self.pipeline_.score_samples(values), dtype=np.float64)

    def score(self, bars: Bars) -> AnomalyScores:
        """Scores of the bars after the warm-up (bar ``t``'s score uses bars ``<= t`` only).

        Raises:
            InvalidInputError: no bar is left after the warm-up, or the model needs volume the bars lack.
            NotFittedError: the detector is not fitted.
        """
        self._check_fitted()
        if "volume_z" in self.features_ and bars.volume is None:
            raise InvalidInputError(
                "this model was fitted with the 'volume_z' feature: data.volume is required",
                details=[{"loc": ["data", "volume"], "msg": "required by the model's 'volume_z' feature"}],
            )
        table = build_features(bars, self.features_, window=self.zscore_window)
        scores = self._score(table.values)
        return AnomalyScores(bars.iso()[table.n_warmup:], table.values, scores, table.n_warmup)

    def percentile(self, score: float) -> float:
        """Share of the training scores below ``score`` (0..1)."""
        self._check_fitted()
        return float(np.searchsorted(self.reference_, score, side="left") / len(self.reference_))

    def to_response(
        self, bars: Bars, *, top_k: int = 10, model_id: str | None = None, model_version: int | None = None,
    ) -> AnomalyResponse:
        """Score ``bars`` and package the answer with its provenance (every float finite)."""
        result = self.score(bars)
        scores = result.scores
        flags = scores > self.threshold_
        order = np.argsort(-scores, kind="stable")[:top_k]
        top = [
            AnomalyPoint(
                timestamp=result.timestamps[i],
                score=float(scores[i]),
                rank=rank,
                features={name: float(v) for name, v in zip(self.features_, result.features[i], strict=True)},
                flagged=bool(flags[i]),
            )
            for rank, i in enumerate(order.tolist(), start=1)
        ]
        warnings: list[str] = []
        if result.n_warmup:
            warnings.append(f"{result.n_warmup} warm-up bar(s) at the start lack a feature value and are not scored")
        if self.constant_features_:
            warnings.append(f"features constant over the training bars carry no information: "
                            f"{self.constant_features_}")
        current = float(scores[-1])
        return AnomalyResponse(
            model_id=model_id,
            model_version=model_version,
            method_used=METHOD,
            fallback=False,
            data_hash=bars.data_hash,
            seed=self.seed,
            as_of=bars.as_of,
            timestamps=result.timestamps,
            scores=scores.tolist(),
            flags=flags.tolist(),
            threshold=self.threshold_,
            n_flagged=int(flags.sum()),
            top=top,
            features_used=cast(list[AnomalyFeature], list(self.features_)),  # names checked at fit
            current_score=current,
            current_flagged=bool(flags[-1]),
            current_percentile=self.percentile(current),
            warnings=warnings,
        )

    # ---------------------------------------------------------- persistence
    def to_artifact(self) -> Artifact:
        """The fitted pipeline through skops; everything else it learned in the metadata."""
        metadata = self.to_metadata()  # first: a detector that is not fitted has no pipeline
        return Artifact(obj=self.pipeline_, fmt="skops", method=METHOD, metadata=metadata)

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> AnomalyDetector:
        """The fitted detector again, from its verified pipeline and registry entry.

        Raises:
            ValueError, KeyError, TypeError: the entry does not describe a detector (a 409 on rebuild).
        """
        return cls.from_parts(obj, info.metadata)

    def to_metadata(self) -> dict[str, Any]:
        """Everything learned except ``pipeline_``, as JSON-able values (the registry stores the pipeline)."""
        self._check_fitted()
        return {
            "format": _METADATA_FORMAT,
            "params": self.get_params(),
            "features_": list(self.features_),
            "threshold_": self.threshold_,
            "reference_": self.reference_.tolist(),
            "constant_features_": list(self.constant_features_),
        }

    @classmethod
    def from_parts(cls, pipeline: Pipeline, metadata: dict[str, Any]) -> AnomalyDetector:
        """Rebuild a fitted detector from a stored pipeline and :meth:`to_metadata` output.

        Raises:
            ValueError: the metadata has another format, or the pipeline does not match it.
        """
        if metadata.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported anomaly metadata format {metadata.get('format')!r}")
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import Pipeline

        if not isinstance(pipeline, Pipeline) or not isinstance(pipeline[-1], IsolationForest):
            raise ValueError(f"expected a Pipeline ending in an IsolationForest, got {type(pipeline).__name__}")
        det = cls(**metadata["params"])
        det.features_ = tuple(metadata["features_"])
        if pipeline[-1].n_features_in_ != len(det.features_):
            raise ValueError(f"the forest expects {pipeline[-1].n_features_in_} features; the metadata names "
                             f"{len(det.features_)}")
        det.pipeline_ = pipeline
        det.threshold_ = float(metadata["threshold_"])
        det.reference_ = np.asarray(metadata["reference_"], dtype=np.float64)
        det.constant_features_ = list(metadata["constant_features_"])
        return det


def _reference(scores: FloatArray) -> FloatArray:
    """Sorted scores, or :data:`REFERENCE_POINTS` evenly spaced quantiles of them."""
    if scores.size <= REFERENCE_POINTS:
        return np.sort(scores)
    return np.asarray(np.quantile(scores, np.linspace(0.0, 1.0, REFERENCE_POINTS)), dtype=np.float64)
