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
from quantcrew.ml_server.services.regime.model import RegimeDetector
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
        payload = to_payload_dict(sp.tail(args.bars))
        requests = {
            "full reply": RegimePredictRequest.model_validate({"model_id": model_id, "data": payload}),
            "labels only": RegimePredictRequest.model_validate(
                {"model_id": model_id, "data": payload, "include_probabilities": False}),
        }
        # in-process: the same registry artifact, the same service calls, no HTTP
        registry = ModelRegistry(settings.registry_db, settings.artifacts_dir)
        rows = []
        for variant, request in requests.items():
            def local(request: RegimePredictRequest = request) -> object:
                stored, info = registry.load(model_id, family="regime")
                detector = RegimeDetector.from_parts(stored, info.metadata)
                bars = bars_from_payload(request.data, min_rows=2)
                return detector.to_response(bars, model_id=info.model_id, model_version=info.version,
                                            include_probabilities=request.include_probabilities)

            def remote(request: RegimePredictRequest = request) -> object:
                return client.regime_predict(request)

            for fn in (local, remote):  # warm-up: caches, connection, lazy imports
                for _ in range(20):
                    fn()
            timings: dict[str, list[float]] = {"in-process": [], "through server": []}
            for _ in range(args.n):  # interleaved so both sides see the same machine noise
                for name, fn in (("in-process", local), ("through server", remote)):
                    t0 = time.perf_counter()
                    fn()
                    timings[name].append((time.perf_counter() - t0) * 1000)
            loc, rem = summary(timings["in-process"]), summary(timings["through server"])
            reply_kb = len(client._http.post(  # noqa: SLF001 - reply size for the table only
                "/v1/regime/predict", content=request.model_dump_json(),
                headers={"content-type": "application/json"}).content) / 1024
            rows.append([variant, "in-process", loc["median"], loc["p95"], loc["p99"], ""])
            rows.append([variant, "through server", rem["median"], rem["p95"], rem["p99"], f"{reply_kb:.1f} kB"])
            rows.append([variant, "overhead (median diff)", rem["median"] - loc["median"], "", "",
                         f"x{rem['median'] / loc['median']:.2f}"])
        client.close()
        registry.close()
    print(f"regime predict on {args.bars} bars, {args.n} calls per path, interleaved (ms); target: overhead <= 1.5 ms")
    print_table(["reply", "path", "median", "p95", "p99", "reply_kb / ratio"], rows)


if __name__ == "__main__":
    main()
