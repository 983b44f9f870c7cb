"""Do the specialists specialise? Every seed of every agent, out of sample, against its own baseline.

Trains the four agents with the server's own training job (the code ``POST /v1/rl/train`` runs,
no HTTP in the loop) and its procedure: each agent once per seed and per configuration of the
search grid, fitted on the first part of the training span; the last part (the validation
bars) chooses one run per agent; the bars after the training span judge it by its gate. Every
run is then scored on those out-of-sample bars, so the spread between seeds shows, and so does
whether validation's choice was a good one (it never saw them).

A run WINS when, out of sample and after costs, both hold:

- its specialty in its own regime beats buy-and-hold's on the same bars (conservative: max
  drawdown over the bear/volatile bars, lower wins; aggressive: total return over the bull bars;
  balanced: Sharpe over every bar; contrarian: total return over the sideways bars);
- its Sharpe over every bar beats buy-and-hold's.

The gate (what deploys a policy) asks for that, plus a Sharpe above 0 and a position held on at
least 10% of the bars; it judges only the run validation chose. The tables also count the runs
whose specialty alone beat buy-and-hold's (a flat book "wins" a drawdown contest that way).

Markets: SP500 and NASDAQ 2005-2018 (development), GOOG 2006-2013 (held out: backtesting.py's
sample file, read from the installed package; run it once, at the end). Each market's bars are
split as ``quantcrew setup`` splits them: the first 70% train (the last quarter of those
validates), the rest is the test span.

Run: .venv/bin/python bench/rl_specialists.py [--markets sp500,nasdaq[,goog]] [--timesteps 8000]
     [--seeds 3] [--reward-scales 0.5,2] [--learning-rates ...] [--ent-coefs ...] [--n-envs 8]
     [--algo ppo] [--agents all] [--json FILE]
Quick run (a few minutes): --markets sp500 --timesteps 2048 --seeds 2 --reward-scales 1 --agents balanced,contrarian
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _table import print_table

from quantcrew.crew.training import SetupDefaults
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.rl import RL_AGENTS, RLPolicyResult, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.rl import market as rl_market
from quantcrew.ml_server.services.rl import training as rl_training

_SPANS = {"sp500": ("SP500", "2005-01-01", "2018-12-31"), "nasdaq": ("NASDAQ", "2005-01-01", "2018-12-31"),
          "goog": ("GOOG", "2006-01-01", "2013-12-31")}


class _Ctx:
    job_id = "bench"
    cancelled = False

    def report(self, **_: Any) -> None:
        return None


def _goog_payload(start: str, end: str) -> dict[str, Any]:
    """backtesting.py's GOOG sample (a CSV whose date column has no name), between two dates."""
    import backtesting

    path = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if start <= r[""] <= end]
    return {"timestamps": [f"{r['']}T00:00:00" for r in rows], "open": [float(r["Open"]) for r in rows],
            "high": [float(r["High"]) for r in rows], "low": [float(r["Low"]) for r in rows],
            "close": [float(r["Close"]) for r in rows], "volume": [float(r["Volume"]) for r in rows]}


def _payload(market: str) -> OHLCVPayload:
    symbol, start, end = _SPANS[market]
    if market == "goog":
        return OHLCVPayload(**_goog_payload(start, end))
    return OHLCVPayload(**to_payload_dict(load_sample(symbol).between(start, end)))


def _floats(text: str | None) -> list[float] | None:
    return None if not text else [float(x) for x in text.split(",")]


