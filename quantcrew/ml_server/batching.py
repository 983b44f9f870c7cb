"""Dynamic batching: concurrent inference requests gathered into one forward pass.

A torch forward pass costs about the same for 1 row as for 64 on a GPU (and far less than 64
passes on a CPU), so under load the server answers more requests per second by gathering them.
A :class:`DynamicBatcher` holds a queue per event loop and one worker task that::

    take the first queued request            (the clock starts)
    keep taking requests                     until their rows would pass max_batch_size,
                                             or max_wait_s has passed since the first
    run(items) in the executor               ONE blocking call, never on the loop thread
    hand output i to caller i                (or the same exception to every caller)

While a batch runs, new requests queue and form the next batch, so batches grow with load and
a lone request waits at most ``max_wait_s``. Batching is opt-in per model: for sub-millisecond
scikit-learn calls the wait costs more than it saves (``enabled=False`` runs each request as a
batch of one, the baseline).

Wiring it to Prometheus (``quantcrew.ml_server.metrics.Metrics``)::

    DynamicBatcher(run, name=model_id, max_batch_size=64, max_wait_s=0.002,
                   observe_batch=metrics.batch_size.labels(model_id).observe,
                   observe_wait=metrics.batch_wait.labels(model_id).observe)

A batcher serves one event loop at a time; when it is first used from another loop (a test
client that opens a loop per request) it starts a fresh queue and worker there.

The server builds its batchers (limits from the settings, metrics per family, the device thread)
in :mod:`quantcrew.ml_server.inference`; this module knows nothing of models or settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BatchStats", "BatcherPool", "DynamicBatcher"]

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class BatchStats:
    """What a batcher has run so far.

    Attributes:
        batches: Forward passes run (calls of ``run``).
        items: Requests answered through those passes.
        rows: Rows run, summed over passes (``size_of`` of each request; 1 each by default).
        largest_batch: The most rows in one pass.
    """

    batches: int = 0
    items: int = 0
    rows: int = 0
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        """Mean rows per forward pass (0.0 before the first)."""
        return self.rows / self.batches if self.batches else 0.0


@dataclass
class _Pending(Generic[In, Out]):
    """A queued request: its item, its rows, the caller's future, when it was queued."""

    item: In
    size: int
    future: asyncio.Future[Out]
    queued_at: float


