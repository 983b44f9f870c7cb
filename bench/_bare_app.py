"""The reference for bench/light_throughput.py: a bare FastAPI app doing the same cluster predict.

One route, ``POST /v1/cluster/predict``, takes the same body as the server's (``model_id`` and a
``data`` table), validates it with a plain pydantic model, runs the fitted scikit-learn pipeline
that the bench pickled from the server's registry, and answers the labels as FastAPI does by
default (the returned dict through ``JSONResponse``). By default it is a ``def`` route, so the
predict runs in FastAPI's worker threads, served by ``uvicorn.run`` as a newcomer would serve it:
one worker, uvicorn's default loop (uvloop when installed) and HTTP implementation, access log
off. ``--inline`` makes it an ``async def`` route (the predict runs on the event loop, as the
server runs a light predict) and ``--loop`` picks the loop, so that the bench can also compare
like with like. ``GET /health`` tells the bench that it is up.

Run by the bench: ``python bench/_bare_app.py --model PICKLE --port PORT [--inline] [--loop asyncio]``.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel


class Table(BaseModel):
    columns: list[str]
    values: list[list[float]]


class PredictRequest(BaseModel):
    model_id: str
    data: Table


def make_app(pipeline: Any, *, inline: bool = False) -> FastAPI:
    """The bare app around a fitted pipeline; ``inline``: the predict runs on the event loop."""
    app = FastAPI()

    def answer(req: PredictRequest) -> dict[str, Any]:
        labels = pipeline.predict(np.asarray(req.data.values, dtype=np.float64))
        return {"model_id": req.model_id, "labels": [int(v) for v in labels]}

    if inline:
        @app.post("/v1/cluster/predict")
        async def predict_inline(req: PredictRequest) -> dict[str, Any]:
            return answer(req)
    else:
        @app.post("/v1/cluster/predict")
        def predict(req: PredictRequest) -> dict[str, Any]:
            return answer(req)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="pickled fitted pipeline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--inline", action="store_true", help="an async def route: the predict on the loop")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args()
    pipeline = pickle.loads(Path(args.model).read_bytes())  # noqa: S301 - written by the bench a moment ago
    import uvicorn

    uvicorn.run(make_app(pipeline, inline=args.inline), host=args.host, port=args.port, log_level="warning",
                access_log=False, loop=args.loop, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
