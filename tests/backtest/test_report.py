"""The HTML / PNG report of a walk-forward run."""

from __future__ import annotations

import base64
import html
import re
import sys
from pathlib import Path

import pytest

from quantcrew.backtest.report import stats_headers, stats_rows, verdict_rows, write_report, yearly_rows
from quantcrew.backtest.walk_forward import WalkForwardResult, walk_forward
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_result(wf_client: MLClient, synth_bars: OHLCV) -> WalkForwardResult:
    dates = synth_bars.iso_timestamps()
    return walk_forward([synth_bars.iloc(slice(0, 431))], dates[300], dates[430], client=wf_client, min_train=300,
                        select_every=5)


def test_write_report_writes_html_with_stats_and_images_and_a_png(small_result: WalkForwardResult,
                                                                   tmp_path: Path) -> None:
    html_path, png_path = write_report(small_result, tmp_path / "out")
    assert html_path == tmp_path / "out" / "report.html" and png_path == tmp_path / "out" / "equity.png"
    assert png_path.read_bytes().startswith(PNG_MAGIC)
    page = html_path.read_text(encoding="utf-8")
    def cells(row: list[str]) -> str:
        return "".join(f"<td>{html.escape(c)}</td>" for c in row)

    assert stats_headers(small_result) == ["", "Strategy", "buy & hold", "200-day trend", "10% vol target"]
    for row in [*stats_rows(small_result), *verdict_rows(small_result), *yearly_rows(small_result)[1]]:
        assert cells(row) in page
    for comparison in small_result.comparisons:
        assert html.escape(comparison.sentence) in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    assert small_result.bandit_id in page and small_result.regime_fits[0].job_id in page
    assert "Agents: rules" in page and 'src="http' not in page  # self-contained


def test_stats_rows_cover_the_statistics_asked_for(small_result: WalkForwardResult) -> None:
    labels = [row[0] for row in stats_rows(small_result)]
    for wanted in ("Total return", "Annual return", "Sharpe", "Sortino", "Max drawdown", "Turnover", "Trades", "DSR"):
        assert any(label.startswith(wanted) for label in labels), wanted


def test_report_module_imports_no_matplotlib() -> None:
    import subprocess

    code = "import sys, quantcrew.backtest.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