class _Lane(Generic[In, Out]):
    """The queue and worker of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: deque[_Pending[In, Out]] = deque()
        self.taken: list[_Pending[In, Out]] = []
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        self.last_rows = 0  # rows of the previous batch: 0 or 1 means no concurrent load was seen


class DynamicBatcher(Generic[In, Out]):
    """Gathers concurrent ``submit`` calls into batches and runs each batch in one call of ``run``.

    Args:
        run: Blocking function (a forward pass) taking the gathered items and returning one
            output per item, in order. Runs in ``executor``, never on the event loop thread.
        name: Names the batcher in errors and thread names (a model id).
        max_batch_size: Most rows in one batch; a single item larger than this runs alone.
        max_wait_s: Longest time the worker waits for more items after taking the first of a
            batch (0: take only what is already queued). It does not wait when nothing else is
            queued and the previous batch held one row: a lone client pays no wait.
        enabled: False runs every request as ``run([item])`` straight away (no queue): the
            "batching off" baseline.
        size_of: Rows in an item (default 1 per item), for items that carry several rows.
        executor: Where ``run`` executes. Default: a private single-thread executor owned (and
            shut down) by the batcher, so forward passes on one device never overlap.
        observe_batch: Called with the rows of each forward pass (a Prometheus histogram's
            ``observe``). Must not raise.
        observe_wait: Called with each request's queue time in seconds (queued until its batch
            started running). Must not raise.

    Raises:
        ValueError: ``max_batch_size`` below 1, or ``max_wait_s`` negative or not finite.
    """

    def __init__(self, run: Callable[[list[In]], list[Out]], *, name: str, max_batch_size: int, max_wait_s: float,
                 enabled: bool = True, size_of: Callable[[In], int] | None = None,
                 executor: concurrent.futures.Executor | None = None,
                 observe_batch: Callable[[int], None] | None = None,
                 observe_wait: Callable[[float], None] | None = None) -> None:
        if int(max_batch_size) < 1:
            raise ValueError(f"batcher {name}: max_batch_size must be at least 1, got {max_batch_size}")
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"batcher {name}: max_wait_s must be a finite number >= 0, got {max_wait_s}")
        self.name = name
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self.enabled = enabled
        self._run = run
        self._size_of = size_of
        self._observe_batch = observe_batch
        self._observe_wait = observe_wait
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batcher-{name}")
        self._lane: _Lane[In, Out] | None = None
        self._closed = False
        self._stats = BatchStats()

    @property
    def stats(self) -> BatchStats:
        """Batches, items and rows run so far, and the largest batch (a snapshot)."""
        return self._stats

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    async def submit(self, item: In) -> Out:
        """Queue ``item``, wait for its batch to run, and return its output.

        Raises:
            RuntimeError: The batcher is closed (before or while the item waited), or ``run``
                returned a number of outputs other than the number of items.
            ValueError: ``size_of`` gave a negative row count.
            Exception: Whatever ``run`` raised for the batch holding this item.
        """
        if self._closed:
            raise self._closed_error()
        size = self._measure(item)
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return await self._run_alone(loop, item, size)
        lane = self._lane_for(loop)
        future: asyncio.Future[Out] = loop.create_future()
        lane.pending.append(_Pending(item, size, future, time.perf_counter()))
        lane.wakeup.set()
        return await future

    async def aclose(self) -> None:
        """Stop the worker; callers still waiting get ``RuntimeError("batcher <name> is closed")``.

        Idempotent. A forward pass already running in the executor finishes there, but its
        callers are failed too. An executor the batcher owns is shut down.
        """
        if self._closed:
            return
        self._closed = True
        lane, self._lane = self._lane, None
        if lane is not None:
            self._stop(lane)
            if lane.loop is asyncio.get_running_loop():
                if lane.worker is not None and not lane.worker.done():
                    await asyncio.wait([lane.worker])  # wait, without re-raising its cancellation here
                self._fail(lane, self._closed_error())
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the worker --------------------------------------------------------------------------

    def _lane_for(self, loop: asyncio.AbstractEventLoop) -> _Lane[In, Out]:
        """This loop's lane, with a live worker (created, or replaced after a loop change)."""
        lane = self._lane
        if lane is None or lane.loop is not loop:
            if lane is not None:
                self._stop(lane)
            lane = self._lane = _Lane(loop)
        if lane.worker is None or lane.worker.done():
            lane.worker = loop.create_task(self._work(lane), name=f"batcher-{self.name}")
        return lane

    async def _work(self, lane: _Lane[In, Out]) -> None:
        try:
            while True:
                batch = await self._gather(lane)
                await self._dispatch(lane, batch)
        except asyncio.CancelledError:
            self._fail(lane, self._closed_error() if self._closed else
                       RuntimeError(f"batcher {self.name} is closed: its worker was cancelled (event loop stopping)"))
            raise
        except BaseException as exc:
            # A bug here must not leave callers waiting forever: fail them, then let the task die.
            error = RuntimeError(f"batcher {self.name} worker failed: {exc!r}")
            error.__cause__ = exc
            self._fail(lane, error)
            raise

    async def _gather(self, lane: _Lane[In, Out]) -> list[_Pending[In, Out]]:
        """Wait for a first item, then take more until the batch is full or the wait is over."""
        while True:
            while not lane.pending:
                lane.wakeup.clear()
                await lane.wakeup.wait()
            first = lane.pending.popleft()
            if not first.future.done():  # a cancelled caller is skipped
                break
        lane.taken = [first]
        rows = first.size
        # Adaptive wait: with nothing else queued and a previous batch of one row (a lone client),
        # waiting only adds latency; under load (the last batch gathered several rows) it pays.
        idle = not lane.pending and lane.last_rows <= 1
        deadline = lane.loop.time() + (0.0 if idle else self.max_wait_s)
        while rows < self.max_batch_size:
            if lane.pending:
                head = lane.pending[0]
                if head.future.done():
                    lane.pending.popleft()
                    continue
                if rows + head.size > self.max_batch_size:
                    break  # it starts the next batch
                lane.taken.append(lane.pending.popleft())
                rows += head.size
                continue
            if lane.loop.time() >= deadline:
                break
            lane.wakeup.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await lane.wakeup.wait()
            except TimeoutError:
                break
        lane.last_rows = rows
        return lane.taken

    async def _dispatch(self, lane: _Lane[In, Out], batch: list[_Pending[In, Out]]) -> None:
        """Run one batch in the executor and settle every caller's future."""
        started: list[float] = []
        error: BaseException | None = None
        outputs: list[Out] = []
        try:
            outputs = await lane.loop.run_in_executor(self._executor, self._timed_run, [p.item for p in batch],
                                                      started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # run's failure belongs to its callers: forwarded to each, not swallowed
            error = exc
        if error is None and len(outputs) != len(batch):
            error = self._count_error(len(outputs), len(batch))
        lane.taken = []
        for i, pending in enumerate(batch):
            if pending.future.done():
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(outputs[i])
        if started:
            self._record(sum(p.size for p in batch), [started[0] - p.queued_at for p in batch])

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, item: In, size: int) -> Out:
        """Batching off: ``run([item])`` in the executor, no queue."""
        queued_at = time.perf_counter()
        started: list[float] = []
        try:
            outputs = await loop.run_in_executor(self._executor, self._timed_run, [item], started)
        finally:
            if started:
                self._record(size, [started[0] - queued_at])
        if len(outputs) != 1:
            raise self._count_error(len(outputs), 1)
        return outputs[0]

    # -- helpers -----------------------------------------------------------------------------

    def _timed_run(self, items: list[In], started: list[float]) -> list[Out]:
        """Executor side: note when the pass starts (queue time ends there), then run it."""
        started.append(time.perf_counter())
        try:
            return list(self._run(items))
        except StopIteration as exc:  # a future refuses StopIteration; it would never settle
            raise RuntimeError(f"batcher {self.name}: run raised {exc!r}") from exc

    def _measure(self, item: In) -> int:
        if self._size_of is None:
            return 1
        size = int(self._size_of(item))
        if size < 0:
            raise ValueError(f"batcher {self.name}: size_of returned {size} rows; it must be >= 0")
        return size

    def _record(self, rows: int, waits: list[float]) -> None:
        s = self._stats
        self._stats = BatchStats(batches=s.batches + 1, items=s.items + len(waits), rows=s.rows + rows,
                                 largest_batch=max(s.largest_batch, rows))
        if self._observe_batch is not None:
            self._observe_batch(rows)
        if self._observe_wait is not None:
            for wait in waits:
                self._observe_wait(max(0.0, wait))

    def _stop(self, lane: _Lane[In, Out]) -> None:
        """Cancel a lane's worker from any thread (its loop may be gone already)."""
        worker = lane.worker
        if worker is None or worker.done() or lane.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is lane.loop:
            worker.cancel()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: its tasks are gone with it
            lane.loop.call_soon_threadsafe(worker.cancel)

    @staticmethod
    def _fail(lane: _Lane[In, Out], error: BaseException) -> None:
        """Fail every caller still waiting in ``lane`` (taken for a batch, or queued)."""
        waiting = [*lane.taken, *lane.pending]
        lane.taken = []
        lane.pending.clear()
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _closed_error(self) -> RuntimeError:
        return RuntimeError(f"batcher {self.name} is closed")

    def _count_error(self, got: int, expected: int) -> RuntimeError:
        return RuntimeError(f"batcher {self.name}: run returned {got} outputs for {expected} inputs; "
                            "it must return one output per input, in order")


class BatcherPool:
    """Batchers by key (e.g. a model id), created on first use, closed together at shutdown.

    After :meth:`aclose` the pool is empty and may be used again (a new batcher per key).
    """

    def __init__(self) -> None:
        self._batchers: dict[str, DynamicBatcher[Any, Any]] = {}
        self._lock = threading.Lock()  # get() may be called from sync handlers' worker threads

    def get(self, key: str, factory: Callable[[], DynamicBatcher[Any, Any]]) -> DynamicBatcher[Any, Any]:
        """The batcher for ``key``; ``factory()`` builds it the first time (or after it was closed)."""
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None or batcher.closed:
                batcher = self._batchers[key] = factory()
            return batcher

    async def aclose(self) -> None:
        """Close every batcher (their waiting callers get a RuntimeError) and empty the pool."""
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        await asyncio.gather(*(b.aclose() for b in batchers))

    def __len__(self) -> int:
        with self._lock:
            return len(self._batchers)
