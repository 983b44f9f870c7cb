"""Light-path throughput: wrk at 64 connections on a fitted KMeans predict of one row, our server vs a bare app.

Every side is a real uvicorn process on a loopback port, started here:

* ``ours``: ``python -m quantcrew.ml_server`` (one worker, uvicorn's default loop and HTTP
  implementation, access log off, no API key, preload off: it only slows the start), in a
  throwaway home. A KMeans (3 clusters, 4 columns, 200 rows) is fitted through
  ``POST /v1/cluster/fit``; the measured call is ``POST /v1/cluster/predict`` of one row.
* ``bare``: ``bench/_bare_app.py``, a one-route FastAPI app running the very pipeline fitted
  above (pickled from our registry) behind a plain pydantic model: a ``def`` route served by
  ``uvicorn.run``'s defaults (uvloop), as a newcomer would write it. ``OMP_NUM_THREADS`` and
  friends are 1 there as the server sets them (``server.compute_threads``), so the predict itself
  costs the same on every side. The targets are judged against it.
* ``bare-inline``: the same app with an ``async def`` route on asyncio's loop, as our server runs
  a light predict (``quantcrew.ml_server.offload``, ``server.event_loop``): like against like, it
  prices what our server does besides the predict (middleware, validation, the registry, the
  prediction log). Its ratio is printed beside the target's.
* ``ours-nolog`` (``--prediction-log both``): our server again with the prediction log off
  (``--prediction-log off`` turns it off on ``ours`` instead; it is on by default, as shipped).
* ``ours-by-name`` (``--by-name``): the same server process as ``ours`` (and likewise for every
  server of ours), the model staged ``full`` and asked for by its deployment name (``name`` and
  ``request_key``) instead of its id, as a scoring client of a deployed model calls it.
* ``ours@DIR`` (``--compare-src DIR``, repeatable): the server from another source tree, e.g.
  ``git archive HEAD quantcrew | tar -x -C DIR``, to measure a change before and after in one run.

Each side is warmed up, then measured ``--runs`` times with wrk, the sides interleaved
(ours, bare, ours, bare...) so that load from elsewhere on the machine falls on all of them
alike; the summary takes medians. Errors are wrk's socket errors (connect, read, write, and
timeout: no answer within wrk's 2 s) plus non-2xx answers, by kind. ``cpu_ms_per_req`` is the
server process's CPU time (all threads, from /proc) over the run divided by its requests: less
noisy than req/s on a shared machine. The 1-minute load average is printed beside each run.

Targets: ours >= 0.8x ``bare`` and >= 1,000 req/s, 0 errors.

Needs wrk (``apt-get install wrk``). Run:
``.venv/bin/python bench/light_throughput.py [--seconds 10] [--connections 64] [--runs 3] [--by-name]
[--compare-src DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _table import print_table

from quantcrew.config.settings import load_settings
from quantcrew.crew.server_process import free_port
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.adapter import rebuild
from quantcrew.ml_server.services.cluster.model import ClusterModel

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/cluster/predict"
COLUMNS = ["a", "b", "c", "d"]
ROW = [0.1, -0.2, 0.3, 0.05]
MODEL_NAME = "bench-kmeans"
TARGET_RATIO = 0.8
TARGET_RPS = 1000.0
_NATIVE_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Side:
    """One server under test and its measured runs."""

    name: str
    cmd: list[str]
    cwd: Path
    env: dict[str, str]
    port: int
    home: Path | None = None
    body: bytes = b""
    proc: subprocess.Popen[bytes] | None = None
    runs: list[dict[str, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _ours(name: str, src: Path, workdir: Path, *, prediction_log: bool = True) -> Side:
    home = Path(tempfile.mkdtemp(prefix="qc-light-", dir=workdir))
    port = free_port()
    env = {"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__PRELOAD": "false",
           "QUANTCREW_MONITOR__PREDICTION_LOG": str(prediction_log).lower()}
    if src != ROOT:
        env["PYTHONPATH"] = str(src)  # ``-m`` puts the working directory first as well: cwd is src
    cmd = [sys.executable, "-m", "quantcrew.ml_server", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    return Side(name, cmd, src, env, port, home=home)


def _start(side: Side, log_dir: Path, timeout_s: float = 120.0) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    env.update(side.env)
    log = open(log_dir / f"{side.port}.log", "wb")  # noqa: SIM115 - lives as long as the process
    side.proc = subprocess.Popen(side.cmd, cwd=side.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=side.url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if side.proc.poll() is not None:
                raise SystemExit(f"{side.name} exited with {side.proc.returncode}; see {log.name}")
            try:
                if http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"{side.name} did not answer /health in {timeout_s:.0f} s; see {log.name}")


def _stop(side: Side) -> None:
    if side.proc is not None and side.proc.poll() is None:
        side.proc.send_signal(signal.SIGTERM)
        try:
            side.proc.wait(15)
        except subprocess.TimeoutExpired:
            side.proc.kill()
            side.proc.wait(5)


def _fit(side: Side) -> str:
    """Fit the KMeans on ``side`` (same data and seed everywhere); the predict body."""
    rng = np.random.default_rng(0)
    table = {"columns": COLUMNS, "values": rng.normal(size=(200, len(COLUMNS))).round(4).tolist()}
    reply = httpx.post(side.url + "/v1/cluster/fit", json={"data": table, "method": "kmeans", "n_clusters": 3,
                                                           "name": MODEL_NAME}, timeout=120.0)
    reply.raise_for_status()
    model_id: str = reply.json()["model"]["model_id"]
    side.body = json.dumps({"model_id": model_id, "data": {"columns": COLUMNS, "values": [ROW]}}).encode()
    return model_id


def _by_name(side: Side, model_id: str) -> Side:
    """``side``'s own server process, asked for the model by deployment name (staged ``full`` here)."""
    reply = httpx.post(f"{side.url}/v1/models/{model_id}/stage", json={"stage": "full"}, timeout=30.0)
    reply.raise_for_status()
    body = json.dumps({"name": MODEL_NAME, "request_key": "SPY", "data": {"columns": COLUMNS, "values": [ROW]}})
    return Side(f"{side.name}-by-name", side.cmd, side.cwd, side.env, side.port, home=side.home,
                body=body.encode(), proc=side.proc)


