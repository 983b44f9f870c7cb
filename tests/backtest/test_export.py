"""CSV export of a walk-forward run: equity, positions and trades."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from quantcrew.backtest.export import CSV_FILES, write_csv
from quantcrew.backtest.walk_forward import WalkForwardResult, walk_forward
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient


@pytest.fixture(scope="module")
def result(wf_client: MLClient, synth_bars: OHLCV) -> WalkForwardResult:
    dates = synth_bars.iso_timestamps()
    return walk_forward([synth_bars.iloc(slice(0, 401))], dates[300], dates[400], client=wf_client, min_train=300,
                        select_every=5)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_write_csv_writes_the_series_of_the_run(result: WalkForwardResult, tmp_path: Path) -> None:
    paths = write_csv(result, tmp_path / "csv")
    assert [p.name for p in paths] == list(CSV_FILES)
    equity = _rows(paths[0])
    assert [r["date"] for r in equity] == result.dates
    np.testing.assert_allclose([float(r["equity"]) for r in equity], result.equity, rtol=1e-15)
    np.testing.assert_allclose([float(r["trend_equity"]) for r in equity], result.baselines["trend"].equity,
                               rtol=1e-15)
    positions = _rows(paths[1])
    assert len(positions) == len(result.dates) and positions[5]["regime"] == result.regimes[result.symbols[0]][5]
    np.testing.assert_allclose([float(r["target"]) for r in positions], result.positions[:, 0], rtol=1e-15)


def test_trades_csv_adds_up_to_the_runs_turnover(result: WalkForwardResult, tmp_path: Path) -> None:
    trades = _rows(write_csv(result, tmp_path)[2])
    assert len(trades) == len(result.fills) > 0
    assert sum(float(t["turnover"]) for t in trades) == pytest.approx(float(result.turnover.sum()))
    by_date = {d: j for j, d in enumerate(result.dates)}
    for t in trades:  # filled at the open of the bar after the decision
        j = by_date[t["date"]]
        assert float(t["weight_after"]) == pytest.approx(result.positions[j - 1, 0])
