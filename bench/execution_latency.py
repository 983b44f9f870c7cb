"""Execution decision latency through the server: MC-dropout sizing and timing, p50 / p95 / p99.

POST /v1/execution/plan on a real uvicorn server (child process, loopback) for one decision
with market conditions from 300 bars, per decision type (entry 50 samples, exit 30,
rebalance 20: the server defaults), sequential calls and 8 concurrent clients; beside the
same sampling pass in process (no HTTP), measured in the same run. Target: p99 under 100 ms.
Run: ``python bench/execution_latency.py [--calls 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _serving import load, seed_models
from _table import pct, print_table

from quantcrew.crew.server_process import LocalServer
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.services.execution import net as xnet
from quantcrew.ml_server.services.execution.summary import summarize

_SAMPLES = {"entry": 50, "exit": 30, "rebalance": 20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="qc-bench-exec-"))
    _, exec_id = seed_models(home)
    bars = load_symbol("SP500").tail(300)
    payload = to_payload_dict(bars)
    rows: list[list[object]] = []
    net = xnet.build_execution_net(xnet.ExecutionConfig(), seed=0)
    x = np.zeros((1, xnet.ExecutionConfig().n_inputs), dtype=np.float32)
    env = {"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__LOG_LEVEL": "warning"}
    with LocalServer(env=env) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        for decision, samples in _SAMPLES.items():
            body = json.dumps({"signals": [{"signal": "up", "confidence": 0.62, "predictive_entropy": 0.8,
                                            "divergence_metric": 0.05, "agreement_score": 0.75}],
                               "data": payload, "decision_type": decision, "model_id": exec_id}).encode()
            for _ in range(10):
                http.post("/v1/execution/plan", content=body, headers={"content-type": "application/json"})
            lat, local = [], []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                r = http.post("/v1/execution/plan", content=body, headers={"content-type": "application/json"})
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
                t0 = time.perf_counter()
                summarize(xnet.sample_plans(net, x, samples).size)
                local.append((time.perf_counter() - t0) * 1000)
            rows.append([decision, samples, "server, sequential", pct(lat, 50), pct(lat, 95), pct(lat, 99)])
            rows.append([decision, samples, "in-process sampling", pct(local, 50), pct(local, 95), pct(local, 99)])
        body = json.dumps({"signals": [{"signal": "up", "confidence": 0.62}], "data": payload,
                           "decision_type": "entry", "model_id": exec_id}).encode()
        lat8, errors, wall = asyncio.run(load(server.url, "/v1/execution/plan", [body], 8, args.seconds))
        rows.append(["entry", 50, f"server, 8 clients ({len(lat8) / wall:.0f} req/s, {errors} errors)",
                     pct(lat8, 50), pct(lat8, 95), pct(lat8, 99)])
    print(f"POST /v1/execution/plan, one decision with 300 bars of market data, {args.calls} calls per row (ms); "
          "target p99 < 100 ms")
    print_table(["decision", "samples", "path", "p50_ms", "p95_ms", "p99_ms"], rows)


if __name__ == "__main__":
    main()
