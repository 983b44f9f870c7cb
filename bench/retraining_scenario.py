"""The retraining pipeline end to end on a real server: drift -> job -> shadow -> gate -> promote, then a forced bad
model -> rollback, with the time each step took.

A synthetic market stays in one regime (a calm bull) for ``--bars-a`` bars, then switches to another (a steady
bear) for ``--bars-b`` bars. The scenario, all through the same code as a training schedule's firing
(``quantcrew.crew.retraining.retrain_symbol`` over HTTP):

1. **Seed.** A firing with no champion trains one on the bull bars; its own quality gate decides (when it fails
   it, the bench deploys it by hand and says so: the scenario needs a champion).
2. **Drift.** Bear bars arrive ``--step`` at a time; after each step a firing checks drift on the recent bars.
   Reported: bear bars until the drift verdict first fired, and each retraining it started (cooldown 0 here, so
   a rejected challenger is retried on the next step), with the gate's decision, until one is promoted.
3. **Rollback.** A bad model (trained on the bull bars again: long in a bear market) is pushed through a firing
   whose gate is forced open, so it is promoted as a real challenger would be. The crew's traffic is simulated:
   each new bear bar the deployed ensemble is asked for a signal (``/v1/ensemble/predict``, logged) and the
   realised return of the next bar is posted as its outcome (``/v1/monitor/outcomes``). A firing after every
   ``--check-every`` bars watches the champion's live Sharpe; reported: outcomes until it rolled back.

Usage: ``python bench/retraining_scenario.py [--bars-a 900 --bars-b 400 --step 20 --epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._table import print_table
from quantcrew.config.settings import ClientSettings
from quantcrew.crew.retrain_runner import HttpRetrainServer
from quantcrew.crew.retraining import RetrainPolicy, RetrainReport, RetrainStore, model_name, retrain_symbol
from quantcrew.crew.server_process import LocalServer
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_ar_market
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest
from quantcrew.ml_server.schemas.lineage import StageRequest
from quantcrew.ml_server.schemas.monitor import OutcomeBatch
from quantcrew.tools.client import MLClient, make_client

SYMBOL = "SYNTH"
MOMENTUM = {"mu": 0.0006, "phi": 0.7, "sigma": 0.008}
"""Regime A: calm, and the next bar tends to follow the last (momentum)."""
REVERTING = {"mu": -0.0004, "phi": -0.7, "sigma": 0.020}
"""Regime B: volatile, and the next bar tends to undo the last (mean reversion): a model trained on A is wrong."""


def ar_market(law: Mapping[str, float], n: int, *, seed: int, start: str, price: float) -> OHLCV:
    return generate_ar_market(n, mu=law["mu"], phi=law["phi"], sigma=law["sigma"], seed=seed, start=start,
                              start_price=price, symbol=SYMBOL)


def concat(a: OHLCV, b: OHLCV) -> OHLCV:
    return OHLCV(symbol=a.symbol, timestamps=np.concatenate([a.timestamps, b.timestamps]),
                 open=np.concatenate([a.open, b.open]), high=np.concatenate([a.high, b.high]),
                 low=np.concatenate([a.low, b.low]), close=np.concatenate([a.close, b.close]),
                 volume=np.concatenate([a.volume, b.volume]), meta={})


def next_day(bars: OHLCV) -> str:
    return str(np.datetime64(bars.timestamps[-1], "D") + 1)


class ForcedGate(HttpRetrainServer):
    """The real server, except that every gate opens: a bad model gets through (as shadow, then promoted)."""

    def compare(self, champion_id: str, challenger_id: str, bars: OHLCV, holdout: int) -> dict[str, Any]:
        return {"passed": True, "reason": "gate forced open by the bench"}

    def promote(self, name: str, model_id: str, reason: str) -> None:
        self.client.models_stage(model_id, StageRequest(stage="shadow", reason="bench: forced past its own gate"))
        super().promote(name, model_id, reason)


def step_times(report: RetrainReport) -> dict[str, float]:
    """Seconds between consecutive steps of a firing, keyed by the later step."""
    times = [(e.step, datetime.fromisoformat(e.at)) for e in report.events]
    return {step: (at - times[i][1]).total_seconds() for i, (step, at) in enumerate(times[1:])}


def predict_and_settle(client: MLClient, bars: OHLCV, t: int, n: int) -> int:
    """Ask the deployed ensemble for bar ``t``'s signal, then post the realised return of bar ``t + 1``."""
    window = bars.head(t + 1).tail(min(t + 1, 200))
    reply = client.ensemble_predict(EnsemblePredictRequest.model_validate(
        {"symbol": SYMBOL, "data": to_payload_dict(window), "seed": 0}))
    realised = float(bars.close[t + 1] / bars.close[t] - 1.0)
    as_of = to_payload_dict(window)["timestamps"][-1]
    client.monitor_outcomes(OutcomeBatch.model_validate({"outcomes": [
        {"outcome_id": f"bench:{n}", "subject": SYMBOL, "as_of": as_of, "realised_return": realised}]}))
    return int(reply.position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars-a", type=int, default=900)
    parser.add_argument("--bars-b", type=int, default=400)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift-bars", type=int, default=120, help="Recent bars each drift check sends.")
    parser.add_argument("--verbose", action="store_true", help="Print every firing's steps.")
    parser.add_argument("--train-bars", type=int, default=400, help="Challengers train on this many recent bars.")
    parser.add_argument("--members", type=int, default=1, help="Ensemble members per architecture.")
    parser.add_argument("--hidden", type=int, default=16, help="Ensemble width.")
    args = parser.parse_args()
    train: Mapping[str, Any] = {"epochs": args.epochs, "members": args.members, "folds": 2, "hidden": args.hidden,
                                "horizon": 1, "up_threshold": 0.001, "down_threshold": 0.001}

    bull = ar_market(MOMENTUM, args.bars_a, seed=args.seed, start="2010-01-04", price=100.0)
    bear = ar_market(REVERTING, args.bars_b, seed=args.seed + 1, start=next_day(bull), price=float(bull.close[-1]))
    tail = ar_market(REVERTING, 200, seed=args.seed + 2, start=next_day(bear), price=float(bear.close[-1]))
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        server = LocalServer(env={"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__PRELOAD": "false",
                                  "QUANTCREW_MONITOR__ALERT_INTERVAL_S": "5"},
                             log_path=home / "server.log").start()
        client = make_client(ClientSettings(url=server.url, timeout_s=900.0))
        store = RetrainStore(home / "runs.db")
        try:
            http = HttpRetrainServer(client)
            base = RetrainPolicy(symbols=(SYMBOL,), drift_bars=args.drift_bars, holdout_bars=60, cooldown_s=0.0,
                                 train=train, train_bars=args.train_bars, quality_metric="sharpe", rollback_limit=0.0)

            # 1. seed a champion on the bull bars
            started = time.perf_counter()
            seed = retrain_symbol(http, store, base, SYMBOL, bull)
            seeded: str = seed.outcome
            if seed.outcome != "promoted":
                challenger = next(e.model_id for e in seed.events if e.step == "trained")
                assert challenger is not None
                client.models_stage(challenger, StageRequest(stage="full", reason="bench: seed champion"))
                seeded = f"{seed.outcome}, deployed by hand"
            rows.append(["seed champion on bull bars", seeded, f"{time.perf_counter() - started:.1f}", ""])
            champion = http.champion(model_name(SYMBOL))[0]

            # 2. drift: bear bars arrive step by step
            first_drift: int | None = None
            promoted_at: int | None = None
            retrains = 0
            for k in range(args.step, len(bear) + 1, args.step):
                bars = concat(bull, bear.head(k))
                report = retrain_symbol(http, store, base, SYMBOL, bars)
                if args.verbose:
                    print(k, report.outcome, json.dumps([e.detail for e in report.events], default=str)[:400])
                if any(e.step == "triggered" and e.cause == "drift" for e in report.events):
                    first_drift = k if first_drift is None else first_drift
                    retrains += 1
                    times = step_times(report)
                    gate = next((e.detail for e in report.events if e.step == "gated"), {})
                    rows.append([f"drift firing at +{k} bear bars", report.outcome,
                                 f"train {times.get('trained', 0):.1f} gate {times.get('gated', 0):.1f} "
                                 f"promote {times.get('promoted', times.get('rejected', 0)):.1f}",
                                 str(gate.get("reason", ""))[:90]])
                if report.outcome == "promoted":
                    promoted_at = k
                    break
                if report.failed:
                    rows.append([f"firing at +{k} bear bars", "failed", "", report.events[-1].detail.get("error")])
                    break
            rows.append(["bear bars until the drift verdict fired", first_drift, "", f"step {args.step}"])
            rows.append(["bear bars until a challenger was promoted", promoted_at, "", f"{retrains} retraining(s)"])
            good = http.champion(model_name(SYMBOL))[0]

            # 3. a forced bad model, promoted by a firing whose gate is forced open, then watched
            everything = concat(concat(bull, bear), tail)
            forced = ForcedGate(client)
            bad_policy = RetrainPolicy(symbols=(SYMBOL,), on_drift=False, always=True, holdout_bars=60,
                                       cooldown_s=0.0, train=train)
            started = time.perf_counter()
            bad = retrain_symbol(forced, store, bad_policy, SYMBOL, concat(bull, bull.tail(60)))
            rows.append(["forced bad model (trained on regime A) promoted", bad.outcome,
                         f"{time.perf_counter() - started:.1f}", str(bad.events[-1].detail)[:90]])
            rolled: int | None = None
            t0 = len(bull) + len(bear)
            watch = RetrainPolicy(symbols=(SYMBOL,), on_drift=False, quality_metric="sharpe", rollback_limit=0.0,
                                  cooldown_s=0.0, train=train)
            started = time.perf_counter()
            for settled, t in enumerate(range(t0, len(everything) - 1), start=1):
                predict_and_settle(client, everything, t, settled)
                if settled % args.check_every == 0:
                    report = retrain_symbol(http, store, watch, SYMBOL, everything.head(t + 2))
                    if args.verbose:
                        print("watch", settled, report.outcome, json.dumps(report.events[0].detail, default=str))
                    if report.outcome == "rolled_back":
                        rolled = settled
                        checked = report.events[0].detail
                        rows.append(["rollback of the bad model", "rolled_back",
                                     f"{step_times(report).get('rolled_back', 0):.2f}",
                                     f"live sharpe {checked.get('value'):.2f} over {checked.get('samples')}"])
                        break
            rows.append(["outcomes until the rollback", rolled, f"{time.perf_counter() - started:.1f}",
                         f"checked every {args.check_every}"])
            after = http.champion(model_name(SYMBOL))[0]
            alerts = client.alerts_list().alerts
            rows.append(["champion after rollback is the drift-promoted one", after == good, "",
                         f"seed {champion}, good {good}, now {after}"])
            rows.append(["alerts raised", len(alerts), "",
                         ", ".join(sorted({a.rule for a in alerts}))[:90]])
        finally:
            store.close()
            client.close()
            server.stop()
    print_table(["step", "result", "seconds", "detail"], rows)
    print(json.dumps({"bars_a": args.bars_a, "bars_b": args.bars_b, "step": args.step, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
