"""The walk-forward's regimes: the server's causal labelling job, one per symbol.

``POST /v1/regime/causal`` labels every bar as it was knowable at its close: an HMM refitted
every ``refit_every`` bars on an EXPANDING window (every bar from the series' first up to the
refit), each bar labelled by the FILTERED pass (forward only) of the latest fit on earlier
bars, then read with the trend (a market whose calm days have kept falling is not called
bull). With ``min_train`` set to the walk-forward's first bar, fit ``k`` uses bars
``0 .. start + k * refit_every - 1`` and labels the next ``refit_every`` bars: the same
expanding refits the crew's regime analyst would have made at those dates.

The jobs of every symbol are started together and run on the server while this process waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from quantcrew.backtest.walk_forward_result import RegimeFit
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV

if TYPE_CHECKING:
    from quantcrew.ml_server.schemas.jobs import JobInfo
    from quantcrew.tools.client import MLClient

__all__ = ["RegimeJobError", "causal_regimes"]

ProgressCallback = Callable[[int, int, str], None]


class RegimeJobError(RuntimeError):
    """A causal labelling job did not succeed (the message says which symbol and why)."""


def causal_regimes(bars: Sequence[OHLCV], start: int, *, client: MLClient, refit_every: int, seed: int,
                   poll_s: float = 0.25, on_progress: ProgressCallback | None = None
                   ) -> tuple[list[list[str]], list[RegimeFit]]:
    """Every symbol's label at every bar ``start..`` and the fits behind them.

    Args:
        bars: Aligned series, the history before ``start`` included.
        start: Index of the span's first bar (the first fit uses the bars before it).
        client: Client of the ML server.
        refit_every: Bars between refits.
        seed: Seed of the fits.
        poll_s: Seconds between polls of a running job.
        on_progress: Called as ``on_progress(done, total, message)`` while the jobs run.

    Raises:
        RegimeJobError: a job failed or was cancelled.
        quantcrew.tools.errors.MLClientError: the server refused or failed a request.
    """
    from quantcrew.ml_server.schemas.regime import RegimeCausalRequest, RegimeCausalResult

    jobs = [client.regime_causal(RegimeCausalRequest.model_validate({
        "data": to_payload_dict(b), "symbol": b.symbol, "min_train": start, "refit_every": refit_every,
        "seed": seed})) for b in bars]
    labels: list[list[str]] = []
    fits: list[RegimeFit] = []
    for b, job in zip(bars, jobs, strict=True):
        info = client.wait_for_job(job.job_id, poll_s=poll_s, on_progress=_teller(on_progress, b.symbol))
        if info.status != "succeeded":
            reason = info.error.message if info.error is not None else info.status
            raise RegimeJobError(f"the causal regime labelling of {b.symbol} did not succeed: {reason}")
        result = RegimeCausalResult.model_validate(info.result)
        span = result.labels[start:]
        if len(result.labels) != len(b) or any(x is None for x in span):
            raise RegimeJobError(f"the causal regime labelling of {b.symbol} left bars of the span unlabelled")
        labels.append([str(x) for x in span])
        dates = b.iso_timestamps()
        fits.extend(RegimeFit(
            symbol=b.symbol, fit_date=dates[f.first_bar - 1], n_train=f.bars_used, block_start=dates[f.first_bar],
            block_end=dates[f.first_bar + f.bars_labelled - 1], job_id=info.job_id,
            n_states=f.n_states, converged=f.converged, method_used=f.method_used, fallback=f.fallback)
            for f in result.fits)
    return labels, fits


def _teller(on_progress: ProgressCallback | None, symbol: str) -> Callable[[JobInfo], None]:
    def tell(job: JobInfo) -> None:
        if on_progress is not None:
            on_progress(job.progress.done, job.progress.total,
                        f"regimes of {symbol}: {job.progress.message or job.status}")
    return tell
