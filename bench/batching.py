"""Dynamic batching of ensemble inference: throughput and latency at 1, 8 and 64 concurrent clients, on vs off.

(1) Through a real uvicorn server (``quantcrew-server`` in a child process) on a loopback
port: POST /v1/ensemble/predict with one 32-bar window of features per request (LSTM +
Transformer, 4 members each). The same server settings except ``QUANTCREW_INFERENCE__BATCHING``
(on: gather up to ``max_batch_size`` rows or ``max_wait_ms``; off: one forward pass per
request). The load generator (httpx, asyncio) runs on the same 2 cores as the server.

(2) In process, without HTTP: the same model's forward pass behind a :class:`DynamicBatcher`
with N concurrent asyncio callers, on vs off: the batching gain without the HTTP cost.

(3) Where the time of (1) goes, per request, from the server's own Prometheus metrics read
before and after each cell: the latency the load generator saw; the time inside the app (the
metrics middleware's clock: validation, features, the wait for the device thread or for the batch
to fill, the forward pass, serialisation); of that, the queue wait (from queued to the start of its
forward pass); the rest outside the app (sockets, uvicorn, the event loop's backlog, the load
generator on the same cores); forward passes per second and rows per pass; and the server
process's CPU time per request (from /proc: near 1000 / req_per_s ms means it is CPU-bound).
Run: ``python bench/batching.py [--seconds 8] [--clients 1,8,64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _serving import WINDOW, features_body, load, seed_models
from _table import pct, print_table
from prometheus_client.parser import text_string_to_metric_families

from quantcrew.config.server_lock import running_server
from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.batching import DynamicBatcher
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.ensemble.service import load as load_ensemble

_SUMS = {"server": ("quantcrew_http_request_seconds", {"route": "/v1/ensemble/predict"}),
         "wait": ("quantcrew_inference_batch_wait_seconds", {}),
         "rows": ("quantcrew_inference_batch_size", {})}


def _scrape(url: str, pid: int) -> dict[str, float]:
    """Sums and counts of the histograms in ``_SUMS``, and the server's CPU seconds, now."""
    text = httpx.get(url + "/metrics", timeout=30.0).text
    out = dict.fromkeys([f"{k}_{part}" for k in _SUMS for part in ("sum", "count")], 0.0)
    for family in text_string_to_metric_families(text):
        for key, (name, labels) in _SUMS.items():
            if family.name != name:
                continue
            for sample in family.samples:
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    if sample.name == name + "_sum":
                        out[f"{key}_sum"] += sample.value
                    elif sample.name == name + "_count":
                        out[f"{key}_count"] += sample.value
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _split(before: dict[str, float], after: dict[str, float], lat: list[float], wall: float) -> list[object]:
    """Where one cell's time went: the columns of table (3)."""
    d = {k: after[k] - before[k] for k in after}
    n = max(d["server_count"], 1.0)
    client_ms = statistics.fmean(lat) if lat else 0.0
    server_ms = d["server_sum"] / n * 1000
    wait_ms = d["wait_sum"] / max(d["wait_count"], 1.0) * 1000
    return [client_ms, server_ms, wait_ms, server_ms - wait_ms, client_ms - server_ms, d["rows_count"] / wall,
            d["rows_sum"] / max(d["rows_count"], 1.0), d["cpu_s"] / n * 1000]


def _server_rows(home: Path, clients: list[int], seconds: float, wait_ms: float,
                 splits: list[list[object]] | None = None) -> list[list[object]]:
    rng = np.random.default_rng(0)
    bodies = [json.dumps(features_body(rng)).encode() for _ in range(64)]
    rows: list[list[object]] = []
    base: dict[int, float] = {}
    for batching in (False, True):
        env = {"QUANTCREW_HOME": str(home), "QUANTCREW_INFERENCE__BATCHING": str(batching).lower(),
               "QUANTCREW_INFERENCE__MAX_WAIT_MS": str(wait_ms), "QUANTCREW_SERVER__LOG_LEVEL": "warning"}
        with LocalServer(env=env) as server:
            running = running_server(home)
            assert running is not None
            for n in clients:
                before = _scrape(server.url, running.pid)
                lat, errors, wall = asyncio.run(load(server.url, "/v1/ensemble/predict", bodies, n, seconds))
                if splits is not None:
                    splits.append(["on" if batching else "off", n,
                                   *_split(before, _scrape(server.url, running.pid), lat, wall)])
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
    splits: list[list[object]] = []
    load_before = os.getloadavg()[0]
    print_table(["batching", "clients", "requests", "errors", "req_per_s", "p50_ms", "p95_ms", "p99_ms",
                 "vs off"], _server_rows(home, clients, args.seconds, args.wait_ms, splits))
    print(f"\n(3) where the time of (1) goes, means per request in ms (load average {load_before:.2f} before (1), "
          f"{os.getloadavg()[0]:.2f} after, {os.cpu_count()} CPUs)")
    print_table(["batching", "clients", "client_ms", "in_app_ms", "queue_wait_ms", "app_rest_ms", "outside_app_ms",
                 "passes_per_s", "rows_per_pass", "server_cpu_ms"], splits)
    print(f"\n(2) in process: DynamicBatcher around the same forward pass, {args.seconds:.0f} s per cell")
    print_table(["batching", "callers", "calls", "calls_per_s", "p50_ms", "p95_ms", "largest_batch", "vs off"],
                _in_process_rows(home, clients, args.seconds, args.wait_ms))


if __name__ == "__main__":
    main()
