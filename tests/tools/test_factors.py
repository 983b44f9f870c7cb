"""FactorAnalysisTool against the real app and a dead server."""

from __future__ import annotations

from quantcrew.config.settings import Settings
from quantcrew.tools.client import MLClient
from quantcrew.tools.factors import FactorAnalysisTool


def test_pca_of_two_indices_has_one_dominant_factor(settings: Settings, ml_client: MLClient) -> None:
    tool = FactorAnalysisTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", lookback=750)
    assert "PCA" in text and "degraded: false" in text
    data = tool.last_result.data if tool.last_result else {}
    assert data["explained_variance_ratio"][0] > 0.8  # S&P 500 and NASDAQ move together
    assert set(data["exposures"]) == {"SP500", "NASDAQ"}


def test_nmf_is_asked_with_the_shift_and_says_so(settings: Settings, ml_client: MLClient) -> None:
    tool = FactorAnalysisTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", lookback=300, factor_method="nmf", n_components=1)
    assert "shifted" in text
    assert tool.last_result is not None and tool.last_result.data["shift_applied"] > 0


def test_server_down_answers_numpy_pca(dead_server: Settings) -> None:
    tool = FactorAnalysisTool(settings=dead_server)
    text = tool.run(symbols="SP500,NASDAQ", lookback=500)
    assert "degraded: true" in text
    assert tool.last_result is not None and tool.last_result.data["method_used"] == "fallback_pca"


def test_one_symbol_is_refused_with_a_reason(settings: Settings, ml_client: MLClient) -> None:
    tool = FactorAnalysisTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500", lookback=300)
    assert "at least 2" in text