def _train(market: str, args: argparse.Namespace, home: Path) -> tuple[RLTrainResult, float]:
    grid: dict[str, Any] = {"reward_scale": _floats(args.reward_scales)}
    if args.learning_rates:
        grid["learning_rate"] = _floats(args.learning_rates)
    if args.ent_coefs:
        grid["ent_coef"] = _floats(args.ent_coefs)
    agents = list(RL_AGENTS) if args.agents == "all" else args.agents.split(",")
    req = RLTrainRequest.model_validate({
        "data": _payload(market), "symbol": _SPANS[market][0], "agents": agents, "algorithm": args.algo,
        "timesteps": args.timesteps, "seeds": args.seeds, "seed": args.seed, "grid": grid, "n_envs": args.n_envs,
        "validation_fraction": args.validation_fraction, "cost_bps": args.cost_bps,
        "slippage_bps": args.slippage_bps, "name_prefix": f"bench-{market}"})
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, rl_market.split_index(bars, req.train_end, req.train_fraction))
    registry = ModelRegistry(home / market / "registry.db", home / market / "artifacts")
    began = time.perf_counter()
    raw = rl_training.train_agents(plan, registry, _Ctx())  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    registry.close()
    return RLTrainResult.model_validate(raw), seconds


def _baselines(policy: RLPolicyResult) -> tuple[float, float | None, str]:
    """Buy-and-hold's test Sharpe and specialty (from the chosen run's gate: the same bars for every run)."""
    assert policy.gate is not None
    checks = {c.name: c for c in policy.gate.checks}
    special = checks["specialty_above_buy_and_hold"]
    return float(checks["sharpe_above_buy_and_hold"].baseline_value or 0.0), special.baseline_value, special.measure


def _special_win(run: Any, bh_special: float | None, measure: str) -> bool:
    """Whether the run's specialty in its regime alone beat buy-and-hold's (lower wins for a drawdown)."""
    if run.test_specialty is None or bh_special is None:
        return False
    mine, theirs = float(run.test_specialty), float(bh_special)
    return mine < theirs if measure.startswith("max drawdown") else mine > theirs