def _pickle_pipeline(side: Side, model_id: str, out: Path) -> None:
    """The fitted pipeline behind ``model_id``, read from ``side``'s registry, pickled to ``out``."""
    settings = load_settings(home=side.home)
    db, artifacts = settings.server.registry_db, settings.server.artifacts_dir
    assert db is not None and artifacts is not None  # filled in from the home
    registry = ModelRegistry(db, artifacts)
    try:
        model, _ = rebuild(registry, model_id, ClusterModel)
        out.write_bytes(pickle.dumps(model.pipeline_))
    finally:
        registry.close()


def _lua(body: bytes, workdir: Path, name: str) -> Path:
    text = body.decode()
    assert "]==]" not in text
    path = workdir / f"{name}.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{text}]==]\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests per second, p50 / p99 latency (ms), requests and errors from wrk's ``--latency`` report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise ValueError(f"unreadable wrk output:\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    kinds = dict(zip(("connect", "read", "write", "timeout"), (int(g) for g in sockets.groups()), strict=True)) \
        if sockets else {}
    kinds["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return {"rps": float(rps.group(1)), "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"]),
            "requests": float(total.group(1)), "errors": float(sum(kinds.values())),
            **{f"errors_{k}": float(v) for k, v in kinds.items()}}


def _error_kinds(run: dict[str, float]) -> str:
    kinds = [f"{int(v)} {k.removeprefix('errors_')}" for k, v in run.items() if k.startswith("errors_") and v]
    return ", ".join(kinds) if kinds else "0"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(side: Side, lua: Path, *, seconds: float, connections: int, threads: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(lua),
           side.url + PATH]
    assert side.proc is not None
    load, cpu = os.getloadavg()[0], _cpu_s(side.proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out)
    result["cpu_ms"] = (_cpu_s(side.proc.pid) - cpu) * 1000 / max(result["requests"], 1)
    result["load1"] = (load + os.getloadavg()[0]) / 2
    return result


