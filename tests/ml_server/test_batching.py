"""Dynamic batcher: batch limits, waiting, errors reaching every caller, cancellation, closing, metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from quantcrew.ml_server.batching import BatcherPool, DynamicBatcher
from quantcrew.ml_server.metrics import Metrics


class _Recorder:
    """A blocking ``run`` that notes each batch, the thread it ran on and how many ran at once."""

    def __init__(self, *, sleep_s: float = 0.0, fail_on: int | None = None, drop_last: bool = False,
                 gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.sleep_s, self.fail_on, self.drop_last, self.gate = sleep_s, fail_on, drop_last, gate
        self.started = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[str]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(list(items))
            self.threads.add(threading.get_ident())
        self.started.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(5), "test gate never opened"
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if self.fail_on is not None and self.fail_on in items:
                raise ValueError(f"bad item {self.fail_on}")
            out = [f"out-{x}" for x in items]
            return out[:-1] if self.drop_last else out
        finally:
            with self._lock:
                self.running -= 1


def _batcher(run: Callable[[list[int]], list[str]], **kwargs: object) -> DynamicBatcher[int, str]:
    options: dict[str, object] = {"name": "m1", "max_batch_size": 16, "max_wait_s": 0.01}
    options.update(kwargs)
    return DynamicBatcher(run, **options)  # type: ignore[arg-type]


async def _wait_until(flag: threading.Event) -> None:
    assert await asyncio.to_thread(flag.wait, 5), "run never started"


async def test_submit_64_concurrent_runs_batches_of_at_most_16() -> None:
    run = _Recorder()
    batcher = _batcher(run, max_batch_size=16)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(64)))
    await batcher.aclose()
    assert results == [f"out-{i}" for i in range(64)]  # each caller got its own output
    assert [len(b) for b in run.batches] == [16, 16, 16, 16]
    assert sorted(x for b in run.batches for x in b) == list(range(64))
    assert threading.get_ident() not in run.threads  # never on the event loop thread
    stats = batcher.stats
    assert (stats.batches, stats.items, stats.rows, stats.largest_batch) == (4, 64, 64, 16)
    assert stats.mean_batch == 16.0


async def test_submit_lone_request_waits_max_wait_only_under_load() -> None:
    run = _Recorder()
    batcher = _batcher(run, max_wait_s=0.1)
    start = time.perf_counter()
    assert await asyncio.wait_for(batcher.submit(7), timeout=2) == "out-7"
    assert time.perf_counter() - start < 0.08  # idle batcher: a lone client pays no wait
    assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == ["out-0", "out-1", "out-2"]
    start = time.perf_counter()  # the last batch gathered 3 rows: now a request waits for company
    assert await asyncio.wait_for(batcher.submit(8), timeout=2) == "out-8"
    elapsed = time.perf_counter() - start
    await batcher.aclose()
    assert 0.09 <= elapsed < 1.0
    assert run.batches == [[7], [0, 1, 2], [8]]


async def test_submit_with_zero_wait_takes_only_what_is_queued() -> None:
    run = _Recorder()
    batcher = _batcher(run, max_wait_s=0.0)
    start = time.perf_counter()
    assert await batcher.submit(1) == "out-1"
    assert time.perf_counter() - start < 0.2
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [f"out-{i}" for i in range(5)]
    await batcher.aclose()
    assert run.batches == [[1], [0, 1, 2, 3, 4]]


async def test_submit_disabled_runs_every_request_alone() -> None:
    run = _Recorder(sleep_s=0.001)
    sizes: list[int] = []
    batcher = _batcher(run, enabled=False, observe_batch=sizes.append)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    await batcher.aclose()
    assert results == [f"out-{i}" for i in range(20)]
    assert sorted(run.batches) == [[i] for i in range(20)]
    assert sizes == [1] * 20 and batcher.stats.largest_batch == 1
    assert run.most_running == 1  # the private single-thread executor never overlaps passes


async def test_run_error_reaches_every_caller_of_the_batch_and_next_batch_works() -> None:
    run = _Recorder(fail_on=-1)
    batcher = _batcher(run, max_wait_s=0.05)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    assert run.batches == [[1, -1, 2]]
    assert all(isinstance(o, ValueError) and "bad item -1" in str(o) for o in outcomes)
    assert outcomes[0] is outcomes[1] is outcomes[2]  # the same exception
    assert await batcher.submit(3) == "out-3"
    await batcher.aclose()


@pytest.mark.parametrize("enabled", [True, False])
async def test_run_with_wrong_output_count_raises_runtime_error(enabled: bool) -> None:
    batcher = _batcher(_Recorder(drop_last=True), name="ens-7", enabled=enabled, max_wait_s=0.02)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.aclose()
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError)
        assert "ens-7" in str(outcome) and "outputs for" in str(outcome)


async def test_cancelled_caller_does_not_break_others() -> None:
    gate = threading.Event()
    run = _Recorder(gate=gate)
    batcher = _batcher(run, max_wait_s=0.0)
    try:
        first = asyncio.create_task(batcher.submit(0))
        await _wait_until(run.started)  # batch [0] is running; the next submits queue
        tasks = {i: asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3, 4)}
        await asyncio.sleep(0.01)
        tasks[1].cancel()  # queued at the head: would have started the next batch
        tasks[3].cancel()  # queued behind it
        first.cancel()  # its batch is already running
        await asyncio.sleep(0.01)
    finally:
        gate.set()
    assert [await tasks[i] for i in (2, 4)] == ["out-2", "out-4"]
    assert tasks[1].cancelled() and tasks[3].cancelled() and first.cancelled()
    assert run.batches == [[0], [2, 4]]  # the cancelled callers were skipped
    assert await batcher.submit(5) == "out-5"
    await batcher.aclose()


async def test_observe_hooks_feed_prometheus_histograms() -> None:
    metrics = Metrics()
    batcher = _batcher(_Recorder(), max_batch_size=16, observe_batch=metrics.batch_size.labels("m1").observe,
                       observe_wait=metrics.batch_wait.labels("m1").observe)
    await asyncio.gather(*(batcher.submit(i) for i in range(64)))
    await batcher.aclose()
    sample = metrics.registry.get_sample_value
    assert sample("quantcrew_inference_batch_size_count", {"model": "m1"}) == 4
    assert sample("quantcrew_inference_batch_size_sum", {"model": "m1"}) == 64
    assert sample("quantcrew_inference_batch_size_bucket", {"model": "m1", "le": "8.0"}) == 0
    assert sample("quantcrew_inference_batch_size_bucket", {"model": "m1", "le": "16.0"}) == 4
    assert sample("quantcrew_inference_batch_wait_seconds_count", {"model": "m1"}) == 64
    wait_sum = sample("quantcrew_inference_batch_wait_seconds_sum", {"model": "m1"})
    assert wait_sum is not None and 0 <= wait_sum < 64 * 1.0
    assert b"quantcrew_inference_batch_size_bucket" in metrics.render()


async def test_observe_batch_receives_row_counts_and_waits_grow_with_queueing() -> None:
    sizes: list[int] = []
    waits: list[float] = []
    batcher = _batcher(_Recorder(sleep_s=0.02), max_batch_size=8, max_wait_s=0.0, observe_batch=sizes.append,
                       observe_wait=waits.append)
    await asyncio.gather(*(batcher.submit(i) for i in range(24)))
    await batcher.aclose()
    assert sizes == [8, 8, 8] and len(waits) == 24
    assert min(waits) >= 0 and max(waits[16:]) >= 0.035  # the third batch waited for two 20 ms passes


async def test_aclose_fails_waiting_callers_clearly() -> None:
    gate = threading.Event()
    run = _Recorder(gate=gate)
    batcher = _batcher(run, name="ens-9", max_wait_s=0.0)
    try:
        running = asyncio.create_task(batcher.submit(0))
        await _wait_until(run.started)
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(batcher.aclose(), timeout=2)
        outcomes = await asyncio.gather(running, *queued, return_exceptions=True)
    finally:
        gate.set()
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError) and str(outcome) == "batcher ens-9 is closed"
    with pytest.raises(RuntimeError, match="batcher ens-9 is closed"):
        await batcher.submit(3)
    assert batcher.closed
    await batcher.aclose()  # idempotent


async def test_size_of_counts_rows_toward_max_batch_size() -> None:
    seen: list[int] = []

    def run(items: list[list[float]]) -> list[int]:
        seen.append(sum(len(x) for x in items))
        return [len(x) for x in items]

    batcher: DynamicBatcher[list[float], int] = DynamicBatcher(run, name="rows", max_batch_size=16, max_wait_s=0.02,
                                                               size_of=len)
    items = [[0.0] * 5 for _ in range(12)] + [[0.0] * 20]
    results = await asyncio.gather(*(batcher.submit(x) for x in items))
    assert results == [5] * 12 + [20]
    assert seen == [15, 15, 15, 15, 20]  # three 5-row items per pass; the 20-row item alone
    assert batcher.stats.rows == 80 and batcher.stats.largest_batch == 20
    seen.clear()
    await asyncio.gather(*(batcher.submit([0.0] * n) for n in (10, 7, 6, 3)))
    assert seen == [10, 16]  # 10 + 7 would pass 16 by one row: 7 starts the next pass
    await batcher.aclose()


async def test_submit_refuses_negative_size() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda xs: xs, name="neg", max_batch_size=4, max_wait_s=0.0,
                                                       size_of=lambda x: x)
    with pytest.raises(ValueError, match="size_of returned -1"):
        await batcher.submit(-1)
    assert await batcher.submit(2) == 2
    await batcher.aclose()


@pytest.mark.parametrize(("max_batch_size", "max_wait_s"), [(0, 0.01), (4, -0.1), (4, float("nan"))])
def test_init_refuses_bad_limits(max_batch_size: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError, match="batcher bad"):
        DynamicBatcher(lambda xs: xs, name="bad", max_batch_size=max_batch_size, max_wait_s=max_wait_s)


async def test_batching_beats_unbatched_throughput() -> None:
    async def elapsed(enabled: bool) -> float:
        batcher = _batcher(_Recorder(sleep_s=0.005), max_batch_size=64, max_wait_s=0.002, enabled=enabled)
        start = time.perf_counter()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(64)))
        took = time.perf_counter() - start
        await batcher.aclose()
        assert results == [f"out-{i}" for i in range(64)]
        return took

    unbatched = await elapsed(False)
    batched = await elapsed(True)
    assert unbatched >= 64 * 0.005 * 0.9
    assert batched < 0.5 * unbatched


def test_batcher_survives_a_new_event_loop_per_run() -> None:
    run = _Recorder()
    batcher = _batcher(run, max_wait_s=0.01)

    async def burst(offset: int) -> list[str]:
        return await asyncio.gather(*(batcher.submit(offset + i) for i in range(8)))

    assert asyncio.run(burst(0)) == [f"out-{i}" for i in range(8)]
    assert asyncio.run(burst(100)) == [f"out-{100 + i}" for i in range(8)]  # a fresh loop, a fresh worker
    asyncio.run(batcher.aclose())
    assert [len(b) for b in run.batches] == [8, 8]


async def test_pool_creates_once_and_closes_all() -> None:
    pool = BatcherPool()
    made: list[str] = []

    def factory(key: str) -> Callable[[], DynamicBatcher[int, str]]:
        def make() -> DynamicBatcher[int, str]:
            made.append(key)
            return _batcher(_Recorder(), name=key)
        return make

    a = pool.get("a", factory("a"))
    assert pool.get("a", factory("a")) is a and len(pool) == 1
    b = pool.get("b", factory("b"))
    assert await a.submit(1) == "out-1" and await b.submit(2) == "out-2"
    await pool.aclose()
    assert a.closed and b.closed and len(pool) == 0 and made == ["a", "b"]
    with pytest.raises(RuntimeError, match="batcher a is closed"):
        await a.submit(1)
    fresh = pool.get("a", factory("a"))
    assert fresh is not a and await fresh.submit(3) == "out-3"
    await pool.aclose()
