"""Decompose service: PCA / FastICA / NMF against hand-checkable cases, and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.errors import ArtifactIntegrityError, InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.decompose import DecomposeFitRequest, DecomposeRequest, DecomposeTransformRequest
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.decompose.service import analyze, fit, transform


def _request(values: np.ndarray, *, dated: bool = False, **kw: Any) -> DecomposeRequest:
    columns = [f"a{i}" for i in range(values.shape[1])]
    data: dict[str, Any] = {"columns": columns, "values": values.tolist()}
    if dated:
        days = np.datetime64("2020-01-01") + np.arange(values.shape[0])
        data["timestamps"] = [str(d) for d in days]
    return DecomposeRequest(data=MatrixPayload.model_validate(data), **kw)


def _factor_returns(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, n)
    sector = rng.normal(0, 0.006, n)
    beta = np.array([1.0, 0.9, 1.1, 0.8, 1.2])
    tilt = np.array([1.0, 1.0, -1.0, -1.0, 0.0])
    return np.outer(market, beta) + np.outer(sector, tilt) + rng.normal(0, 0.003, (n, 5))


def test_pca_rank_one_matrix_one_component_explains_all() -> None:
    rng = np.random.default_rng(1)
    loadings = np.array([0.5, 2.0, -1.0, 1.5])
    x = np.outer(rng.normal(size=200), loadings)
    reply = analyze(_request(x, variance_target=0.9))
    assert reply.n_components == 1
    assert reply.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-9)
    comp = np.array(reply.components[0])
    np.testing.assert_allclose(comp, loadings / np.linalg.norm(loadings), atol=1e-9)  # sign: largest (2.0) > 0
    assert reply.reconstruction_error < 1e-7
    assert reply.component_names == ["pc1"]
    assert reply.exposures["a1"] == [pytest.approx(comp[1])]


def test_pca_explained_variance_matches_numpy_eigendecomposition() -> None:
    x = _factor_returns()
    reply = analyze(_request(x, n_components=5))
    vals, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(vals)[::-1]
    np.testing.assert_allclose(reply.explained_variance, vals[order], rtol=1e-9)
    np.testing.assert_allclose(reply.explained_variance_ratio, vals[order] / vals.sum(), rtol=1e-9)
    np.testing.assert_allclose(reply.cumulative_ratio, np.cumsum(vals[order]) / vals.sum(), rtol=1e-9)
    for j, comp in enumerate(reply.components):
        assert abs(float(np.dot(comp, vecs[:, order[j]]))) == pytest.approx(1.0, abs=1e-8)
        assert comp[int(np.argmax(np.abs(comp)))] > 0  # sign convention


def test_pca_standardize_uses_correlation_eigenvalues() -> None:
    x = _factor_returns() * np.array([1.0, 10.0, 0.1, 3.0, 1.0])
    reply = analyze(_request(x, n_components=5, standardize=True))
    vals = np.sort(np.linalg.eigvalsh(np.corrcoef(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(reply.explained_variance, vals, rtol=1e-9)
    assert sum(reply.explained_variance) == pytest.approx(5.0)


def test_pca_variance_target_keeps_fewest_components() -> None:
    x = _factor_returns()
    cum = analyze(_request(x, n_components=5)).cumulative_ratio
    for target in (0.5, 0.9, 0.99, 1.0):
        k = analyze(_request(x, variance_target=target)).n_components
        assert cum[k - 1] >= target - 1e-9
        assert k == 1 or cum[k - 2] < target


def test_ica_recovers_two_mixed_non_gaussian_sources() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    sources = np.column_stack([rng.uniform(-1, 1, n) * np.sqrt(3), rng.laplace(0, 1, n) / np.sqrt(2)])
    mixing = np.array([[1.0, 0.8], [0.7, 1.0], [0.4, 0.5]])  # oblique: PCA mixes the sources up
    x = sources @ mixing.T

    def matched(method: str) -> float:
        """Smallest |correlation| of a score with its source, under the better of the two pairings."""
        scores = np.array(analyze(_request(x, method=method, n_components=2, include_scores=True, seed=3)).scores)
        corr = np.abs(np.corrcoef(scores.T, sources.T)[:2, 2:])
        straight, crossed = (corr[0, 0], corr[1, 1]), (corr[0, 1], corr[1, 0])
        return float(min(straight if sum(straight) >= sum(crossed) else crossed))

    assert matched("ica") > 0.9
    assert matched("pca") < 0.9  # the case is one only ICA solves
    reply = analyze(_request(x, method="ica", n_components=2, seed=3))
    assert reply.cumulative_ratio[-1] == pytest.approx(1.0, abs=1e-6)  # 2 sources span the 3 assets
    for comp in reply.components:
        assert comp[int(np.argmax(np.abs(comp)))] > 0


def test_ica_is_deterministic_by_seed() -> None:
    x = _factor_returns()
    a = analyze(_request(x, method="ica", seed=5))
    b = analyze(_request(x, method="ica", seed=5))
    assert a.components == b.components
    assert a.n_components == 3 and a.seed == 5


def test_ica_and_nmf_shares_are_nested_and_bounded() -> None:
    x = _factor_returns()
    for method, extra in (("ica", {}), ("nmf", {"nmf_shift": True})):
        reply = analyze(_request(x, method=method, n_components=4, **extra))
        cum = np.array(reply.cumulative_ratio)
        assert np.all(np.diff(cum) >= -1e-12) and cum[0] >= 0.0 and cum[-1] <= 1.0 + 1e-12
        assert list(reply.explained_variance) == sorted(reply.explained_variance, reverse=True)


def test_nmf_refuses_negative_input_with_count() -> None:
    x = _factor_returns()
    negatives = int((x < 0).sum())
    with pytest.raises(InvalidInputError) as err:
        analyze(_request(x, method="nmf"))
    assert f"{negatives} negative values" in err.value.message
    assert "nmf_shift=true" in err.value.message
    assert err.value.details[0]["loc"] == ["nmf_shift"]


def test_nmf_shifts_when_asked_and_reports_shift() -> None:
    x = _factor_returns()
    reply = analyze(_request(x, method="nmf", nmf_shift=True, n_components=2))
    assert reply.shift_applied == pytest.approx(-x.min())
    assert np.min(reply.components) >= 0.0
    assert reply.component_names == ["nmf1", "nmf2"]
    positive = np.abs(x)
    assert analyze(_request(positive, method="nmf")).shift_applied == 0.0


def test_rolling_output_length_and_alignment() -> None:
    x = _factor_returns(n=250)
    reply = analyze(_request(x, dated=True, n_components=2, rolling_window=60, rolling_step=21))
    assert reply.rolling is not None
    assert len(reply.rolling) == (250 - 60) // 21 + 1
    assert reply.rolling[-1].end == str(np.datetime64("2020-01-01") + 249)
    firsts = np.array([r.first_component for r in reply.rolling])
    assert np.all(np.sum(firsts[1:] * firsts[:-1], axis=1) > 0)  # signed to follow the previous window
    assert all(len(r.explained_variance_ratio) == 2 for r in reply.rolling)
    undated = analyze(_request(x, n_components=2, rolling_window=250, rolling_step=5))
    assert undated.rolling is not None and [r.end for r in undated.rolling] == ["249"]


@pytest.mark.parametrize(
    ("kw", "field", "text"),
    [
        ({"n_components": 6}, "n_components", "exceeds min(rows, assets)"),
        ({"rolling_window": 500}, "rolling_window", "exceeds the 400 rows"),
        ({"rolling_window": 20, "rolling_step": 1, "n_components": 5}, "rolling_step", None),
    ],
)
def test_bad_settings_raise_invalid_input_naming_field(kw: dict[str, Any], field: str, text: str | None) -> None:
    x = _factor_returns()
    if field == "rolling_step":
        x = np.tile(x, (3, 1))  # 1,200 rows, window 20, step 1: over 1,000 windows
    with pytest.raises(InvalidInputError) as err:
        analyze(_request(x, **kw))
    assert err.value.details[0]["loc"] == [field]
    if text:
        assert text in err.value.message


def test_constant_column_is_named() -> None:
    x = _factor_returns()
    x[:, 2] = 0.5
    with pytest.raises(InvalidInputError, match=r"constant columns \['a2'\]"):
        analyze(_request(x))


def test_too_few_rows_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 3"):
        analyze(_request(_factor_returns()[:2]))
    with pytest.raises(InvalidInputError, match="at least 30"):
        analyze(_request(_factor_returns()[:20]), min_rows=30)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


@pytest.mark.parametrize("kw", [{"method": "pca", "standardize": True}, {"method": "ica", "n_components": 2}])
def test_fit_then_transform_reproduces_training_scores(kw: dict[str, Any], registry: ModelRegistry) -> None:
    x = _factor_returns()
    request = DecomposeFitRequest.model_validate({**_request(x).model_dump(), "include_scores": True, **kw})
    fitted = fit(request, registry, min_rows=3)
    assert fitted.model.metadata["component_names"] == fitted.component_names
    assert fitted.model.metadata["shift"] == fitted.shift_applied and fitted.model.metadata["n_rows"] == 400
    out = transform(DecomposeTransformRequest(model_id=fitted.model_id, data=request.data), registry)
    assert fitted.scores is not None and out.columns == fitted.component_names
    np.testing.assert_allclose(np.array(out.scores), np.array(fitted.scores), atol=1e-10)


def test_transform_with_metadata_that_does_not_match_the_pipeline_raises_409(registry: ModelRegistry) -> None:
    x = _factor_returns()
    fitted = fit(DecomposeFitRequest.model_validate(_request(x).model_dump()), registry, min_rows=3)
    registry._db.execute("update models set metadata = ? where model_id = ?",  # a foreign entry, same artifact
                         ['{"format": 1, "method": "nmf"}', fitted.model_id])
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        transform(DecomposeTransformRequest(model_id=fitted.model_id, data=_request(x).data), registry)
