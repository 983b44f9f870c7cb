"""The inference runtime: the device thread, the server's batchers, the sample cap."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from quantcrew.config.settings import InferenceSettings
from quantcrew.ml_server.batching import BatcherPool
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.inference import InferenceRuntime, check_samples, inference_batcher
from quantcrew.ml_server.metrics import Metrics


class _Recorder:
    """A blocking ``run`` that notes each batch and the thread it ran on."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, items: list[Any]) -> list[str]:
        with self._lock:
            self.batches.append(list(items))
            self.threads.add(threading.get_ident())
        return [f"out-{x}" for x in items]


def _runtime(executor: ThreadPoolExecutor, pool: BatcherPool, **inference: object) -> InferenceRuntime:
    return InferenceRuntime(device="cpu", executor=executor, batchers=pool,
                            inference=InferenceSettings(**inference), metrics=Metrics())  # type: ignore[arg-type]


async def test_runtime_runs_every_pass_on_its_device_thread() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        device_thread = executor.submit(threading.get_ident).result()
        pool = BatcherPool()
        runtime = _runtime(executor, pool, max_wait_ms=20.0)
        run = _Recorder()
        # items are rows of a request (their length counts toward the batch size)
        outs = await asyncio.gather(*(runtime.batched("m", "ensemble", run, [i]) for i in range(5)))
        alone = await runtime.on_device(threading.get_ident)
        await pool.aclose()
    assert outs == [f"out-{[i]}" for i in range(5)] and sum(len(b) for b in run.batches) == 5
    assert len(run.batches) < 5  # gathered
    assert run.threads == {device_thread} and alone == device_thread


async def test_runtime_keeps_one_batcher_per_key() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        pool = BatcherPool()
        runtime = _runtime(executor, pool, batching=False)
        first, second = _Recorder(), _Recorder()
        assert await runtime.batched("a", "ensemble", first, [1]) == "out-[1]"
        assert await runtime.batched("a", "ensemble", second, [2]) == "out-[2]"  # the batcher made for "a" answers
        assert await runtime.batched("b", "execution", second, [3]) == "out-[3]"
        await pool.aclose()
    batches: list[Any] = [*first.batches, *second.batches]  # requests are lists of rows here
    assert batches == [[[1]], [[2]], [[3]]] and len(pool) == 0


async def test_inference_batcher_takes_its_limits_from_the_settings_and_counts_rows() -> None:
    settings = InferenceSettings(max_batch_size=4, max_wait_ms=20.0)
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = inference_batcher(_Recorder(), key="ensemble:m:0", family="ensemble", inference=settings,
                                    metrics=Metrics(), executor=executor)
        assert (batcher.name, batcher.max_batch_size, batcher.max_wait_s) == ("ensemble:m:0", 4, 0.02)
        assert batcher.enabled
        # two-row items: at most two of them fit a batch of 4 rows
        await asyncio.gather(*(batcher.submit([i, i]) for i in range(6)))
        await batcher.aclose()
    assert batcher.stats.items == 6 and batcher.stats.rows == 12 and batcher.stats.largest_batch <= 4


async def test_inference_batcher_observes_batches_under_the_family_label() -> None:
    metrics = Metrics()
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = inference_batcher(_Recorder(), key="execution:m:8", family="execution",
                                    inference=InferenceSettings(batching=False), metrics=metrics, executor=executor)
        assert not batcher.enabled
        for i in range(3):
            assert await batcher.submit([i, i, i]) == f"out-{[i, i, i]}"
        await batcher.aclose()
    sample = metrics.registry.get_sample_value
    assert sample("quantcrew_inference_batch_size_count", {"model": "execution"}) == 3
    assert sample("quantcrew_inference_batch_size_sum", {"model": "execution"}) == 9
    assert sample("quantcrew_inference_batch_size_count", {"model": "execution:m:8"}) is None


def test_check_samples_within_the_cap_returns_them() -> None:
    assert check_samples(1, 1000) == 1
    assert check_samples(1000, 1000) == 1000


def test_check_samples_over_the_cap_is_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match="samples=1001 is over the server's cap of 1000") as caught:
        check_samples(1001, 1000)
    assert caught.value.details == [{"loc": ["samples"], "msg": "at most 1000"}]
