"""What the prediction log costs an ensemble prediction: p50 / p95 / p99 with the log on and off.

Two real uvicorn servers (``quantcrew-server`` in child processes) run side by side on loopback,
each with its own home and the same ensemble (random weights, LSTM + Transformer, 4 members,
window 32: :mod:`_serving`), deployed as ``full``. They differ only in
``QUANTCREW_MONITOR__PREDICTION_LOG`` (true / false). Rounds are interleaved (off, on, on, off,
...) so that drift of the machine (thermal, other processes) falls on both alike; each round
sends ``POST /v1/ensemble/predict`` (one window of engineered features) from ``clients``
keep-alive connections for ``seconds``.

Target (issue 17): the log adds under 5 % or 0.2 ms to p50 and p95, whichever is larger.
At the end, the "on" server's log is read back: every answered request must have one record.

On a shared machine the latency of a whole request swings by more than the log can cost, so a
second table measures the cost itself, in this process: the time the request thread spends
logging one ensemble prediction (building the record and queueing it: the one line a predict
adds), and the writer thread's time per record (features serialised, batch written), which is
spent off the request path but on the same CPU.

Run: ``python bench/prediction_log_overhead.py [--rounds 6 --seconds 4 --clients 1,8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _serving import features_body, load, seed_models
from _table import pct, print_table

from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.ensemble import service
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog


def _env(home: Path, on: bool) -> dict[str, str]:
    return {"QUANTCREW_HOME": str(home), "QUANTCREW_MONITOR__PREDICTION_LOG": str(on).lower(),
            "QUANTCREW_SERVER__LOG_LEVEL": "warning", "QUANTCREW_SERVER__PRELOAD": "true"}


def _logged(home: Path) -> int:
    with sqlite3.connect(home / "registry.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


def _dropped(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    line = next((x for x in text.splitlines() if x.startswith("quantcrew_predictions_dropped_total")), "0 0")
    return float(line.split()[-1])


def _in_process(home: Path, calls: int) -> list[list[object]]:
    """Request-thread and writer-thread cost of logging one real ensemble prediction, in microseconds."""
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    deployments = DeploymentStore(home / "registry.db")
    log = PredictionLog(home / "registry.db", flush_ms=60_000.0, queue_max=calls + 10)
    try:
        req = EnsemblePredictRequest.model_validate({**features_body(np.random.default_rng(3)), "symbol": "BENCH"})
        resolved = service.resolve(req, registry, deployments)
        model, info = service.load(registry, resolved.model_id, "cpu")
        prepared = service.prepare(req, model, max_request_batch=64)
        reply = service.finish(req, model, info, resolved, prepared, model.batch_logits([prepared.windows])[0],
                               samples=None)
        request_us = []
        for _ in range(calls):
            t0 = time.perf_counter()
            capture.ensemble(log, req, info, model, prepared, reply, shadow=False)
            request_us.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        assert log.flush(timeout=300)
        writer_us = (time.perf_counter() - t0) * 1e6 / calls
    finally:
        log.close()
        deployments.close()
        registry.close()
    return [["request thread (record + queue)", calls, pct(request_us, 50), pct(request_us, 95), pct(request_us, 99)],
            ["writer thread, per record", calls, writer_us, "", ""]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6, help="Rounds per server and client count (interleaved).")
    parser.add_argument("--seconds", type=float, default=4.0, help="Seconds of load per round.")
    parser.add_argument("--clients", default="1,8", help="Concurrent connections, comma-separated.")
    parser.add_argument("--calls", type=int, default=20_000, help="Records logged in the in-process table.")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    rng = np.random.default_rng(0)
    bodies = [json.dumps(features_body(rng)).encode() for _ in range(64)]
    with tempfile.TemporaryDirectory() as tmp:
        homes = {on: Path(tmp) / ("on" if on else "off") for on in (False, True)}
        for home in homes.values():
            seed_models(home)
        with LocalServer(env=_env(homes[False], False)) as off, LocalServer(env=_env(homes[True], True)) as on:
            servers = {False: off, True: on}
            sent = {False: 0, True: 0}
            rows: list[list[object]] = []
            for n in clients:
                lat: dict[bool, list[float]] = {False: [], True: []}
                for k in range(args.rounds):
                    for side in ((False, True) if k % 2 == 0 else (True, False)):
                        got, errors, _ = asyncio.run(load(servers[side].url, "/v1/ensemble/predict", bodies, n,
                                                          args.seconds))
                        assert errors == 0, f"{errors} failed requests"
                        lat[side] += got
                        sent[side] += len(got) + 1  # the warm-up request too
                for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
                    a, b = pct(lat[False], q), pct(lat[True], q)
                    limit = max(0.05 * a, 0.2)
                    verdict = "-" if q == 99 else ("ok" if b - a < limit else "MISSED")
                    rows.append([n, name, len(lat[False]), len(lat[True]), a, b, b - a, 100 * (b - a) / a,
                                 limit, verdict])
            dropped = _dropped(on.url)
        logged = _logged(homes[True])
        cost = _in_process(homes[False], args.calls)
    print(f"POST /v1/ensemble/predict through uvicorn, log off vs on (two servers, {args.rounds} interleaved rounds "
          f"of {args.seconds:g} s per side and client count); times in ms")
    print_table(["clients", "pct", "n_off", "n_on", "off_ms", "on_ms", "overhead_ms", "overhead_%", "target_ms",
                 "verdict"], rows)
    print(f"\nthe 'on' server answered {sent[True]} predictions and logged {logged} ({dropped:g} dropped)")
    print("\nthe log's own cost per ensemble prediction, in this process; microseconds")
    print_table(["where", "records", "p50_us", "p95_us", "p99_us"], cost)


if __name__ == "__main__":
    main()
