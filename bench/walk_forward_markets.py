"""Walk-forward backtests of the crew's decision pipeline on several markets, against the trivial baselines.

For each market, a local ML server (``quantcrew-server`` in a child process) fits the regime
HMMs and runs the bandit; every bar's decision is :func:`quantcrew.crew.decision.decide` (see
:mod:`quantcrew.backtest.walk_forward`). The crew is compared, on the same fills and costs, with
buy-and-hold, a 200-day trend filter and a 10% volatility target; each comparison carries the
90% block-bootstrap interval of the Sharpe difference.

Every configuration run is recorded in the trials ledger of ``--home`` (its runs store), and
the DSR deflates by every distinct trial recorded on the market's span: keep one home for a
whole search so that nothing tried goes uncounted.

Protocol of issue 15: develop on SP500 and NASDAQ 2005-18 only; GOOG 2006-13 (backtesting.py's
sample, a file) is the held-out market, run once at the end. Target: the crew's Sharpe at least
the better of the trend filter and the vol target on at least two of the three markets, and a max
drawdown at most half of buy-and-hold's on all three.

Run: ``.venv/bin/python bench/walk_forward_markets.py --home DIR [--markets SP500,NASDAQ]
[--start 2005-01-01] [--end 2018-12-31] [--fill next_open] [--trade-band 0.0] [--select-every 21]
[--cost-bps 5] [--min-train 500] [--seed 0] [--report DIR]``. A market is a bundled symbol or a
CSV path; ``--markets goog`` reads ``backtesting``'s GOOG sample (2006-01-03..2013-03-01,
``--min-train 300``: the file starts in August 2004).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Any

from _table import print_table

from quantcrew.backtest.agent_models import ModelSettings
from quantcrew.backtest.sizing import EnsembleSettings
from quantcrew.backtest.walk_forward import walk_forward
from quantcrew.backtest.walk_forward_result import WalkForwardResult
from quantcrew.config.settings import load_settings
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer
from quantcrew.tools.client import make_client


def _fmt(x: float, pct: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.2f}"


def _goog() -> str:
    import backtesting

    return str(Path(backtesting.__file__).parent / "test" / "GOOG.csv")


def _one(market: str, args: argparse.Namespace, client: Any, settings: Any, ledger: RunsStore) -> WalkForwardResult:
    symbol, start, end, min_train = market, args.start, args.end, args.min_train
    if market.lower() == "goog":
        symbol, start, end, min_train = _goog(), "2006-01-01", "2013-03-01", min(args.min_train, 300)
    return walk_forward([symbol], start, end, client=client, settings=settings, refit_every=args.refit_every,
                        min_train=min_train, cost_bps=args.cost_bps, cooldown=args.cooldown, policy=args.policy,
                        select_every=args.select_every, seed=args.seed, fill=args.fill, trade_band=args.trade_band,
                        adjust_rate=args.adjust_rate, agents=args.agents,
                        model_settings=ModelSettings(timesteps=args.timesteps, cost_bps=args.cost_bps),
                        ensemble_settings=EnsembleSettings(members=args.ensemble_members, epochs=args.ensemble_epochs,
                                                           folds=args.ensemble_folds),
                        ledger=ledger, on_progress=_progress)


def _progress(done: int, total: int, message: str) -> None:
    if (message.startswith(("policies", "execution networks")) and "(running)" not in message
            and "(queued)" not in message):
        print(f"  {message}", flush=True)


def _report(result: WalkForwardResult) -> tuple[list[object], bool, bool]:
    s = result.stats
    base = {k: b.stats for k, b in result.baselines.items()}
    print(f"\nagents: {result.agents_used}")
    print(f"{', '.join(result.symbols)} {result.dates[0]}..{result.dates[-1]} ({len(result.dates)} bars, "
          f"{result.periods_per_year}/yr), fill {result.config['fill']}, band {result.config['trade_band']}, "
          f"adjust {result.config['adjust_rate']}, "
          f"select every {result.config['select_every']}; {result.wall_s:.0f} s")
    headers = ["", "Sharpe", "max DD", "annual ret", "turnover/yr", "gross Sharpe"]
    gross = _gross_sharpe(result)
    rows: list[list[object]] = [["crew", _fmt(s.sharpe), _fmt(s.max_drawdown, True), _fmt(s.annual_return, True),
                                 _fmt(s.turnover), _fmt(gross)]]
    for k, b in base.items():
        rows.append([result.baselines[k].label, _fmt(b.sharpe), _fmt(b.max_drawdown, True),
                     _fmt(b.annual_return, True), _fmt(b.turnover), ""])
    for agent, a in result.alternatives.items():
        rows.append([f"only {agent}", _fmt(a.sharpe), _fmt(a.max_drawdown, True), _fmt(a.annual_return, True),
                     _fmt(a.turnover), ""])
    print_table(headers, rows)
    for c in result.comparisons:
        print("  " + c.sentence)
    t = result.trials
    print(f"  DSR {_fmt(result.dsr)} over {t.n_trials} distinct trials on this span ({t.new} new in this run)")
    for note in result.notes:
        print(f"  note: {note}")
    best = max(base["trend"].sharpe, base["vol_target"].sharpe)
    sharpe_ok = s.sharpe >= best
    dd_ok = s.max_drawdown <= 0.5 * base["buy_and_hold"].max_drawdown
    row: list[object] = [", ".join(result.symbols)[-24:], f"{_fmt(s.sharpe)} / {_fmt(s.max_drawdown, True)}",
                         *(f"{_fmt(b.sharpe)} / {_fmt(b.max_drawdown, True)}" for b in base.values()),
                         _fmt(result.dsr), t.n_trials, "yes" if sharpe_ok else "no", "yes" if dd_ok else "no"]
    return row, sharpe_ok, dd_ok


def _gross_sharpe(result: WalkForwardResult) -> float:
    from quantcrew.quant.performance import sharpe_ratio

    return sharpe_ratio(result.gross_returns[1:], result.periods_per_year)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True, help="Home whose runs store keeps the trials ledger.")
    parser.add_argument("--markets", default="SP500,NASDAQ")
    parser.add_argument("--start", default="2005-01-01")
    parser.add_argument("--end", default="2018-12-31")
    parser.add_argument("--cost-bps", type=float, default=5.0)
    parser.add_argument("--refit-every", type=int, default=63)
    parser.add_argument("--min-train", type=int, default=500)
    parser.add_argument("--cooldown", type=int, default=21)
    parser.add_argument("--policy", default="discounted_thompson")
    parser.add_argument("--select-every", type=int, default=21)
    parser.add_argument("--fill", default="next_open")
    parser.add_argument("--trade-band", type=float, default=0.0)
    parser.add_argument("--adjust-rate", type=float, default=1.0, help="Fraction of the gap to a target traded.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agents", default="rules", help="rules, or models: RL policies retrained every year.")
    parser.add_argument("--timesteps", type=int, default=8_192, help="With --agents models: steps per run.")
    parser.add_argument("--ensemble-members", type=int, default=2, help="With models: members per architecture.")
    parser.add_argument("--ensemble-epochs", type=int, default=12, help="With models: most epochs per fit.")
    parser.add_argument("--ensemble-folds", type=int, default=3, help="With models: walk-forward folds.")
    parser.add_argument("--server-url", default=None,
                        help="Use this running server (e.g. the one a concurrent run on the same home started).")
    parser.add_argument("--report", type=Path, default=None, help="Write each market's report under this folder.")
    args = parser.parse_args()

    args.home.mkdir(parents=True, exist_ok=True)
    settings = load_settings(home=args.home)
    ledger = RunsStore(settings.runs_db)
    summary: list[list[object]] = []
    wins = 0
    all_dd = True
    t0 = time.perf_counter()
    with (contextlib.nullcontext(None) if args.server_url else
          LocalServer(env={"QUANTCREW_HOME": str(args.home / "server")}, log_path=args.home / "server.log")) as server:
        settings.client.url = args.server_url if server is None else server.url
        with make_client(settings.client) as client:
            for market in args.markets.split(","):
                result = _one(market.strip(), args, client, settings, ledger)
                row, sharpe_ok, dd_ok = _report(result)
                summary.append(row)
                wins += sharpe_ok
                all_dd &= dd_ok
                if args.report is not None:
                    from quantcrew.backtest.export import write_csv
                    from quantcrew.backtest.report import write_report

                    out = args.report / Path(market).stem
                    write_report(result, out)
                    write_csv(result, out)
    print()
    print_table(["market", "crew Sharpe / DD", "buy & hold", "200-day trend", "10% vol target", "DSR", "trials",
                 ">= best of trend/vol", "DD <= B&H/2"], summary)
    print(f"\ntarget: crew Sharpe >= the better of trend and vol target on >= 2 markets: {wins} of {len(summary)} "
          f"({'MET' if wins >= 2 else 'MISSED'}); max DD <= half of buy-and-hold's on all: "
          f"{'MET' if all_dd else 'MISSED'}; {time.perf_counter() - t0:.0f} s in all")
    ledger.close()


if __name__ == "__main__":
    main()
