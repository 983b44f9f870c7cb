"""ML servers that tests start in child processes: their settings, one way to start them on a home, and a
pool that starts them before the tests that need them.

A server no test trains a torch model on runs on the CPU (``QUANTCREW_SERVER__DEVICE=cpu``): on a
machine where CUDA may be present, ``auto`` imports torch at start-up to look for a GPU, seconds on
every start (where torch is a CPU-only build or no GPU driver is installed, ``auto`` knows it
without torch). The choice itself is covered where it is made (tests/ml_server/test_device.py),
and the in-process apps keep ``auto``. A server that trains keeps ``auto``: it needs torch anyway.

A server takes seconds to start, and the test process keeps one of the two cores busy, not both.
So a conftest names the fixtures that start child servers (:func:`pool_servers`); once the session's
tests are collected, :func:`plan_servers` lists the servers they will use, in the order of their first
use, and :data:`POOL` starts them in that order in a background thread, one ready ahead of the tests
at a time. The fixture takes its server from the pool (:meth:`ServerPool.take`), or starts one itself
when none was planned (a test run by itself). The pool starts them as the fixtures would, from the
environment the tests see: no ``QUANTCREW_*`` variable of the shell, a folder without a ``.env``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest

from quantcrew.crew.server_process import LocalServer

__all__ = ["CHILD_SERVER_ENV", "POOL", "TRAINING_SERVER_ENV", "ServerPool", "local_server", "plan_servers",
           "pool_key", "pool_servers"]

TRAINING_SERVER_ENV: dict[str, str] = {"QUANTCREW_SERVER__PRELOAD": "false"}
"""Settings for a child server that tests train torch models on."""
CHILD_SERVER_ENV: dict[str, str] = {**TRAINING_SERVER_ENV, "QUANTCREW_SERVER__DEVICE": "cpu"}
"""Settings for a child server (or a CLI's child server) that no test trains a torch model on."""


def local_server(home: Path, *, trains: bool = False) -> LocalServer:
    """A server (not started yet) on ``home``, logging to ``<home>/server.log``.

    Args:
        home: Its home (registry, artifacts, lock).
        trains: Tests train torch models on it (RL, ensemble, execution network).
    """
    env = TRAINING_SERVER_ENV if trains else CHILD_SERVER_ENV
    return LocalServer(env={"QUANTCREW_HOME": str(home), **env}, log_path=Path(home) / "server.log")


class ServerPool:
    """Child servers started ahead of the tests that use them, in a background thread, one ahead at a time.

    Planned servers start in the order of :meth:`plan`; the next starts once the one before it is taken,
    so that the pool keeps one server ready ahead of the tests instead of loading the machine with all of
    them at the session's start.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-pool")
        self._queue: dict[str, Callable[[], LocalServer]] = {}
        self._started: dict[str, Future[LocalServer]] = {}
        self._lock = threading.Lock()
        self._folder: Path | None = None

    @property
    def planned(self) -> bool:
        """Whether anything was planned (or taken) in this session."""
        return self._folder is not None

    def plan(self, key: str, *, trains: bool) -> None:
        """Queue the server ``key`` (a new home; :meth:`begin` starts the first); no-op if planned already."""
        with self._lock:
            if key in self._queue or key in self._started:
                return
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="quantcrew-server-pool-"))
            folder = self._folder / f"server-{len(self._queue) + len(self._started)}"
            (folder / "cwd").mkdir(parents=True)
            base = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
            env = {"QUANTCREW_HOME": str(folder / "home"), **(TRAINING_SERVER_ENV if trains else CHILD_SERVER_ENV)}

            def start() -> LocalServer:
                # the port is chosen as the child starts, not when planned: a port found free minutes earlier
                # may have gone to another socket since
                return LocalServer(env=env, log_path=folder / "home" / "server.log", base_env=base,
                                   cwd=folder / "cwd").start()

            self._queue[key] = start

    def begin(self) -> None:
        """Start the first planned server."""
        with self._lock:
            self._start_next()

    def _start_next(self) -> None:
        """Start the next queued server unless one started is still waiting to be taken (lock held)."""
        if self._started or not self._queue:
            return
        key = next(iter(self._queue))
        self._started[key] = self._executor.submit(self._queue.pop(key))

    def take(self, key: str) -> LocalServer | None:
        """The started server ``key`` (waiting for it if it is starting); None if it was not planned or not
        started yet (the caller starts its own: the pool will not). The next planned server then starts."""
        with self._lock:
            future = self._started.pop(key, None)
            self._queue.pop(key, None)
            self._start_next()
        return None if future is None else future.result()

    def close(self) -> None:
        """Stop the servers nobody took, and remove their folders."""
        with self._lock:
            self._queue.clear()
            started, self._started = self._started, {}
        self._executor.shutdown(wait=True, cancel_futures=True)
        for future in started.values():
            if not future.cancelled() and future.exception() is None:
                future.result().stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


POOL = ServerPool()
"""The session's pool (a test process runs one session)."""
atexit.register(POOL.close)


def pool_key(fixture: str, where: str | Path) -> str:
    """The pool's name for the server ``fixture`` starts ``where``: the folder of its conftest for a session
    fixture (two folders may define fixtures of the same name), the test module's name for a module fixture."""
    return f"{where}::{fixture}"


_POOLED: dict[Path, Mapping[str, tuple[Literal["session", "module"], bool]]] = {}


def pool_servers(folder: Path, fixtures: Mapping[str, tuple[Literal["session", "module"], bool]]) -> None:
    """Name the fixtures of the conftest in ``folder`` that start child servers (call it as the conftest loads).

    Args:
        folder: The conftest's folder: only its tests use them.
        fixtures: Fixture name -> (its scope, whether tests train torch models on its server).
    """
    _POOLED[folder] = fixtures


def plan_servers(session: pytest.Session) -> None:
    """Plan the servers the collected tests will use, in the order of their first use, and start the first.

    Every conftest of :func:`pool_servers` calls it from ``pytest_collection_finish``; the first call plans
    for all of them (every conftest has loaded by then), the others do nothing.
    """
    if POOL.planned or session.config.option.collectonly:
        return
    for item in session.items:
        for folder, fixtures in _POOLED.items():
            if folder not in item.path.parents:
                continue
            names = getattr(item, "fixturenames", ())
            module = getattr(getattr(item, "module", None), "__name__", "")
            for fixture, (scope, trains) in fixtures.items():
                if fixture in names:
                    POOL.plan(pool_key(fixture, folder if scope == "session" else module), trains=trains)
    POOL.begin()
