"""A training job's independent pieces, run as Ray tasks when the server runs on Ray, in turn otherwise.

Two jobs are made of pieces that do not depend on each other: the rl family's runs (every
seed x configuration of an agent's search) and the ensemble's walk-forward folds. A
:class:`TaskPool` runs them:

* **as Ray tasks** when the process is part of a Ray cluster (a Serve replica: Ray is
  initialised in it), ``ray.fan_out`` is on, the job has more than one piece, the job trains on
  the CPU, and the cluster has ``ray.task_num_cpus`` CPUs free right now. Replicas reserve their
  CPUs for as long as they run, so a cluster whose CPUs all sit under replicas would leave a task
  pending for ever: such a job runs its pieces in turn instead, and says so;
* **in turn, in the job's own thread** otherwise (one uvicorn process, or no CPU free).

Each piece is a function ``piece(shared, item, watch)``; the same function runs either way.
``shared`` (the job's plan, its prepared market...) is put into Ray's object store once and
handed to every task. What travels between the cluster's processes is the server's own data,
built from a validated request; what a piece returns is plain data (numbers, arrays, the
tensors of a state dict), never a pickled model or optimizer. The caller rebuilds the model
from it, the same way in both modes.

The :class:`Watch` a piece gets reports progress and reads the job's cancel flag in turn; in a
Ray task it is inert (a task cannot reach the job's context), so progress is reported as each
task ends, and a cancelled job cancels its tasks and raises
:class:`~quantcrew.ml_server.jobs.JobCancelled`. A piece's exception is re-raised as itself, so
the error map answers as for a job run in turn.

Cancelling is gentle first: ``ray.cancel(force=False)`` raises ``KeyboardInterrupt`` in a running
task and leaves its worker alive; only a task still running :data:`_GRACE_S` later is killed with
its worker (``force=True``). A forced cancel reaches its worker asynchronously, and a worker whose
task ended meanwhile may already run the next job's task, which would then die with it. A task
lost with its worker (that cancel, the kernel's OOM killer) is run again once (``max_retries=1``):
pieces are deterministic in their seeds, so a rerun gives the same result; a cancelled task is
never rerun.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from quantcrew.ml_server.jobs import JobCancelled

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings

__all__ = ["IN_TURN", "RAY", "TaskPool", "Watch"]

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

RAY = "ray"
"""Where pieces ran: as Ray tasks."""
IN_TURN = "process"
"""Where pieces ran: one after another in the job's own thread."""
_POLL_S = 0.25
"""How often a job waiting on its tasks looks at its cancel flag."""
_GRACE_S = 3.0
"""How long a gently cancelled task has to stop before it is killed with its worker."""
_RETRIES = 1
"""How many times a task lost with its worker runs again."""


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Watch:
    """What a running piece may call: ``report`` its progress, ask whether the job was ``cancelled``.

    ``index`` is the piece's place in the job's list. In a Ray task both callables are inert.
    """

    index: int
    report: Callable[..., None] = _ignore
    cancelled: Callable[[], bool] = _never


def _run_piece(piece: Callable[[Any, Any, Watch], Any], shared: Any, item: Any, index: int, threads: int) -> Any:
    """The body of every task: cap the task's compute threads, then run the piece with an inert watch."""
    from quantcrew.ml_server.threads import limit_compute_threads

    limit_compute_threads(threads)
    if "torch" in sys.modules:  # the piece's module imported it when it was deserialised
        sys.modules["torch"].set_num_threads(threads)
    return piece(shared, item, Watch(index))


@cache
def _remote() -> Any:
    import ray

    return ray.remote(_run_piece)


