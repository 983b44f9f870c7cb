"""Shared by the serving benches: a registry with an ensemble and an execution network, and a load generator.

The models carry random weights (serving speed does not depend on what they learned) and are
written the way the training job writes them: state dicts in the registry, the ensemble
deployed as ``full`` under the name ``ensemble-BENCH``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES
from quantcrew.ml_server.services.ensemble.model import EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import NetConfig, build_net
from quantcrew.ml_server.services.execution import inputs as xin
from quantcrew.ml_server.services.execution import net as xnet

NAME = "ensemble-BENCH"
WINDOW = 32


def seed_models(home: Path, *, members: int = 4) -> tuple[str, str]:
    """Write one ensemble (LSTM + Transformer, ``members`` each) and one execution network; their ids."""
    registry = ModelRegistry(home / "registry.db", home / "artifacts")
    deployments = DeploymentStore(home / "registry.db")
    try:
        configs = {a: NetConfig(arch=a, members=members, window=WINDOW, hidden=32) for a in ("lstm", "transformer")}
        nets = {a: build_net(c, seed=i) for i, (a, c) in enumerate(configs.items())}
        f = len(FEATURE_NAMES)
        spec = EnsembleSpec(configs=configs, temperatures={a: 1.0 for a in configs},
                            mc_temperatures={a: 1.0 for a in configs}, weights={a: 0.5 for a in configs},
                            scaler_mean=(0.0,) * f, scaler_std=(1.0,) * f, feature_names=FEATURE_NAMES,
                            window=WINDOW, horizon=5, up_threshold=0.005, down_threshold=0.005, symbol="BENCH")
        info = registry.save(family="ensemble", name=NAME, method="lstm+transformer", obj=pack_state(nets),
                             fmt="torch", metadata=spec.to_metadata())
        deployments.set(model_id=info.model_id, name=info.name, version=info.version, stage="full")
        config = xnet.ExecutionConfig()
        d = config.n_inputs
        scaler = xin.InputScaler(mean=np.zeros(d), std=np.ones(d))
        exec_info = registry.save(
            family="execution", name="execution-BENCH", method="mc_dropout_mlp",
            obj=xnet.execution_state(xnet.build_execution_net(config, seed=0)), fmt="torch",
            metadata={"config": config.to_dict(), "scaler": scaler.to_dict(), "symbol": "BENCH"})
        return info.model_id, exec_info.model_id
    finally:
        deployments.close()
        registry.close()


def features_body(rng: np.random.Generator) -> dict[str, Any]:
    """A predict request carrying one window of engineered features."""
    return {"features": {"columns": list(FEATURE_NAMES), "values": rng.normal(size=(WINDOW, len(FEATURE_NAMES)))
                         .round(4).tolist()}, "name": NAME, "include_rl": False}


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str,
                body: bytes) -> int:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(url: str, path: str, bodies: list[bytes], clients: int,
               seconds: float) -> tuple[list[float], int, float]:
    """``clients`` concurrent keep-alive connections POSTing for ``seconds``; (latencies ms, errors, wall s).

    A minimal HTTP/1.1 client on asyncio streams, one connection per client: httpx's pool
    itself collapses past a few dozen concurrent connections on this 2-core machine (GET
    /health: about 900 req/s at 8 clients, 115 at 64), which would measure the load
    generator, not the server.
    """
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    conns = [await asyncio.open_connection(host, port) for _ in range(clients)]
    for r, w in conns[:1]:  # warm-up: loads the model, starts the batcher
        await _post(r, w, host, path, bodies[0])

    async def worker(k: int) -> None:
        nonlocal errors
        reader, writer = conns[k]
        i = k
        while time.perf_counter() < stop:
            body = bodies[i % len(bodies)]
            i += clients
            t0 = time.perf_counter()
            status = await _post(reader, writer, host, path, body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    wall = time.perf_counter() - start
    for _, w in conns:
        w.close()
    return latencies, errors, wall
