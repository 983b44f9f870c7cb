"""Monte Carlo VaR latency: (1) 100 assets x 1,000,000 paths in-process, chunked vs naive;
(2) a small VaR request through a real uvicorn server vs the same service call in-process.

(1) times ``monte_carlo_var`` (blocked float32 normals reduced by L^T w, threads over blocks)
against a naive unchunked numpy version that holds the full (n_paths, n_assets) float64
matrix and multiplies by the Cholesky factor, measured in the same run; peak memory by
tracemalloc (numpy reports its buffers to it). (2) POSTs /v1/risk/var with
methods=["monte_carlo"] (20 assets, 10,000 paths) over a keep-alive httpx client to a
LocalServer, interleaved with ``portfolio_var`` on the same request in-process.

Run: .venv/bin/python bench/risk_latency.py [--repeats 7] [--paths 1000000] [--calls 200]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
from _table import print_table, summary

from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.schemas.risk import VarRequest
from quantcrew.ml_server.services.risk.service import var as portfolio_var
from quantcrew.ml_server.services.risk.var import VarCvar, monte_carlo_var, tail_measures

FloatArray = npt.NDArray[np.float64]
LEVELS = [0.95, 0.99]


def _market(k: int, seed: int = 0) -> tuple[FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    beta = rng.normal(1.0, 0.3, k)
    cov = 1e-4 * np.outer(beta, beta) + np.diag(rng.uniform(1e-4, 9e-4, k))
    w = np.full(k, 1.0 / k)
    return w, rng.normal(3e-4, 1e-4, k), cov


def _naive(w: FloatArray, mean: FloatArray, cov: FloatArray, n_paths: int, seed: int) -> list[VarCvar]:
    """What one writes first: the whole (n_paths, k) float64 matrix, r = mean + z L^T, loss = -r w."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_paths, w.shape[0]))
    r = mean + z @ np.linalg.cholesky(cov).T
    return tail_measures(-(r @ w), LEVELS)


def _time(fn: Callable[[], object], repeats: int) -> tuple[list[float], float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return times, peak / 2**20


def bench_in_process(args: argparse.Namespace) -> None:
    w, mean, cov = _market(args.assets)

    def fast() -> list[VarCvar]:
        return monte_carlo_var(w, mean, cov, LEVELS, n_paths=args.paths, seed=1)

    def slow() -> list[VarCvar]:
        return _naive(w, mean, cov, args.paths, seed=1)

    t_fast, m_fast = _time(fast, args.repeats)
    t_slow, m_slow = _time(slow, args.repeats)
    a, b = fast(), slow()
    s_fast, s_slow = summary(t_fast), summary(t_slow)
    rows = [
        ["monte_carlo_var (blocked)", s_fast["median"], s_fast["p95"], s_fast["p99"], f"{m_fast:.0f}",
         f"{a[1].var:.5f}", f"{a[1].cvar:.5f}", f"x{s_slow['median'] / s_fast['median']:.2f}"],
        ["naive full matrix", s_slow["median"], s_slow["p95"], s_slow["p99"], f"{m_slow:.0f}",
         f"{b[1].var:.5f}", f"{b[1].cvar:.5f}", "x1.00"],
    ]
    sd = float(np.sqrt(w @ cov @ w))
    from scipy.stats import norm

    z = norm.ppf(0.99)
    exact_var, exact_cvar = -w @ mean + sd * z, -w @ mean + sd * norm.pdf(z) / 0.01
    print(f"(1) Monte Carlo VaR/CVaR, {args.assets} assets x {args.paths:,} paths, {args.repeats} repeats (s); "
          f"target median < 1 s. Closed form at 99%: VaR {exact_var:.5f}, CVaR {exact_cvar:.5f}")
    print_table(["variant", "median_s", "p95_s", "p99_s", "peak_MiB", "VaR99", "CVaR99", "speed-up"], rows)


def bench_server(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(2)
    k, n = 20, 500
    values = (rng.normal(0, 0.01, (n, 1)) + rng.normal(0, 0.01, (n, k))).tolist()
    request = VarRequest.model_validate({
        "data": {"columns": [f"A{j}" for j in range(k)], "values": values},
        "methods": ["monte_carlo"], "n_paths": 10_000, "seed": 3,
    })
    body = request.model_dump_json(exclude_defaults=True)
    home = Path(tempfile.mkdtemp(prefix="qc-bench-risk-"))
    with LocalServer(env={"QUANTCREW_HOME": str(home)}) as server, \
            httpx.Client(base_url=server.url, timeout=30.0) as http:
        def remote() -> object:
            resp = http.post("/v1/risk/var", content=body, headers={"content-type": "application/json"})
            resp.raise_for_status()
            return resp.json()

        def local() -> object:
            return portfolio_var(VarRequest.model_validate_json(body), device="cpu").model_dump_json()

        for fn in (local, remote):
            for _ in range(10):
                fn()
        timings: dict[str, list[float]] = {"in-process": [], "through server": []}
        for _ in range(args.calls):
            for name, fn in (("in-process", local), ("through server", remote)):
                t0 = time.perf_counter()
                fn()
                timings[name].append((time.perf_counter() - t0) * 1000)
    loc, rem = summary(timings["in-process"]), summary(timings["through server"])
    print(f"\n(2) POST /v1/risk/var monte_carlo, {k} assets x {n} rows, 10,000 paths, {args.calls} calls per path, "
          "interleaved (ms). In-process = parse the same JSON + portfolio_var + serialise.")
    print_table(["path", "median_ms", "p95_ms", "p99_ms"], [
        ["in-process", loc["median"], loc["p95"], loc["p99"]],
        ["through server", rem["median"], rem["p95"], rem["p99"]],
        ["overhead (diff)", rem["median"] - loc["median"], rem["p95"] - loc["p95"], rem["p99"] - loc["p99"]],
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of the 1M-path simulation")
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per path in part (2)")
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    bench_in_process(args)
    if not args.skip_server:
        bench_server(args)


if __name__ == "__main__":
    main()
