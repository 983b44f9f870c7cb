"""Wire contract of the decompose family: PCA, FastICA and NMF of a returns matrix.

Conventions shared by the three methods (the service module documents how each is computed):

* ``components`` is the reconstruction basis: row ``j`` is component ``j`` over the assets,
  and the data the model saw is approximated by ``mean + scores @ components`` (NMF: no mean).
  For ICA this is the mixing matrix transposed (not scikit-learn's unmixing ``components_``).
* Signs are deterministic: each PCA / ICA component is flipped so that its largest absolute
  loading is positive (ties: the first such asset). NMF components are non-negative.
* Order: PCA by eigenvalue; ICA and NMF by ``explained_variance``, largest first.
* ``explained_variance[j]``: variance, summed over assets, of component ``j``'s own
  reconstruction ``scores[:, j] outer components[j]`` (for PCA this is the eigenvalue).
  Units: the sample covariance (ddof=1) of the data, or with ``standardize`` the correlation
  matrix (whose total is the number of assets).
* ``explained_variance_ratio[j]``: that over the total variance. ICA and NMF components are not
  orthogonal, so these shares need not add up to the share the components explain together;
  ``cumulative_ratio[j]`` is the share for components ``1..j`` together (the R^2 of regressing
  the assets on their scores; equal to the running sum of the ratios for PCA).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantcrew.ml_server.schemas.common import ModelInfo, Provenance, TriggerField, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.serving import ServedReply, ServedRequest

__all__ = [
    "DecomposeFitRequest",
    "DecomposeFitResponse",
    "DecomposeMethod",
    "DecomposeRequest",
    "DecomposeResponse",
    "DecomposeTransformRequest",
    "DecomposeTransformResponse",
    "RollingDecomposition",
]

DecomposeMethod = Literal["pca", "ica", "nmf"]


class DecomposeRequest(WireModel):
    """Decompose a returns matrix (rows = dates, columns = assets) into factors; nothing is kept."""

    data: MatrixPayload = Field(description="Returns matrix: one row per date (oldest first), one column per asset.")
    method: DecomposeMethod = Field(
        default="pca", description="'pca' (principal components), 'ica' (FastICA) or 'nmf' (non-negative).")
    n_components: int | None = Field(
        default=None, ge=1,
        description="Number of components; at most min(rows, assets). Null: PCA keeps the fewest components "
                    "explaining at least variance_target; ICA and NMF use min(3, assets).",
    )
    variance_target: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Share of total variance PCA must explain when n_components is null (in (0, 1]).",
    )
    standardize: bool = Field(
        default=False,
        description="Scale every asset to unit variance first (PCA of the correlation matrix). NMF divides by "
                    "the standard deviation without centring, so the data stays non-negative.",
    )
    nmf_shift: bool = Field(
        default=False,
        description="NMF only: when the data holds negative values, add -min so the smallest becomes 0 (the shift "
                    "is reported and stored). Without it negative input is refused with 422.",
    )
    rolling_window: int | None = Field(
        default=None, ge=20,
        description="Also decompose trailing windows of this many rows (the same method and component count); "
                    "null: no rolling output.",
    )
    rolling_step: int = Field(
        default=21, ge=1,
        description="Rows between the ends of consecutive rolling windows; the last window ends at the last row.",
    )
    include_scores: bool = Field(
        default=False, description="Return each row's component scores (rows x components).")
    seed: int = Field(default=0, ge=0, description="Random state of FastICA and NMF (PCA uses none).")


class RollingDecomposition(WireModel):
    """The decomposition of one trailing window."""

    end: str = Field(description="ISO date (or time) of the window's last row; its row index when rows are undated.")
    explained_variance_ratio: list[float] = Field(description="Share of the window's variance per component.")
    first_component: list[float] = Field(
        description="First component over the assets. Signed to agree with the previous window's (positive dot "
                    "product), so its path is smooth; the first window uses the largest-|loading|-positive rule.",
    )
    warnings: list[str] = Field(
        default_factory=list, description="Fit notes for this window, e.g. 'did not converge'; empty when clean.")


class DecomposeResponse(Provenance):
    """Components, their explained variance and each asset's exposures."""

    columns: list[str] = Field(description="Asset names, in the order of the components' entries.")
    method: DecomposeMethod = Field(description="The method used.")
    n_components: int = Field(description="Number of components kept.")
    component_names: list[str] = Field(description="'pc1', 'pc2', ... / 'ic1', ... / 'nmf1', ...")
    components: list[list[float]] = Field(
        description="Components x assets: the reconstruction basis (data ~ mean + scores @ components).")
    explained_variance: list[float] = Field(
        description="Variance of each component's own reconstruction (PCA: the eigenvalue); see the module notes.")
    explained_variance_ratio: list[float] = Field(description="explained_variance over the total variance.")
    cumulative_ratio: list[float] = Field(
        description="Share of total variance explained by components 1..j together.")
    exposures: dict[str, list[float]] = Field(
        description="Per asset, its loading on each component (a column of components).")
    reconstruction_error: float = Field(
        description="||X - X_hat||_F / ||X - mean(X)||_F on the data the model saw (0 = exact; "
                    "sqrt(1 - cumulative_ratio[-1]) for PCA).",
    )
    shift_applied: float | None = Field(
        description="NMF: the constant added to every value before fitting (0.0 when none); null for PCA / ICA.")
    scores: list[list[float]] | None = Field(
        default=None, description="Rows x components scores; null unless include_scores was true.")
    rolling: list[RollingDecomposition] | None = Field(
        default=None, description="One entry per trailing window, oldest first; null unless rolling_window was set.")
    warnings: list[str] = Field(
        default_factory=list, description="Fit notes (e.g. FastICA or NMF hit the iteration cap); empty when clean.")


class DecomposeFitRequest(DecomposeRequest):
    """Decompose and keep the fitted model in the registry under ``name`` (a new version each fit)."""

    name: str = Field(
        default="decompose", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )
    trigger: TriggerField = "manual"


class DecomposeFitResponse(DecomposeResponse):
    """A stored fit: the same answer as an analyze call plus the registry entry."""

    model: ModelInfo


class DecomposeTransformRequest(ServedRequest):
    """Project new rows onto a stored model's components (no refit): a pinned `model_id` (from /v1/decompose/fit)
    or the deployed version of `name`."""

    data: MatrixPayload = Field(
        description="Rows to project; its columns must be the fitted ones, by name and in the same order.")


class DecomposeTransformResponse(Provenance, ServedReply):
    """Component scores of each new row."""

    columns: list[str] = Field(description="Component names: 'pc1', ... / 'ic1', ... / 'nmf1', ...")
    timestamps: list[str] | None = Field(description="ISO time of each row; null when the rows are undated.")
    scores: list[list[float]] = Field(description="Rows x components scores.")
