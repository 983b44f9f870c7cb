"""Accuracy of the regime detector against the oracle filter, and on the 2008 crash.

For every parameter set of ``quantcrew.data.synthetic.PARAM_SETS`` and several seeds, a
synthetic market is generated, the detector is fitted on it exactly as the stateless
``/v1/regime/label`` call does (BIC over 2..4 states, 4 restarts, default features) and its
FILTERED labels (read with the trend of the calm days, as every label is by default) are scored
against the true regimes. Bar ``t``'s label is compared with the
regime that generated the return from ``t - 1`` to ``t``; bar 0 has no return and is left out.
The reference is :func:`quantcrew.data.synthetic.oracle_filter`: the Hamilton filter with the
generator's true parameters on log returns alone. The detector also sees the intraday range,
so it can beat that reference.

Then the real S&P 500: fit on a window, share of the bars from 2008-09-15 (Lehman) to
2009-03-09 (the low) labelled ``bear`` or ``volatile``.

Run: ``.venv/bin/python bench/regime_accuracy.py [--seeds 5] [--bars 2500] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from _table import print_table

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.samples import load_sample
from quantcrew.data.synthetic import PARAM_SETS, SyntheticMarket, generate_regime_market, oracle_filter
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime.model import RegimeDetector

CRISIS = ("2008-09-15", "2009-03-09")
FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    ("range",),
    ("log_return", "range"),
    ("log_return", "realized_vol", "range"),
    ("log_return",),
)


@dataclass(frozen=True)
class Row:
    param_set: str
    seed: int
    n_states: int
    transform: str
    detector: float
    oracle: float
    fit_s: float
    oos_detector: float
    oos_oracle: float

    @property
    def ratio(self) -> float:
        return self.detector / self.oracle

    @property
    def oos_ratio(self) -> float:
        return self.oos_detector / self.oos_oracle


def to_bars(ohlcv: OHLCV) -> Bars:
    """The server's view of the bars, through the wire schema."""
    return bars_from_payload(OHLCVPayload.model_validate(to_payload_dict(ohlcv)))


def score(market: SyntheticMarket, features: Sequence[str] | None = None) -> Row:
    bars = to_bars(market.bars)
    truth = market.labels[1:]
    _, oracle = oracle_filter(market)
    kwargs = {} if features is None else {"features": tuple(features)}
    start = time.perf_counter()
    detector = RegimeDetector(**kwargs).fit(bars)
    fit_s = time.perf_counter() - start
    labels = np.asarray(detector.filter(bars).labels)

    # out of sample: fit on the first half, label the second half with the model fixed
    half = len(market.bars) // 2
    early = RegimeDetector(**kwargs).fit(to_bars(market.bars.head(half)))
    late = np.asarray(early.filter(bars).labels)[half - 1:]
    return Row(
        param_set="",
        seed=market.seed,
        n_states=detector.n_states_,
        transform=detector.vol_transform_,
        detector=float(np.mean(labels == truth)),
        oracle=float(np.mean(oracle == truth)),
        fit_s=fit_s,
        oos_detector=float(np.mean(late == truth[half - 1:])),
        oos_oracle=float(np.mean(oracle[half - 1:] == truth[half - 1:])),
    )


def synthetic_table(seeds: int, n_bars: int) -> list[Row]:
    rows = [
        replace(score(generate_regime_market(n_bars, params=name, seed=seed)), param_set=name)
        for name in PARAM_SETS
        for seed in range(seeds)
    ]
    print(f"\nSynthetic markets: {n_bars} bars, default detector (features {RegimeDetector().features}, BIC 2..4)")
    print_table(
        ["set", "seed", "K", "vol tf", "detector", "oracle", "ratio", "oos det", "oos oracle", "oos ratio", "fit s"],
        [[r.param_set, r.seed, r.n_states, r.transform, r.detector, r.oracle, r.ratio, r.oos_detector,
          r.oos_oracle, r.oos_ratio, round(r.fit_s, 2)] for r in rows],
    )
    ratios = [r.ratio for r in rows]
    oos = [r.oos_ratio for r in rows]
    fits = [r.fit_s for r in rows]
    print(f"in-sample ratio: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}; "
          f"markets >= 0.95: {sum(r >= 0.95 for r in ratios)}/{len(ratios)}")
    print(f"out-of-sample ratio (fit on first half, label the second): median {statistics.median(oos):.3f}, "
          f"min {min(oos):.3f} (low where a regime is absent from the first half)")
    print(f"fit time ({n_bars} bars, BIC 2..4 x 4 restarts x 2 transforms): "
          f"median {statistics.median(fits):.2f} s, max {max(fits):.2f} s")
    return rows


def feature_table(seeds: int, n_bars: int) -> None:
    rows = []
    for features in FEATURE_SETS:
        ratios = [
            score(generate_regime_market(n_bars, params=name, seed=seed), features).ratio
            for name in PARAM_SETS
            for seed in range(seeds)
        ]
        rows.append(["+".join(features), statistics.median(ratios), min(ratios),
                     f"{sum(r >= 0.95 for r in ratios)}/{len(ratios)}"])
    print(f"\nFeature sets (in-sample ratio to the oracle, {len(PARAM_SETS)} sets x {seeds} seeds)")
    print_table(["features", "median", "min", ">= 0.95"], rows)


def crisis_table() -> None:
    sp500 = load_sample("SP500")
    print(f"\nS&P 500: share of {CRISIS[0]}..{CRISIS[1]} labelled bear or volatile (filtered labels)")
    for start, end in (("1999-01-01", "2018-12-31"), ("1999-01-01", "2009-06-30")):
        bars = to_bars(sp500.between(start, end))
        t0 = time.perf_counter()
        detector = RegimeDetector().fit(bars)
        fit_s = time.perf_counter() - t0
        result = detector.filter(bars)
        stamps = np.asarray(result.timestamps)
        labels = np.asarray(result.labels)
        window = (stamps >= CRISIS[0]) & (stamps <= CRISIS[1])
        share = float(np.isin(labels[window], ["bear", "volatile"]).mean())
        print(f"fit {start}..{end}: {len(bars)} bars, K={detector.n_states_}, transform {detector.vol_transform_}, "
              f"fit {fit_s:.2f} s -> share {share:.3f} ({int(window.sum())} bars)")
        for i, label in enumerate(detector.state_labels_):
            m, s, n = detector.state_mean_return_[i], detector.state_volatility_[i], detector.state_weight_[i]
            duration = 1.0 / (1.0 - detector.transmat[i, i])
            print(f"    state {i}: {label:8s} mean {m * 100:+.3f}%/day  vol {s * 100:.2f}%/day  "
                  f"t {m / s * np.sqrt(n):+.2f}  bars {n:6.0f}  duration {duration:5.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bars", type=int, default=2500)
    parser.add_argument("--quick", action="store_true", help="skip the feature-set comparison")
    args = parser.parse_args(argv)
    synthetic_table(args.seeds, args.bars)
    if not args.quick:
        feature_table(args.seeds, args.bars)
    crisis_table()


if __name__ == "__main__":
    main()