def _num(value: float | None, fmt: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _config(run: Any) -> str:
    parts = [f"x{run.reward_scale:g}"]
    if run.learning_rate is not None:
        parts.append(f"lr {run.learning_rate:g}")
    if run.ent_coef is not None:
        parts.append(f"ent {run.ent_coef:g}")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    base = SetupDefaults()
    parser.add_argument("--markets", default="sp500,nasdaq", help="sp500, nasdaq, goog (goog: the held-out market)")
    parser.add_argument("--agents", default="all")
    parser.add_argument("--algo", default=base.algorithm, choices=["ppo", "a2c", "dqn"])
    parser.add_argument("--timesteps", type=int, default=base.timesteps, help="steps per run")
    parser.add_argument("--seeds", type=int, default=base.seeds)
    parser.add_argument("--seed", type=int, default=base.seed, help="first seed")
    parser.add_argument("--reward-scales", default=",".join(f"{x:g}" for x in base.reward_scales))
    parser.add_argument("--learning-rates", default=None)
    parser.add_argument("--ent-coefs", default=None)
    parser.add_argument("--n-envs", type=int, default=base.n_envs)
    parser.add_argument("--validation-fraction", type=float, default=base.validation_fraction)
    parser.add_argument("--cost-bps", type=float, default=base.cost_bps)
    parser.add_argument("--slippage-bps", type=float, default=base.slippage_bps)
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    runs_rows: list[list[object]] = []
    pick_rows: list[list[object]] = []
    keys = ("runs", "wins", "special", "chosen", "chosen_wins", "chosen_special", "gates")
    per_agent: dict[str, dict[str, int]] = {a: dict.fromkeys(keys, 0) for a in RL_AGENTS}
    dump: list[dict[str, Any]] = []
    timing: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for market in args.markets.split(","):
            result, seconds = _train(market, args, Path(tmp))
            n_runs = sum(len(p.runs) for p in result.policies)
            timing.append([market, len(result.policies), n_runs, args.timesteps, f"{seconds:.0f}",
                           f"{seconds / max(len(result.policies), 1):.0f}"])
            print(f"{market}: fit {result.train_start}..{result.validation_start}, validation "
                  f"{result.validation_start}..{result.train_end}, test {result.test_start}..{result.test_end}, "
                  f"{result.periods_per_year} bars/year; {seconds:.0f} s", flush=True)
            for p in result.policies:
                bh_sharpe, bh_special, measure = _baselines(p)
                tally = per_agent[p.agent]
                sharpes = [r.test_sharpe for r in p.runs]
                chosen = next(r for r in p.runs if r.chosen)
                for r in p.runs:
                    tally["runs"] += 1
                    tally["wins"] += int(r.test_beats_buy_and_hold)
                    tally["special"] += int(_special_win(r, bh_special, measure))
                    runs_rows.append([market, p.agent, r.seed, _config(r), f"{r.validation_score:.3f}",
                                      "*" if r.chosen else "", f"{r.test_sharpe:+.2f}", f"{bh_sharpe:+.2f}",
                                      _num(r.test_specialty), _num(bh_special), f"{r.test_total_return:+.1%}",
                                      "WIN" if r.test_beats_buy_and_hold else "-"])
                tally["chosen"] += 1
                tally["chosen_wins"] += int(chosen.test_beats_buy_and_hold)
                tally["chosen_special"] += int(_special_win(chosen, bh_special, measure))
                passed = p.gate is not None and p.gate.passed
                tally["gates"] += int(passed)
                rank = 1 + sum(1 for s in sharpes if s > chosen.test_sharpe)
                pick_rows.append([market, p.agent, measure, f"seed {chosen.seed} {_config(chosen)}",
                                  f"{rank}/{len(sharpes)}", f"{min(sharpes):+.2f}..{max(sharpes):+.2f}",
                                  f"{statistics.median(sharpes):+.2f}", f"{bh_sharpe:+.2f}",
                                  f"{sum(r.test_beats_buy_and_hold for r in p.runs)}/{len(p.runs)}",
                                  f"{sum(_special_win(r, bh_special, measure) for r in p.runs)}/{len(p.runs)}",
                                  "WIN" if chosen.test_beats_buy_and_hold else "-", "PASSED" if passed else "gated"])
                dump.append({"market": market, "agent": p.agent, "buy_and_hold_sharpe": bh_sharpe,
                             "buy_and_hold_specialty": bh_special, "specialty": measure,
                             "gate": p.gate.model_dump(mode="json") if p.gate else None,
                             "runs": [r.model_dump(mode="json") for r in p.runs], "seconds": seconds})
    cfg = (f"{args.algo}, {args.timesteps:,} steps per run, {args.seeds} seeds from {args.seed}, reward scales "
           f"{args.reward_scales}" + (f", learning rates {args.learning_rates}" if args.learning_rates else "")
           + (f", entropy {args.ent_coefs}" if args.ent_coefs else "")
           + f", {args.n_envs} envs, costs {args.cost_bps:g}+{args.slippage_bps:g} bp")
    print(f"\nEvery run out of sample, after costs ({cfg}); * = chosen on the validation bars")
    print_table(["market", "agent", "seed", "config", "val score", "", "Sharpe", "B&H", "specialty",
                 "B&H spec.", "total ret", "vs B&H"], runs_rows)
    print("\nPer market and agent: validation's choice, its rank by test Sharpe among the runs, the spread between "
          "runs")
    print_table(["market", "agent", "specialty (own regime)", "chosen", "rank", "Sharpe range", "median",
                 "B&H", "runs won", "specialty won", "chosen", "gate"], pick_rows)
    total = {k: sum(t[k] for t in per_agent.values()) for k in keys}
    print("\nWins over seeds and markets (a win: specialty in its regime AND Sharpe above buy-and-hold's; "
          "specialty: that alone)")
    rows: list[list[object]] = []
    for name, t in [*((a, t) for a, t in per_agent.items() if t["runs"]), ("all", total)]:
        rows.append([name, f"{t['wins']}/{t['runs']}", f"{t['special']}/{t['runs']}",
                     f"{t['chosen_wins']}/{t['chosen']}", f"{t['chosen_special']}/{t['chosen']}",
                     f"{t['gates']}/{t['chosen']}"])
    print_table(["agent", "all runs won", "specialty", "chosen won", "chosen specialty", "gates passed"], rows)
    print("\nWall time per market (the training job: regime fit, every run, evaluation; 1 torch thread)")
    print_table(["market", "agents", "runs", "steps/run", "seconds", "s/agent"], timing)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": dump}, indent=1))


if __name__ == "__main__":
    main()
