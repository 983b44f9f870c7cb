"""Every trial counted: what a data span is, and what the DSR of a walk-forward deflated by.

Every walk-forward records its trials (the strategy and each single-agent alternative of the
run, :class:`~quantcrew.quant.trials.Trial`) in a ledger: the runs store of the home, table
``backtest_trials``. The DSR of a run then deflates by:

* ``N``: the number of DISTINCT trials ever recorded on the span (the same configuration rerun
  is one trial; another seed, cost, cadence, band or fill is another);
* the variance of their per-bar Sharpe ratios.

A span is the symbols (sorted), the first and last date, and a hash of their bars: data
appended or edited makes a new span, a longer or shorter one too. Without a ledger the DSR
counts the run's own trials only, and the report says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from quantcrew.data.loaders import payload_hash
from quantcrew.data.ohlcv import OHLCV

__all__ = ["TrialsView", "span_key"]


@dataclass(frozen=True)
class TrialsView:
    """What the DSR of a run deflated by.

    Attributes:
        span: The span key.
        n_trials: Distinct trials on the span, this run's included.
        new: Trials this run added (0 for an exact rerun).
        sharpe_variance: Variance (ddof=1) of the trials' per-bar Sharpe ratios.
        ledger: True when the count came from a ledger; False: this run's trials only.
    """

    span: str
    n_trials: int
    new: int
    sharpe_variance: float
    ledger: bool


def span_key(bars: Sequence[OHLCV]) -> str:
    """The key of a data span: sorted symbols, first and last date, and a short hash of the bars."""
    ordered = sorted(bars, key=lambda b: b.symbol)
    digest = hashlib.sha256("".join(payload_hash(b) for b in ordered).encode()).hexdigest()[:16]
    days = ordered[0].iso_timestamps()
    return f"{','.join(b.symbol for b in ordered)} {days[0][:10]}..{days[-1][:10]} {digest}"
