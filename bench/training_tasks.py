"""Training pieces as Ray tasks vs in turn: an RL search (seeds x configurations) and an ensemble's folds.

The same job is run with its pieces in turn in this process and as tasks of a local Ray cluster
(``ray.init(num_cpus=N)``, each task reserving one CPU and using one compute thread), in
interleaved rounds; the job's wall time is compared, and the trained models are checked to be
the same (the chosen RL policy's SHA-256; the ensemble's out-of-sample log loss).

On this project's 2-core machine the ceiling is 2x; a replica of a Ray Serve deployment on a
larger node (or a cluster) runs as many pieces at once as it has CPUs free.

Run: .venv/bin/python bench/training_tasks.py [--rounds 3] [--cpus 2] [--runs 4] [--folds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _table import print_table

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.fanout import RAY, TaskPool
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest, EnsembleTrainResult
from quantcrew.ml_server.schemas.rl import RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload


class _Ctx:
    job_id = "bench"
    cancelled = False

    def report(self, **_kw: Any) -> None:
        return None


def _registry(root: Path) -> ModelRegistry:
    return ModelRegistry(root / "registry.db", root / "artifacts")


def rl_job(payload: OHLCVPayload, runs: int, timesteps: int) -> Callable[[TaskPool, Path], tuple[str, str]]:
    from quantcrew.ml_server.services.rl import market, training

    req = RLTrainRequest(data=payload, agents=["aggressive"], algorithm="a2c", timesteps=timesteps,
                         regime_features=False, n_envs=2, seed=7, seeds=runs, grid={"reward_scale": [1.0]})
    bars = bars_from_payload(req.data)

    def run(pool: TaskPool, root: Path) -> tuple[str, str]:
        registry = _registry(root)
        plan = training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction),
                                     pool=pool)
        result = RLTrainResult.model_validate(training.train_agents(plan, registry, _Ctx()))
        policy = result.policies[0]
        return policy.sha256, registry.get(policy.model_id).metadata["search"]["trained_on"]

    return run


def ensemble_job(payload: OHLCVPayload, folds: int, epochs: int) -> Callable[[TaskPool, Path], tuple[str, str]]:
    from quantcrew.ml_server.services.deployment import DeploymentStore
    from quantcrew.ml_server.services.ensemble import training

    req = EnsembleTrainRequest(data=payload, symbol="SYN", architectures=["lstm"], members=2, hidden=16,
                               epochs=epochs, folds=folds, window=16, seed=5, execution=False, deploy=False)
    bars = bars_from_payload(req.data)

    def run(pool: TaskPool, root: Path) -> tuple[str, str]:
        registry = _registry(root)
        plan = training.prepare_plan(req, bars, device="cpu", compute_threads=1, pool=pool)
        result = EnsembleTrainResult.model_validate(
            training.train_ensemble(plan, registry, DeploymentStore(registry.db_path), _Ctx()))
        return f"{result.out_of_sample[0].nll:.6f}", registry.get(result.model.model_id).metadata["folds_trained_on"]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=4, help="RL runs (seeds) in the search")
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    payload = OHLCVPayload(**to_payload_dict(generate_regime_market(900, seed=3).bars))
    jobs = {f"rl search, {args.runs} runs x {args.timesteps} steps": rl_job(payload, args.runs, args.timesteps),
            f"ensemble, {args.folds} folds x {args.epochs} epochs": ensemble_job(payload, args.folds, args.epochs)}
    pools = {"in turn": TaskPool(), "ray tasks": TaskPool(fan_out=True, num_cpus=1.0)}
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for job_name, job in jobs.items():
                seconds: dict[str, list[float]] = {p: [] for p in pools}
                answers: dict[str, set[str]] = {p: set() for p in pools}
                where: dict[str, set[str]] = {p: set() for p in pools}
                job(pools["in turn"], Path(tmp) / "warm")  # imports and first-call costs out of the figures
                for r in range(args.rounds):
                    for p, pool in pools.items():
                        began = time.perf_counter()
                        answer, ran_on = job(pool, Path(tmp) / f"{job_name[:2]}-{p}-{r}".replace(" ", "_"))
                        seconds[p].append(time.perf_counter() - began)
                        answers[p].add(answer)
                        where[p].add(ran_on)
                base = statistics.median(seconds["in turn"])
                same = answers["in turn"] == answers["ray tasks"] and len(answers["in turn"]) == 1
                for p in pools:
                    med = statistics.median(seconds[p])
                    rows.append([job_name, p, ",".join(sorted(where[p])), med, min(seconds[p]), max(seconds[p]),
                                 f"{base / med:.2f}x", "yes" if same else "NO"])
    finally:
        ray.shutdown()
    print(f"\n{args.rounds} interleaved rounds per side, a local Ray cluster of {args.cpus} CPUs, 1 CPU per task\n")
    print_table(["job", "pieces", "ran on", "median s", "min s", "max s", "speed-up", "same model"], rows)
    if any(r[2] != ("ray" if r[1] == "ray tasks" else "process") for r in rows):
        raise SystemExit(f"a side did not run where it should ({RAY} for ray tasks)")


if __name__ == "__main__":
    main()
