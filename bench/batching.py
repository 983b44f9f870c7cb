"""Dynamic batching of ensemble inference: throughput and latency at 1, 8 and 64 concurrent clients, on vs off.

(1) Through a real uvicorn server (``quantcrew-server`` in a child process) on a loopback
port: POST /v1/ensemble/predict with one 32-bar window of features per request (LSTM +
Transformer, 4 members each). The same server settings except ``QUANTCREW_INFERENCE__BATCHING``
(on: gather up to ``max_batch_size`` rows or ``max_wait_ms``; off: one forward pass per
request). The load generator (httpx, asyncio) runs on the same 2 cores as the server.

(2) In process, without HTTP: the same model's forward pass behind a :class:`DynamicBatcher`
with N concurrent asyncio callers, on vs off: the batching gain without the HTTP cost.
Run: ``python bench/batching.py [--seconds 8] [--clients 1,8,64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _serving import WINDOW, features_body, load, seed_models
from _table import pct, print_table

from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.batching import DynamicBatcher
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.ensemble.service import load as load_ensemble


def _server_rows(home: Path, clients: list[int], seconds: float, wait_ms: float) -> list[list[object]]:
    rng = np.random.default_rng(0)
    bodies = [json.dumps(features_body(rng)).encode() for _ in range(64)]
    rows: list[list[object]] = []
    base: dict[int, float] = {}
    for batching in (False, True):
        env = {"QUANTCREW_HOME": str(home), "QUANTCREW_INFERENCE__BATCHING": str(batching).lower(),
               "QUANTCREW_INFERENCE__MAX_WAIT_MS": str(wait_ms), "QUANTCREW_SERVER__LOG_LEVEL": "warning"}
        with LocalServer(env=env) as server:
            for n in clients:
                lat, errors, wall = asyncio.run(load(server.url, "/v1/ensemble/predict", bodies, n, seconds))
                rps = len(lat) / wall
                if not batching:
                    base[n] = rps
                rows.append(["on" if batching else "off", n, len(lat), errors, rps, pct(lat, 50), pct(lat, 95),
                             pct(lat, 99), f"{rps / base[n]:.2f}x"])
    return rows


def _in_process_rows(home: Path, clients: list[int], seconds: float, wait_ms: float) -> list[list[object]]:
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    model_id = registry.list(family="ensemble")[0].model_id
    model, _ = load_ensemble(registry, model_id, "cpu")
    rng = np.random.default_rng(1)
    windows = [rng.normal(size=(1, WINDOW, 16)).astype(np.float32) for _ in range(64)]
    rows: list[list[object]] = []
    base: dict[int, float] = {}

    async def run(n: int, enabled: bool) -> tuple[list[float], float, int]:
        batcher: DynamicBatcher[np.ndarray, object] = DynamicBatcher(
            model.batch_logits, name="bench", max_batch_size=64, max_wait_s=wait_ms / 1000, enabled=enabled,
            size_of=len)
        lat: list[float] = []
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await batcher.submit(windows[i % 64])
                lat.append((time.perf_counter() - t0) * 1000)
                i += n

        await batcher.submit(windows[0])
        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(n)))
        wall = time.perf_counter() - start
        largest = batcher.stats.largest_batch
        await batcher.aclose()
        return lat, wall, largest

    for enabled in (False, True):
        for n in clients:
            lat, wall, largest = asyncio.run(run(n, enabled))
            rps = len(lat) / wall
            if not enabled:
                base[n] = rps
            rows.append(["on" if enabled else "off", n, len(lat), rps, pct(lat, 50), pct(lat, 95), largest,
                         f"{rps / base[n]:.2f}x"])
    registry.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    home = Path(tempfile.mkdtemp(prefix="qc-bench-batch-"))
    seed_models(home)
    print(f"(1) through uvicorn, POST /v1/ensemble/predict (features payload, 1 window of {WINDOW} bars), "
          f"{args.seconds:.0f} s per cell, max_batch_size 64, max_wait {args.wait_ms} ms; ms / requests per s")
    print_table(["batching", "clients", "requests", "errors", "req_per_s", "p50_ms", "p95_ms", "p99_ms",
                 "vs off"], _server_rows(home, clients, args.seconds, args.wait_ms))
    print(f"\n(2) in process: DynamicBatcher around the same forward pass, {args.seconds:.0f} s per cell")
    print_table(["batching", "callers", "calls", "calls_per_s", "p50_ms", "p95_ms", "largest_batch", "vs off"],
                _in_process_rows(home, clients, args.seconds, args.wait_ms))


if __name__ == "__main__":
    main()
