"""Ray Serve with 1 and 2 replicas vs plain uvicorn: throughput and p50 / p99 on a light and an ensemble predict.

Three servers, each a real process tree started here on a loopback port, each in a throwaway
home holding the same models, with the same settings (no API key, preload off, prediction log
on as shipped):

* ``uvicorn``: ``python -m quantcrew.ml_server`` (one process, the default);
* ``ray-1``: ``python -m quantcrew.ml_server --ray --replicas 1`` (a local Ray cluster: GCS,
  raylet, Serve's controller and HTTP proxy, one replica);
* ``ray-2``: the same with ``--replicas 2``.

Two calls, driven by wrk with ``--connections`` keep-alive connections:

* ``light``: ``POST /v1/cluster/predict`` of one row on a KMeans fitted through the server
  (3 clusters, 4 columns, 200 rows), as ``bench/light_throughput.py``;
* ``ensemble``: ``POST /v1/ensemble/predict`` of one 32-bar window of features on the
  LSTM + Transformer ensemble of ``bench/_serving.py`` (4 members each, random weights),
  dynamic batching on as shipped.

All three servers are up for the whole run and the measurements are interleaved (each side,
each call, then again ``--runs`` times) so that load from elsewhere on the machine falls on all
of them alike; the idle Ray clusters' own background work (GCS, raylet, agents) runs beside
every measurement, uvicorn's included. The summary takes medians. Errors are wrk's socket
errors plus non-2xx answers. ``cpu_ms_per_req`` is the CPU time of the server's whole process
tree (for Ray: the driver, the cluster's processes, the proxy and the replicas) over the run,
per request. ``idle_cpu`` is what the same tree burns with no request in flight (a share of one
core, measured over ``--idle`` seconds before the runs). The 1-minute load average is printed
beside each run.

Target (issue 18): 0 errors; the figures say what replicas cost and gain on this machine.

Needs wrk (``apt-get install wrk``) and the ``ray`` extra. Run:
``.venv/bin/python bench/ray_serve.py [--seconds 10] [--connections 32] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _serving import features_body, seed_models
from _table import print_table
from light_throughput import parse_wrk

from quantcrew.crew.server_process import free_port

ROOT = Path(__file__).resolve().parent.parent
CALLS = {"light": "/v1/cluster/predict", "ensemble": "/v1/ensemble/predict"}
COLUMNS = ["a", "b", "c", "d"]
READY_TIMEOUT_S = 300.0


@dataclass
class Side:
    """One server under test, its request bodies and measured runs."""

    name: str
    replicas: int  # 0: plain uvicorn
    home: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    bodies: dict[str, bytes] = field(default_factory=dict)
    runs: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {c: [] for c in CALLS})
    start_s: float = 0.0
    idle_cpu: float = 0.0  # CPU seconds per second of the idle process tree

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start(side: Side) -> None:
    cmd = [sys.executable, "-m", "quantcrew.ml_server", "--host", "127.0.0.1", "--port", str(side.port),
           "--log-level", "warning"]
    if side.replicas:
        cmd += ["--ray", "--replicas", str(side.replicas)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTCREW_", "RAY_"))}
    env.update(QUANTCREW_HOME=str(side.home), QUANTCREW_SERVER__PRELOAD="false",
               QUANTCREW_RAY__AUTH_TOKEN=secrets.token_hex(16))  # Ray's token auth on, nothing written to ~/.ray
    began = time.perf_counter()
    with open(side.log, "wb") as out:
        side.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=side.url, timeout=5.0) as http:
        while True:
            if side.proc.poll() is not None:
                raise SystemExit(f"{side.name} exited with {side.proc.returncode}; see {side.log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{side.name} not up in {READY_TIMEOUT_S:.0f} s; see {side.log}")
            up = (f"on Ray Serve at {side.url}" in side.log.read_text(errors="replace")) if side.replicas else True
            try:
                if up and http.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    side.start_s = time.perf_counter() - began


def _stop(side: Side) -> None:
    if side.proc is None or side.proc.poll() is not None:
        return
    side.proc.send_signal(signal.SIGTERM)
    try:
        side.proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(side.proc.pid, signal.SIGKILL)
        side.proc.wait(10)


def _prepare(side: Side) -> None:
    """Fit the KMeans on ``side`` (same data and seed everywhere); the bodies of both calls."""
    rng = np.random.default_rng(0)
    table = {"columns": COLUMNS, "values": rng.normal(size=(200, len(COLUMNS))).round(4).tolist()}
    reply = httpx.post(side.url + "/v1/cluster/fit", json={"data": table, "method": "kmeans", "n_clusters": 3},
                       timeout=300.0)
    reply.raise_for_status()
    row = {"columns": COLUMNS, "values": [[0.1, -0.2, 0.3, 0.05]]}
    side.bodies["light"] = json.dumps({"model_id": reply.json()["model"]["model_id"], "data": row}).encode()
    side.bodies["ensemble"] = json.dumps(features_body(np.random.default_rng(1))).encode()
    for call, path in CALLS.items():  # loads each model on the replica(s) that answer
        for _ in range(4 * max(side.replicas, 1)):
            httpx.post(side.url + path, content=side.bodies[call], headers={"content-type": "application/json"},
                       timeout=300.0).raise_for_status()


def _replicas_seen(side: Side, n: int = 40) -> int:
    with httpx.Client(base_url=side.url, timeout=30.0) as http:
        seen = Counter(http.get("/health").headers.get("x-quantcrew-replica", "-") for _ in range(n))
    return len(seen)


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every live descendant (all their threads)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    return sum(cpu.get(p, 0.0) for p in tree)


def _lua(body: bytes, path: Path) -> Path:
    text = body.decode()
    assert "]==]" not in text
    path.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{text}]==]\n")
    return path


def _wrk(side: Side, call: str, lua: Path, *, seconds: float, connections: int, threads: int) -> dict[str, float]:
    assert side.proc is not None
    load, cpu = os.getloadavg()[0], _tree_cpu_s(side.proc.pid)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
           "-s", str(lua), side.url + CALLS[call]]
    result = parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    result["cpu_ms"] = (_tree_cpu_s(side.proc.pid) - cpu) * 1000 / max(result["requests"], 1)
    result["load1"] = (load + os.getloadavg()[0]) / 2
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive clients")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per side and call (interleaved)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk per side and call first")
    parser.add_argument("--sides", default="uvicorn,ray-1,ray-2", help="which of uvicorn, ray-1, ray-2")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds each idle server's CPU is measured")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("Ray is not installed: pip install 'quantcrew[ray]'") from None

    workdir = Path(tempfile.mkdtemp(prefix="qc-bench-ray-"))
    sides: list[Side] = []
    for name in args.sides.split(","):
        replicas = 0 if name == "uvicorn" else int(name.removeprefix("ray-"))
        home = workdir / name
        seed_models(home)  # the ensemble (and an execution net), written as the training job writes them
        sides.append(Side(name, replicas, home, free_port(), workdir / f"{name}.log"))
    try:
        for side in sides:  # one at a time: a start is CPU-bound
            _start(side)
            _prepare(side)
            print(f"{side.name}: up in {side.start_s:.1f} s, {_replicas_seen(side)} replica(s) answering",
                  flush=True)
        for side in sides:  # what each tree burns with no request in flight (Ray: its processes' own work)
            assert side.proc is not None
            before = _tree_cpu_s(side.proc.pid)
            time.sleep(args.idle)
            side.idle_cpu = (_tree_cpu_s(side.proc.pid) - before) / args.idle
        luas = {(s.name, c): _lua(s.bodies[c], workdir / f"{s.name}-{c}.lua") for s in sides for c in CALLS}
        for side in sides:
            for call in CALLS:
                _wrk(side, call, luas[side.name, call], seconds=args.warmup, connections=args.connections,
                     threads=args.threads)
        for _ in range(args.runs):
            for side in sides:
                for call in CALLS:
                    side.runs[call].append(_wrk(side, call, luas[side.name, call], seconds=args.seconds,
                                                connections=args.connections, threads=args.threads))
    finally:
        for side in sides:
            _stop(side)

    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s, {args.runs} interleaved runs per side "
          f"and call, {os.cpu_count()} CPUs; light = POST {CALLS['light']} (KMeans, 1 row), ensemble = POST "
          f"{CALLS['ensemble']} (LSTM + Transformer, 1 window)")
    print_table(["side", "call", "run", "req_per_s", "p50_ms", "p99_ms", "requests", "errors", "cpu_ms_per_req",
                 "load1"],
                [[s.name, c, i + 1, r["rps"], r["p50_ms"], r["p99_ms"], int(r["requests"]), int(r["errors"]),
                  r["cpu_ms"], f"{r['load1']:.2f}"]
                 for i in range(args.runs) for s in sides for c in CALLS for r in [s.runs[c][i]]])
    print()
    rows: list[list[Any]] = []
    for call in CALLS:
        base = next((s for s in sides if s.replicas == 0), None)
        base_rps = statistics.median(r["rps"] for r in base.runs[call]) if base is not None else None
        for side in sides:
            runs = side.runs[call]
            rps = statistics.median(r["rps"] for r in runs)
            rows.append([call, side.name, rps, statistics.median(r["p50_ms"] for r in runs),
                         statistics.median(r["p99_ms"] for r in runs), int(sum(r["errors"] for r in runs)),
                         statistics.median(r["cpu_ms"] for r in runs),
                         "" if base_rps is None else f"{rps / base_rps:.2f}x", f"{side.start_s:.0f}",
                         f"{side.idle_cpu * 100:.0f}%"])
    print("medians (target: 0 errors)")
    print_table(["call", "side", "req_per_s", "p50_ms", "p99_ms", "errors", "cpu_ms_per_req", "vs uvicorn",
                 "start_s", "idle_cpu"], rows)


if __name__ == "__main__":
    main()
