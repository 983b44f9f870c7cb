"""Predict on 500 bars: through the real server (uvicorn, keep-alive client) vs in-process.

Both sides do the same computation (stored HMM, forward filter, response model); the
difference is the round trip: serialise, HTTP, parse and validate, serialise, parse.

Run: .venv/bin/python bench/regime_latency.py [--n 300] [--bars 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _table import print_table, summary

from quantcrew.config.settings import load_settings
from quantcrew.crew.server_process import LocalServer
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.regime import RegimeFitRequest, RegimePredictRequest
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.regime import RegimeDetector
from quantcrew.tools.client import make_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="timed calls per side")
    parser.add_argument("--bars", type=int, default=500)
    args = parser.parse_args()
    sp = load_sample("SP500")
    train = RegimeFitRequest.model_validate({"data": to_payload_dict(sp.tail(2500)), "name": "bench"})
    home = Path(tempfile.mkdtemp(prefix="qc-bench-"))
    settings = load_settings(home=home)
    with LocalServer(env={"QUANTCREW_HOME": str(home)}) as server:
        client = make_client(settings.client, base_url=server.url)
        fitted = client.regime_fit(train)
        model_id = fitted.model_id or ""
        request = RegimePredictRequest.model_validate({"model_id": model_id,
                                                       "data": to_payload_dict(sp.tail(args.bars))})
        # in-process: the same registry artifact, the same service calls, no HTTP
        registry = ModelRegistry(settings.registry_db, settings.artifacts_dir)

        def local() -> object:
            stored, info = registry.load(model_id, family="regime")
            detector = RegimeDetector.from_parts(stored, info.metadata)
            bars = bars_from_payload(request.data, min_rows=2)
            return detector.to_response(bars, model_id=info.model_id, model_version=info.version)

        def remote() -> object:
            return client.regime_predict(request)

        for fn in (local, remote):  # warm-up: caches, connection, JIT-less but lazy imports
            for _ in range(20):
                fn()
        timings: dict[str, list[float]] = {"in-process": [], "through server": []}
        for _ in range(args.n):  # interleaved so both sides see the same machine noise
            for name, fn in (("in-process", local), ("through server", remote)):
                t0 = time.perf_counter()
                fn()
                timings[name].append((time.perf_counter() - t0) * 1000)
        client.close()
        registry.close()
    local_s, remote_s = summary(timings["in-process"]), summary(timings["through server"])
    print(f"regime predict on {args.bars} bars, {args.n} calls each, interleaved (ms)")
    print_table(["path", "median", "p95", "p99", "mean"],
                [[k, v["median"], v["p95"], v["p99"], v["mean"]] for k, v in
                 (("in-process", local_s), ("through server", remote_s))])
    overhead = remote_s["median"] - local_s["median"]
    print(f"\nmedian overhead: {overhead:.3f} ms (target <= 1.5 ms); ratio server/in-process: "
          f"{remote_s['median'] / local_s['median']:.2f}x")


if __name__ == "__main__":
    main()
