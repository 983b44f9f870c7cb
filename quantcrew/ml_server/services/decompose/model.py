"""The decompose model: PCA, FastICA or NMF factors of a returns matrix, scaling and NMF shift included.

:class:`DecompositionModel` follows scikit-learn's estimator contract and is the decompose family's
model adapter: its ``Pipeline(scale, model)`` goes to the registry through skops, the columns,
component names and NMF shift in the metadata. The conventions of the reported quantities are
described in :mod:`quantcrew.ml_server.services.decompose.service`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.decompose import DecomposeMethod
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.decompose.decomposition import DecompositionFit, fit_decomposition
from quantcrew.ml_server.services.matrix import Matrix, check_columns, finite_list

__all__ = ["COMPONENT_PREFIX", "DecompositionModel", "component_names"]

FloatArray = npt.NDArray[np.float64]

COMPONENT_PREFIX: dict[str, str] = {"pca": "pc", "ica": "ic", "nmf": "nmf"}
"""Component names are the prefix and a 1-based index: 'pc1', 'ic2', 'nmf3'."""
_DEFAULT_K = 3
_METADATA_FORMAT = 1
_ESTIMATORS: dict[str, type[Any]] = {"pca": PCA, "ica": FastICA, "nmf": NMF}


def component_names(method: str, k: int) -> list[str]:
    """'pc1'..'pck' for PCA, 'ic1'.. for ICA, 'nmf1'.. for NMF."""
    return [f"{COMPONENT_PREFIX[method]}{j + 1}" for j in range(k)]


class DecompositionModel:
    """A factor decomposition following scikit-learn's estimator contract; the decompose model adapter.

    Args:
        method: ``"pca"``, ``"ica"`` or ``"nmf"``.
        n_components: Components to keep; None: PCA keeps the fewest reaching ``variance_target``,
            ICA and NMF ``min(3, assets)``.
        variance_target: Cumulative explained-variance share PCA must reach when ``n_components`` is None.
        standardize: Scale the assets first (z-scores; NMF: divide by the standard deviation only).
        nmf_shift: NMF: shift every value by ``-min`` when the data hold negative values.
        seed: Random state of FastICA and NMF.

    Attributes (learned by :meth:`fit`; ``fit_`` only there, the rest also back from the registry):
        pipeline_: ``Pipeline(scale, model)``, signs and order normalised.
        columns_: The assets it was fitted on.
        n_components_: Components kept.
        component_names_: Their names ('pc1', ...).
        shift_: NMF shift added to every value (0.0 when none was needed); None for PCA and ICA.
        fit_: The decomposition of the training rows (components, scores, shares, error, notes).
    """

    family: ClassVar[str] = "decompose"

    def __init__(
        self,
        *,
        method: DecomposeMethod = "pca",
        n_components: int | None = None,
        variance_target: float = 0.9,
        standardize: bool = False,
        nmf_shift: bool = False,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.n_components = n_components
        self.variance_target = variance_target
        self.standardize = standardize
        self.nmf_shift = nmf_shift
        self.seed = seed

    def fit(self, matrix: Matrix) -> DecompositionModel:
        """Decompose ``matrix`` (rows = dates, columns = assets).

        Raises:
            InvalidInputError: constant columns, ``n_components`` over ``min(rows, assets)``, negative
                NMF input without ``nmf_shift``, or a fit that fails.
        """
        _check_constant(matrix)
        n, p = matrix.values.shape
        k = _n_components(self, n, p)
        shift = _nmf_shift(matrix.values, self.method, self.nmf_shift)
        x = self.shifted(matrix.values, shift)
        method = self.method
        if k is None:  # PCA: the fewest components reaching the variance target
            full = _fit(x, method, min(n, p), self.standardize, self.seed)
            k = int(np.searchsorted(full.cumulative_ratio, self.variance_target - 1e-12) + 1)
            k = min(k, min(n, p))
        self.fit_ = _fit(x, method, k, self.standardize, self.seed)
        self.pipeline_ = self.fit_.pipeline
        self.columns_ = list(matrix.columns)
        self.n_components_ = k
        self.component_names_ = component_names(self.method, k)
        self.shift_ = shift
        return self

    @staticmethod
    def shifted(values: FloatArray, shift: float | None) -> FloatArray:
        """``values`` as the model sees them: plus the NMF shift, if any."""
        return values + (shift or 0.0)

    def transform(self, matrix: Matrix) -> FloatArray:
        """Scores of new rows on the fitted components (no refit).

        Raises:
            InvalidInputError: columns differ from the fitted ones, or NMF input is still negative
                after the fitted shift.
            NotFittedError: the model is not fitted.
        """
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("this DecompositionModel is not fitted yet: call fit(matrix) or rebuild a stored one")
        check_columns(self.columns_, matrix.columns)
        x = matrix.values + float(self.shift_ or 0.0)
        if self.method == "nmf" and (x < 0.0).any():
            negatives = int((x < 0.0).sum())
            raise _bad("data", f"data has {negatives} values below the fitted NMF shift (smallest value "
                       f"{float(matrix.values.min()):.6g} < -shift = {-float(self.shift_ or 0.0):.6g}); "
                       "NMF scores need non-negative input", negative_values=negatives)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return np.asarray(self.pipeline_.transform(x), dtype=np.float64)

    # ---------------------------------------------------------- persistence
    def to_artifact(self) -> Artifact:
        """The pipeline through skops; columns, component names, scaling and shift as metadata."""
        if not hasattr(self, "fit_"):
            raise NotFittedError("this DecompositionModel is not fitted yet: call fit(matrix)")
        metadata = {
            "format": _METADATA_FORMAT, "columns": list(self.columns_), "method": self.method,
            "n_components": self.n_components_, "component_names": list(self.component_names_),
            "standardize": self.standardize, "shift": self.shift_, "seed": None if self.method == "pca" else self.seed,
            "variance_target": self.variance_target,
            "explained_variance_ratio": finite_list(self.fit_.explained_variance_ratio),
        }
        return Artifact(obj=self.pipeline_, fmt="skops", method=self.method, metadata=metadata)

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> DecompositionModel:
        """The fitted model again, from its verified pipeline and registry entry.

        Raises:
            ValueError, KeyError, TypeError: the entry does not describe this pipeline (a 409 on rebuild).
        """
        meta = info.metadata
        if meta.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported decompose metadata format {meta.get('format')!r}")
        if not isinstance(obj, Pipeline) or "model" not in obj.named_steps:
            raise ValueError("stored object is not a decompose pipeline")
        method, est = str(meta["method"]), obj.named_steps["model"]
        if method not in _ESTIMATORS or not isinstance(est, _ESTIMATORS[method]):
            raise ValueError(f"the stored estimator is a {type(est).__name__}, not the {method!r} its metadata names")
        columns, names = [str(c) for c in meta["columns"]], [str(c) for c in meta["component_names"]]
        n_in, n_out = int(est.n_features_in_), int(np.shape(est.components_)[0])
        if n_in != len(columns) or n_out != len(names):
            raise ValueError(f"the stored estimator maps {n_in} columns to {n_out} components; the metadata names "
                             f"{len(columns)} and {len(names)}")
        model = cls(method=cast(DecomposeMethod, method), n_components=len(names),
                    variance_target=float(meta["variance_target"]), standardize=bool(meta["standardize"]),
                    nmf_shift=meta["shift"] is not None and method == "nmf", seed=int(meta["seed"] or 0))
        model.pipeline_ = obj
        model.columns_ = columns
        model.n_components_ = len(names)
        model.component_names_ = names
        model.shift_ = None if meta["shift"] is None else float(meta["shift"])
        return model


def _fit(x: FloatArray, method: DecomposeMethod, k: int, standardize: bool, seed: int) -> DecompositionFit:
    try:
        return fit_decomposition(x, method, k, standardize=standardize, seed=seed)
    except ValueError as exc:
        raise _bad("data", f"{exc}; check the data (collinear or near-constant assets?) or lower n_components") \
            from exc


def _bad(field: str, message: str, **extra: Any) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [field], "msg": message, **extra}])


def _check_constant(matrix: Matrix) -> None:
    x = matrix.values
    spread = x.max(axis=0) - x.min(axis=0)
    scale = np.maximum(1.0, np.abs(x).max(axis=0))
    const = [c for c, s, m in zip(matrix.columns, spread, scale, strict=True) if s <= 1e-12 * m]
    if const:
        raise InvalidInputError(
            f"data has constant columns {const}: they carry no variance to decompose; drop them",
            details=[{"loc": ["data", "values"], "msg": "constant columns", "columns": const}],
        )


def _n_components(model: DecompositionModel, n_rows: int, n_assets: int) -> int | None:
    limit = min(n_rows, n_assets)
    if model.n_components is not None and model.n_components > limit:
        raise _bad("n_components", f"n_components={model.n_components} exceeds min(rows, assets) = "
                   f"min({n_rows}, {n_assets}) = {limit}", limit=limit)
    if model.n_components is not None:
        return model.n_components
    return None if model.method == "pca" else min(_DEFAULT_K, limit)


def _nmf_shift(x: FloatArray, method: str, asked: bool) -> float | None:
    if method != "nmf":
        return None
    negatives = int((x < 0.0).sum())
    if negatives == 0:
        return 0.0
    low = float(x.min())
    if not asked:
        raise _bad(
            "nmf_shift",
            f"NMF needs non-negative data but data has {negatives} negative values (min {low:.6g}); send "
            f"nmf_shift=true to shift every value by -min = {-low:.6g} before fitting, or use pca / ica",
            negative_values=negatives, min=low,
        )
    return -low
