"""Do the specialized agents win on their specialty, out of sample? And how long does training take?

Trains the four agents (conservative, aggressive, balanced, contrarian) with the server's own
training service (the code a ``POST /v1/rl/train`` job runs; no HTTP in the loop), then
backtests each on bars it never saw, after costs (1 bp commission + 1 bp slippage per unit of
turnover), against buy-and-hold on the same bars. One run per agent (one seed, reward scale 1:
the seeds, the grid and the validation choice are bench/rl_specialists.py's subject).
Specialty metrics, each over the agent's own regime (the filtered regime labels):

- conservative: max drawdown over the bear and volatile bars (lower wins);
- aggressive: total return over the bull bars;
- balanced: Sharpe ratio over every bar;
- contrarian: compounded return over the sideways bars.

Markets: the real S&P 500 (arch's daily series: train 1999-2010, test 2011-2018) and a
synthetic regime-switching market (5,000 bars; train the first 70 %).

Speed: wall time of ``model.learn`` per agent, against SB3's defaults for the same algorithm
on one environment (the baseline, measured in the same run with ``--baseline``).

Run: .venv/bin/python bench/rl_agents.py [--algo ppo] [--timesteps 100000] [--markets sp500,synthetic]
     [--seed 0] [--baseline]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _table import print_table

from quantcrew.data import generate_regime_market, load_sample, to_payload_dict
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.rl import RL_AGENTS, RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.rl import market as rl
from quantcrew.ml_server.services.rl import training as rl_training


class _Ctx:
    job_id = "bench"
    cancelled = False

    def report(self, **_: Any) -> None:
        return None


def _payload(market: str) -> tuple[OHLCVPayload, str | None]:
    if market == "sp500":
        return OHLCVPayload(**to_payload_dict(load_sample("SP500"))), "2010-12-31"
    return OHLCVPayload(**to_payload_dict(generate_regime_market(5000, seed=11).bars)), None


def _specialty(policy: Any) -> tuple[float, float]:
    """The policy's specialty in its regime and buy-and-hold's on the same bars (NaN: not measurable)."""
    check = next(c for c in policy.gate.checks if c.name == "specialty_above_buy_and_hold")
    nan = float("nan")
    return (nan if check.value is None else check.value), (nan if check.baseline_value is None
                                                             else check.baseline_value)


def _train(market: str, algo: str, timesteps: int, seed: int, home: Path) -> RLTrainResult:
    payload, train_end = _payload(market)
    req = RLTrainRequest(data=payload, agents=list(RL_AGENTS), algorithm=algo, timesteps=timesteps,
                         train_end=train_end, seed=seed, seeds=1, grid={"reward_scale": [1.0]},  # type: ignore[arg-type]
                         name_prefix=f"bench-{market}")
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, rl.split_index(bars, req.train_end, req.train_fraction))
    registry = ModelRegistry(home / market / "registry.db", home / market / "artifacts")
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, _Ctx()))  # type: ignore[arg-type]


def _baseline_seconds(algo: str, timesteps: int, seed: int) -> float:
    """SB3's defaults for ``algo`` on one env of the same market: the speed baseline."""
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from quantcrew.ml_server.services.rl.env import TradingEnv
    from quantcrew.ml_server.services.rl.rewards import make_reward

    payload, _ = _payload("sp500")
    bars = bars_from_payload(payload)
    last = rl.split_index(bars, None, 0.7)
    market = rl.prepare_market(bars, detector=None, train_last=last)
    env = DummyVecEnv([lambda: TradingEnv(market.scaled, market.forward_returns, make_reward("aggressive"),
                                          start=market.warmup, end=last, episode_length=256)])
    cls = {"ppo": PPO, "a2c": A2C, "dqn": DQN}[algo]
    model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    began = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "a2c", "dqn"])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--markets", default="sp500,synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also time SB3's defaults on one env")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rows: list[list[object]] = []
    speed: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for market in args.markets.split(","):
            result = _train(market, args.algo, args.timesteps, args.seed, Path(tmp))
            for p in result.policies:
                assert p.evaluation is not None
                mine, bench = _specialty(p)
                rows.append([market, p.agent, p.evaluation.specialty_metric, f"{mine:+.4f}", f"{bench:+.4f}",
                             "yes" if p.evaluation.beats_buy_and_hold else "no",
                             f"{p.evaluation.metrics.total_return:+.3f}", f"{p.evaluation.metrics.sharpe:.2f}",
                             f"{p.evaluation.metrics.turnover:.3f}"])
                speed.append([market, p.agent, args.algo, args.timesteps, f"{p.train_seconds:.1f}"])
            print(f"{market}: train {result.train_start}..{result.train_end}, "
                  f"test {result.test_start}..{result.test_end}")
    print(f"\nOut of sample, after 2 bp per unit of turnover ({args.algo}, {args.timesteps:,} steps per agent, "
          f"seed {args.seed})")
    print_table(["market", "agent", "specialty", "agent", "buy&hold", "beats", "total ret", "Sharpe", "turnover"], rows)
    print("\nTraining wall time per agent (model.learn only; 2-core CPU, torch threads = 1)")
    secs = sorted(float(r[4]) for r in speed)
    median = secs[len(secs) // 2]
    if args.baseline:
        base = _baseline_seconds(args.algo, args.timesteps, args.seed)
        for r in speed:
            r.append(f"{base / float(r[4]):.2f}x")
        print_table(["market", "agent", "algo", "steps", "seconds", "speed-up vs SB3 defaults, 1 env"], speed)
        print(f"baseline (SB3 defaults, 1 env): {base:.1f} s")
    else:
        print_table(["market", "agent", "algo", "steps", "seconds"], speed)
    print(f"median {median:.1f} s")


if __name__ == "__main__":
    main()
