"""Out-of-sample calibration: the ensemble vs 30-sample MC dropout on the same architectures.

Runs the server's own walk-forward training job in process (the code behind
``POST /v1/ensemble/train``) on:

- the real S&P 500 series the ``arch`` package ships: test span 2013-2018, every fold
  predicted by models trained only on earlier bars (expanding windows, purged);
- synthetic regime-switching markets (known regimes, 5,000 bars, the last 30% tested).

For each market it prints ECE (15 bins), Brier score, NLL and accuracy of the ensemble
(members temperature-scaled and mixed) and of MC dropout (member 0 of each architecture,
30 dropout samples, its own temperature), combined and per architecture, and the verdict on
the target: ensemble ECE no worse than MC dropout's.
Run: ``python bench/ensemble_calibration.py [--epochs 30] [--folds 4] [--synthetic-seeds 0,1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _table import print_table

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.jobs import JobContext
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest, EnsembleTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.ensemble.training import prepare_plan, train_ensemble


def _run(bars: OHLCV, args: argparse.Namespace, test_start: str | None, home: Path) -> EnsembleTrainResult:
    req = EnsembleTrainRequest.model_validate({
        "data": to_payload_dict(bars), "symbol": bars.symbol, "test_start": test_start, "folds": args.folds,
        "epochs": args.epochs, "members": args.members, "mc_samples": args.samples, "horizon": args.horizon,
        "execution": False, "seed": args.seed,
    })
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    deployments = DeploymentStore(home / "registry.db")
    try:
        plan = prepare_plan(req, bars_from_payload(req.data), device=args.device, compute_threads=args.threads)
        raw: dict[str, Any] = train_ensemble(plan, registry, deployments, JobContext("bench"))
    finally:
        deployments.close()
        registry.close()
    return EnsembleTrainResult.model_validate(raw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--synthetic-seeds", default="0,1")
    parser.add_argument("--skip-sp500", action="store_true")
    args = parser.parse_args()
    markets: list[tuple[str, OHLCV, str | None]] = []
    if not args.skip_sp500:
        sp = load_symbol("SP500")
        markets.append(("S&P 500, test 2013-2018", sp.between(None, "2018-12-31"), "2013-01-01"))
    for s in (int(v) for v in args.synthetic_seeds.split(",") if v):
        markets.append((f"synthetic regimes seed {s}", generate_regime_market(5000, seed=s).bars, None))
    rows, verdicts = [], []
    for label, bars, test_start in markets:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="qc-bench-cal-") as tmp:
            result = _run(bars, args, test_start, Path(tmp))
        took = time.perf_counter() - t0
        by = {r.method: r for r in result.out_of_sample}
        for r in result.out_of_sample:
            rows.append([label, r.method, r.n, r.accuracy, r.ece, r.brier, r.nll])
        ens, mc = by["ensemble"], by["mc_dropout"]
        balance = ", ".join(f"{k} {v:.0%}" for k, v in result.class_balance.items())
        verdicts.append(f"{label}: ensemble ECE {ens.ece:.4f} vs MC dropout {mc.ece:.4f} -> "
                        f"{'MET' if ens.ece <= mc.ece else 'MISSED'} (ratio {ens.ece / max(mc.ece, 1e-12):.2f}); "
                        f"Brier {ens.brier:.4f} vs {mc.brier:.4f}; NLL {ens.nll:.4f} vs {mc.nll:.4f}; "
                        f"labels {balance}; trained in {took:.0f} s")
    print(f"\nWalk-forward out of sample, {args.folds} folds, {args.members} members per architecture, MC dropout "
          f"{args.samples} samples, horizon {args.horizon} bars, ECE over 15 bins")
    print_table(["market", "method", "rows", "accuracy", "ECE", "Brier", "NLL"], rows)
    print()
    for v in verdicts:
        print(v)


if __name__ == "__main__":
    main()
