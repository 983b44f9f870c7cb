"""VaR quality on real data: rolling one-day VaR backtests of every method on the S&P 500.

The real series is the S&P 500 bundled with ``arch`` (1999-2018), read by
``quantcrew.data.samples.load_sample("SP500")``; daily SIMPLE close-to-close returns. Each
method forecasts the one-day VaR at 95 % and 99 % from the previous ``--window`` (500) returns
only, for every trading day from the first one of 2001 to the end of the data, exactly as
``POST /v1/risk/backtest`` does (:func:`quantcrew.ml_server.services.risk.backtest.backtest_var`).
Per method and level: breaches, breach rate, Kupiec (unconditional coverage) and
Christoffersen (independence) p-values, and pass / FAIL at ``--significance`` (5 %).

The same backtest then runs on a synthetic GARCH(1,1)-t(6) series of the same length
(``quantcrew.data.synthetic_assets.generate_garch_series``), where the true VaR is known: a
reference for what a correct model scores, with the breaches of the TRUE conditional VaR as
a yardstick.

Target: filtered_historical passes both tests at 99 % on the S&P 500. The script prints which
method / level pairs fail and which test they fail.

Run: ``.venv/bin/python bench/var_quality.py [--refit-every 20] [--methods historical,filtered_historical]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from _table import print_table

from quantcrew.data.samples import load_sample
from quantcrew.data.synthetic_assets import generate_garch_series
from quantcrew.ml_server.schemas.risk import VAR_METHODS, VarMethod
from quantcrew.ml_server.services.risk.backtest import BacktestOutcome, backtest_var
from quantcrew.ml_server.services.risk.coverage import christoffersen_independence, kupiec_pof

FloatArray = npt.NDArray[np.float64]
LEVELS = (0.95, 0.99)
FIRST_DAY = np.datetime64("2001-01-01")
TARGET: tuple[VarMethod, float] = ("filtered_historical", 0.99)


def sp500_returns() -> tuple[FloatArray, npt.NDArray[np.datetime64]]:
    """Daily simple returns of the bundled S&P 500 and the day each one ends on."""
    bars = load_sample("SP500")
    close = np.asarray(bars.close, dtype=np.float64)
    days = np.asarray(bars.timestamps).astype("datetime64[D]")
    return close[1:] / close[:-1] - 1.0, days[1:]


def run(pnl: FloatArray, methods: Sequence[VarMethod], args: argparse.Namespace) -> tuple[BacktestOutcome, float]:
    start = time.perf_counter()
    outcome = backtest_var(pnl, LEVELS, methods, window=args.window, refit_every=args.refit_every,
                           garch_model=args.garch_model,
                           n_paths=args.n_paths, seed=args.seed, significance=args.significance)
    return outcome, time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def report(title: str, outcome: BacktestOutcome, seconds: float, extra: list[list[object]] | None = None) -> None:
    print(f"\n## {title}: {outcome.n_forecasts} forecast days, window {outcome.window}, "
          f"refit every {outcome.refit_every} days ({seconds:.1f} s)\n")
    rows: list[list[object]] = []
    for r in outcome.results:
        rows.append([r.method, f"{r.level:g}", r.n_breaches, f"{r.n_obs * r.expected_rate:.1f}",
                     f"{100 * r.breach_rate:.2f}%", f"{r.mean_var:.4f}", f"{r.kupiec.p_value:.4f}",
                     f"{r.christoffersen.p_value:.4f}", f"{r.conditional.p_value:.4f}",
                     verdict(r.passes_kupiec), verdict(r.passes_christoffersen)])
    rows.extend(extra or [])
    print_table(["method", "level", "breaches", "expected", "rate", "mean VaR", "Kupiec p", "Christ. p", "CC p",
                 "Kupiec", "Christ."], rows)
    fails = []
    for r in outcome.results:
        failed = [name for name, ok in (("Kupiec", r.passes_kupiec), ("Christoffersen", r.passes_christoffersen))
                  if not ok]
        if failed:
            fails.append(f"{r.method}@{r.level:g} ({', '.join(failed)})")
    print(f"\nfailing at {outcome.significance:g}: {'; '.join(fails) if fails else 'none'}")
    for method, info in outcome.details.items():
        print(f"  {method}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in info.items()))
    for w in outcome.warnings:
        print(f"  warning: {w}")


def true_var_row(series_returns: FloatArray, true_var: FloatArray, level: float, window: int,
                 significance: float) -> list[object]:
    """The same columns for the generator's TRUE conditional VaR (the best any method can do)."""
    hits = -series_returns[window:] > true_var[window:]
    kup = kupiec_pof(hits.shape[0], int(hits.sum()), level)
    ind = christoffersen_independence(hits)
    return ["(true VaR)", f"{level:g}", int(hits.sum()), f"{hits.shape[0] * (1 - level):.1f}",
            f"{100 * hits.mean():.2f}%", f"{float(np.mean(true_var[window:])):.4f}", f"{kup.p_value:.4f}",
            f"{ind.p_value:.4f}", "", verdict(kup.p_value >= significance), verdict(ind.p_value >= significance)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--refit-every", type=int, default=20, help="days between refits (default 20)")
    parser.add_argument("--methods", default=",".join(VAR_METHODS),
                        help=f"comma-separated subset of {','.join(VAR_METHODS)} (default: all)")
    parser.add_argument("--garch-model", choices=["gjr", "symmetric"], default="gjr",
                        help="volatility model of filtered_historical (default gjr)")
    parser.add_argument("--window", type=int, default=500, help="estimation window in days (default 500)")
    parser.add_argument("--n-paths", type=int, default=10_000, help="Monte Carlo paths per refit")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo and synthetic-series seed")
    parser.add_argument("--significance", type=float, default=0.05, help="test size (default 0.05)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic GARCH-t reference")
    args = parser.parse_args(argv)
    methods: list[VarMethod] = []
    for name in (m.strip() for m in args.methods.split(",") if m.strip()):
        method = next((m for m in VAR_METHODS if m == name), None)
        if method is None:
            parser.error(f"unknown method {name!r}; choose among {', '.join(VAR_METHODS)}")
        methods.append(method)

    returns, days = sp500_returns()
    first = int(np.searchsorted(days, FIRST_DAY))
    if first < args.window:
        parser.error(f"only {first} returns before 2001: --window must be at most {first}")
    pnl, span = returns[first - args.window:], days[first - args.window:]
    outcome, seconds = run(pnl, methods, args)
    report(f"S&P 500, forecasts {span[args.window]} .. {span[-1]}", outcome, seconds)
    target = next((r for r in outcome.results if (r.method, r.level) == TARGET), None)
    if target is not None:
        met = target.passes_kupiec and target.passes_christoffersen
        print(f"\ntarget (filtered_historical passes both tests at 99%): {'met' if met else 'NOT met'}")

    if not args.no_synthetic:
        series = generate_garch_series(pnl.shape[0], seed=args.seed)
        outcome, seconds = run(series.returns, methods, args)
        extra = [true_var_row(series.returns, series.true_var(a), a, args.window, args.significance) for a in LEVELS]
        p = series.params
        report(f"synthetic GARCH(1,1)-t: omega {p['omega']:g}, alpha {p['alpha']:g}, beta {p['beta']:g}, "
               f"df {p['df']:g}, seed {args.seed}", outcome, seconds, extra)


if __name__ == "__main__":
    main()