def _check_same_answer(sides: list[Side]) -> None:
    labels = set()
    for side in sides:
        reply = httpx.post(side.url + PATH, content=side.body, headers={"content-type": "application/json"})
        reply.raise_for_status()
        labels.add(tuple(reply.json()["labels"]))
    if len(labels) != 1:
        raise SystemExit(f"the sides disagree on the labels: {labels}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per side (interleaved)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk per side before measuring")
    parser.add_argument("--compare-src", action="append", default=[], type=Path,
                        help="another source tree whose server is measured too (its quantcrew/ package)")
    parser.add_argument("--no-bare", action="store_true", help="measure only our server(s)")
    parser.add_argument("--by-name", action="store_true",
                        help="also ask our server for the model by deployment name ('ours-by-name')")
    parser.add_argument("--prediction-log", choices=("on", "off", "both"), default="on",
                        help="our server's prediction log (monitor.prediction_log); 'both' measures a second "
                             "server with it off ('ours-nolog')")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="qc-bench-light-"))
    sides = [_ours("ours", ROOT, workdir, prediction_log=args.prediction_log != "off")]
    if args.prediction_log == "both":
        sides.append(_ours("ours-nolog", ROOT, workdir, prediction_log=False))
    sides += [_ours(f"ours@{src}", src.resolve(), workdir) for src in args.compare_src]
    try:
        for side in sides:
            _start(side, workdir)
        model_ids = [_fit(side) for side in sides]
        if not args.no_bare:
            model = workdir / "pipeline.pkl"
            _pickle_pipeline(sides[0], model_ids[0], model)
            for name, extra in (("bare", []), ("bare-inline", ["--inline", "--loop", "asyncio"])):
                port = free_port()
                bare = Side(name, [sys.executable, str(ROOT / "bench" / "_bare_app.py"), "--model", str(model),
                                   "--port", str(port), *extra], ROOT, dict.fromkeys(_NATIVE_THREADS, "1"), port,
                            body=sides[0].body)
                sides.append(bare)
                _start(bare, workdir)
        if args.by_name:  # each of our servers once more, asked by name: ours, ours-by-name, ours@DIR, ...
            ours = list(zip(sides[:len(model_ids)], model_ids, strict=True))
            sides[:len(model_ids)] = [x for side, model_id in ours for x in (side, _by_name(side, model_id))]
        _check_same_answer(sides)
        luas = {side.name: _lua(side.body, workdir, f"side{i}") for i, side in enumerate(sides)}
        for side in sides:
            _wrk(side, luas[side.name], seconds=args.warmup, connections=args.connections, threads=args.threads)
        for _ in range(args.runs):
            for side in sides:
                side.runs.append(_wrk(side, luas[side.name], seconds=args.seconds, connections=args.connections,
                                      threads=args.threads))
    finally:
        for side in sides:
            _stop(side)

    print(f"POST {PATH} (KMeans, 1 row of {len(COLUMNS)} columns), wrk -t{args.threads} -c{args.connections} "
          f"-d{args.seconds:g}s, {args.runs} interleaved runs per side, {os.cpu_count()} CPUs")
    print_table(["side", "run", "req_per_s", "p50_ms", "p99_ms", "requests", "errors", "cpu_ms_per_req", "load1"],
                [[s.name, i + 1, r["rps"], r["p50_ms"], r["p99_ms"], int(r["requests"]), _error_kinds(r),
                  r["cpu_ms"], f"{r['load1']:.2f}"] for i in range(args.runs) for s in sides for r in [s.runs[i]]])
    print()
    medians = {s.name: statistics.median(r["rps"] for r in s.runs) for s in sides}
    base_rps, like_rps = medians.get("bare"), medians.get("bare-inline")
    rows: list[list[Any]] = []
    for side in sides:
        rps = medians[side.name]
        errors = int(sum(r["errors"] for r in side.runs))
        meets = "" if side.name.startswith("bare") or base_rps is None else (
            "yes" if rps / base_rps >= TARGET_RATIO and rps >= TARGET_RPS and errors == 0 else "no")
        rows.append([side.name, rps, statistics.median(r["p50_ms"] for r in side.runs),
                     statistics.median(r["p99_ms"] for r in side.runs), errors,
                     statistics.median(r["cpu_ms"] for r in side.runs), _ratio(rps, base_rps),
                     _ratio(rps, like_rps), meets])
    print(f"medians (target: >= {TARGET_RATIO}x bare, >= {TARGET_RPS:.0f} req/s, 0 errors)")
    print_table(["side", "req_per_s", "p50_ms", "p99_ms", "errors", "cpu_ms_per_req", "vs bare", "vs bare-inline",
                 "target met"], rows)


def _ratio(rps: float, base: float | None) -> str:
    return "" if base is None else f"{rps / base:.2f}x"


if __name__ == "__main__":
    main()
