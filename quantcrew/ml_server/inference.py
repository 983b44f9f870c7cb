"""The inference runtime: where the torch families' forward passes run, and the caps they obey.

One :class:`InferenceRuntime` per app holds the device models are rebuilt on, the one device
thread every forward pass runs on, and the app's batchers (one per model key, built by
:func:`inference_batcher` from the ``inference`` settings, their batch sizes and waits observed
in the app's metrics). The torch families' services answer through it, so passes on one device
never overlap and concurrent requests to one model are gathered when batching is on.
:func:`check_samples` is the one check of a request's Monte Carlo sample count against the cap.

The batcher itself (:class:`~quantcrew.ml_server.batching.DynamicBatcher`) knows nothing of
models, settings or metrics; this module wires it to them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from quantcrew.config.settings import InferenceSettings
from quantcrew.ml_server.batching import BatcherPool, DynamicBatcher
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.metrics import Metrics

__all__ = ["InferenceRuntime", "check_samples", "inference_batcher"]

T = TypeVar("T")


def inference_batcher(run: Callable[[list[Any]], list[Any]], *, key: str, family: str,
                      inference: InferenceSettings, metrics: Metrics,
                      executor: concurrent.futures.Executor) -> DynamicBatcher[Any, Any]:
    """The server's batcher for one torch model.

    Args:
        run: The blocking forward pass over the gathered items (one output per item, in order).
        key: Names the batcher (a model id and its sampling, say).
        family: The label its batch sizes and waits are observed under in ``metrics``.
        inference: Batch limits (``max_batch_size``, ``max_wait_ms``, ``batching``).
        metrics: Where batch sizes and waits are observed.
        executor: The shared device thread the passes run on.

    Items are arrays; their rows count toward ``max_batch_size``.
    """
    return DynamicBatcher(
        run, name=key, max_batch_size=inference.max_batch_size, max_wait_s=inference.max_wait_ms / 1000.0,
        enabled=inference.batching, size_of=len, executor=executor,
        observe_batch=metrics.batch_size.labels(family).observe, observe_wait=metrics.batch_wait.labels(family).observe,
    )


@dataclass(frozen=True)
class InferenceRuntime:
    """Where one app's torch forward passes run: its device, the one device thread, the batchers.

    The torch families' services answer through it, so every pass of an app runs on that app's
    device thread, gathered with concurrent requests to the same model when batching is on.

    Attributes:
        device: The torch device models are rebuilt on.
        executor: The single device thread.
        batchers: The app's batchers, one per model key.
        inference: Batch limits and sample caps.
        metrics: Where batch sizes and waits are observed.
    """

    device: str
    executor: concurrent.futures.Executor
    batchers: BatcherPool
    inference: InferenceSettings
    metrics: Metrics

    async def on_device(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the device thread, alone (a seeded pass is reproducible only outside a batch)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def batched(self, key: str, family: str, run: Callable[[list[Any]], list[Any]], item: Any) -> Any:
        """``item``'s output from the batcher of ``key``, created with ``run`` on first use."""
        batcher = self.batchers.get(key, lambda: inference_batcher(run, key=key, family=family,
                                                                   inference=self.inference, metrics=self.metrics,
                                                                   executor=self.executor))
        return await batcher.submit(item)


def check_samples(samples: int, cap: int) -> int:
    """``samples`` when within the server's cap (``inference.max_samples``).

    Raises:
        InvalidInputError: over the cap (a 422 naming the ``samples`` field).
    """
    if samples > cap:
        raise InvalidInputError(f"samples={samples} is over the server's cap of {cap}",
                                details=[{"loc": ["samples"], "msg": f"at most {cap}"}])
    return samples
