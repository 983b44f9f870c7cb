"""Cluster geometry: correlation distance, its exact embedding, the k-distance knee."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.ml_server.services.cluster.geometry import assets_embedding, correlation_distance, knee_eps
from tests.ml_server.services.cluster.test_service import _two_factor_assets


def test_correlation_distance_embedding_is_exact() -> None:
    x = _two_factor_assets()
    d = correlation_distance(x)
    rho = np.corrcoef(x, rowvar=False)
    np.testing.assert_allclose(d, np.sqrt(np.clip(0.5 * (1 - rho), 0, 1)) * (1 - np.eye(6)), atol=1e-12)
    coords = assets_embedding(d)
    rebuilt = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=2)
    np.testing.assert_allclose(rebuilt, d, atol=1e-7)


def test_knee_eps_sits_before_the_jump() -> None:
    kdist = np.concatenate([np.linspace(0.1, 0.2, 50), [5.0, 6.0]])
    assert knee_eps(kdist) == pytest.approx(0.2)
    assert knee_eps(np.zeros(5)) > 0.0
