"""ClusteringTool: asset groups and market states, from the server and from the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantcrew.config.settings import Settings
from quantcrew.data import generate_correlated_market
from quantcrew.tools.client import MLClient
from quantcrew.tools.clustering import ClusteringTool


def _two_block_folder(tmp: Path) -> Path:
    """Six CSV series: a1..a3 driven by one factor, b1..b3 by another."""
    rho = np.full((6, 6), 0.0)
    rho[:3, :3] = rho[3:, 3:] = 0.8
    np.fill_diagonal(rho, 1.0)
    market = generate_correlated_market(rho * 1e-4, 400, seed=3, symbols=("a1", "a2", "a3", "b1", "b2", "b3"))
    panel = market.to_panel()
    folder = tmp / "data"
    folder.mkdir()
    for j, sym in enumerate(panel.symbols):
        rows = ["date,open,high,low,close"] + [
            f"{d},{c:.6f},{c:.6f},{c:.6f},{c:.6f}"
            for d, c in zip(panel.iso_timestamps(), panel.close[:, j], strict=True)
        ]
        (folder / f"{sym}.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_assets_mode_finds_the_two_blocks(settings: Settings, ml_client: MLClient, tmp_path: Path) -> None:
    settings.data.data_dir = _two_block_folder(tmp_path)
    settings.data.max_gap_days = 10
    tool = ClusteringTool(settings=settings, client=ml_client)
    text = tool.run(symbols="a1,a2,a3,b1,b2,b3", lookback=399)
    assert "degraded: false" in text, text
    members = tool.last_result.data["members"] if tool.last_result else {}
    assert sorted(map(sorted, members.values())) == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]


def test_states_mode_names_the_latest_state(settings: Settings, ml_client: MLClient) -> None:
    tool = ClusteringTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", lookback=500, cluster_mode="states", n_clusters=3)
    assert "the latest day is in state" in text
    data = tool.last_result.data if tool.last_result else {}
    assert data["n_clusters"] == 3 and "labels" not in data


def test_server_down_groups_by_correlation(dead_server: Settings, tmp_path: Path) -> None:
    dead_server.data.data_dir = _two_block_folder(tmp_path)
    dead_server.data.max_gap_days = 10
    tool = ClusteringTool(settings=dead_server)
    text = tool.run(symbols="a1,a2,a3,b1,b2,b3", lookback=399)
    assert "degraded: true" in text
    members = tool.last_result.data["members"] if tool.last_result else {}
    assert sorted(map(sorted, members.values())) == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]


def test_auto_mode_clusters_states_when_there_are_too_few_symbols(settings: Settings, ml_client: MLClient) -> None:
    tool = ClusteringTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", lookback=300)
    assert "market state(s)" in text and "degraded: false" in text