@dataclass(frozen=True)
class TaskPool:
    """Where a job's pieces run (see the module's docstring).

    Args:
        fan_out: Run pieces as Ray tasks when this process is in a Ray cluster (``ray.fan_out``).
        num_cpus: CPUs each task reserves, and the compute threads it uses (``ray.task_num_cpus``).
    """

    fan_out: bool = False
    num_cpus: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskPool:
        return cls(fan_out=settings.ray.fan_out, num_cpus=settings.ray.task_num_cpus)

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))

    def where(self, pieces: int, *, device: str = "cpu") -> str:
        """:data:`RAY` when ``pieces`` would run as Ray tasks now, else :data:`IN_TURN` (with the reason logged)."""
        if not self.fan_out or pieces < 2:
            return IN_TURN
        ray = sys.modules.get("ray")  # never imported here: a server not started on Ray has not loaded it
        if ray is None or not ray.is_initialized():
            return IN_TURN
        if device != "cpu":
            log.info("%d pieces run in turn: the job trains on %s, which this replica holds", pieces, device)
            return IN_TURN
        free = float(ray.available_resources().get("CPU", 0.0))
        if free < self.num_cpus:
            log.warning("%d pieces run in turn, not as Ray tasks: the cluster has %.2f CPUs free and a task "
                        "needs %.2f (ray.task_num_cpus); the replicas hold the rest", pieces, free, self.num_cpus)
            return IN_TURN
        return RAY

    def map(self, piece: Callable[[S, T, Watch], R], shared: S, items: Sequence[T], *,
            cancelled: Callable[[], bool], progress: Callable[..., None] = _ignore,
            finished: Callable[[int, R], None] = _ignore, device: str = "cpu") -> tuple[list[R], str]:
        """Run ``piece(shared, item, watch)`` for every item; the results in the items' order and where they ran.

        Args:
            piece: A module-level function (a Ray task pickles it by reference).
            shared: What every piece reads; put into Ray's object store once.
            items: One per piece.
            cancelled: The job's cancel flag.
            progress: ``progress(index, *args, **kwargs)``: what a piece run in turn reports.
            finished: Called with each piece's index and result as it ends (in turn: in order).
            device: The device the job trains on; only a CPU job fans out.

        Raises:
            JobCancelled: the job was cancelled (its tasks are cancelled first).
        """
        where = self.where(len(items), device=device)
        if where == IN_TURN:
            results = []
            for k, item in enumerate(items):
                if cancelled():
                    raise JobCancelled()

                def report(*args: Any, _k: int = k, **kwargs: Any) -> None:
                    progress(_k, *args, **kwargs)

                result = piece(shared, item, Watch(k, report, cancelled))
                finished(k, result)
                results.append(result)
            return results, where
        return self._as_tasks(piece, shared, items, cancelled=cancelled, finished=finished), where

    def _as_tasks(self, piece: Callable[[S, T, Watch], R], shared: S, items: Sequence[T], *,
                  cancelled: Callable[[], bool], finished: Callable[[int, R], None]) -> list[R]:
        import ray
        from ray.exceptions import RayTaskError

        remote = _remote().options(num_cpus=self.num_cpus, max_retries=_RETRIES)
        shared_ref = ray.put(shared)
        refs = [remote.remote(piece, shared_ref, item, k, self.threads) for k, item in enumerate(items)]
        index = {ref: k for k, ref in enumerate(refs)}
        results: dict[int, R] = {}
        pending = list(refs)
        try:
            while pending:
                if cancelled():
                    raise JobCancelled()
                ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    k = index[ref]
                    results[k] = ray.get(ref)
                    finished(k, results[k])
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else None
            if cause is not None:
                raise cause from None
            raise
        finally:
            _cancel(pending)
        return [results[k] for k in range(len(items))]


def _cancel(refs: list[Any]) -> None:
    """Cancel ``refs`` gently, then kill the workers of those still running after :data:`_GRACE_S`."""
    if not refs:
        return
    import ray
    from ray.exceptions import TaskCancelledError

    for ref in refs:
        with contextlib.suppress(TaskCancelledError, ValueError):  # ended meanwhile
            ray.cancel(ref, force=False)
    _ended, running = ray.wait(refs, num_returns=len(refs), timeout=_GRACE_S)
    for ref in running:
        log.warning("a cancelled task did not stop within %.0f s: its worker is killed", _GRACE_S)
        with contextlib.suppress(TaskCancelledError, ValueError):
            ray.cancel(ref, force=True)
