"""One ML server per home: the lock file ``<home>/server.lock`` and what it says.

The server holds an exclusive ``flock`` on the file for as long as its process lives and writes
its URL and PID into it; the kernel drops the lock when the process dies, however it dies, so a
file left behind by a killed server is recognised as stale (nobody holds its lock) rather than
trusted. A second server on the same home refuses to start (:class:`HomeInUseError`), so it
can never mark the first one's running jobs ``interrupted``; the CLI reads the file
(:func:`running_server`) and reuses the server it names instead of starting another one.

Both sides import this module: it needs only the standard library. ``flock`` is POSIX; where
it is missing (Windows) the lock is not enforced and :func:`running_server` trusts a live PID.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "HomeInUseError", "RunningServer", "hold_home", "running_server"]

LOCK_FILE = "server.lock"
_TRIES = 5
_RETRY_S = 0.1


class HomeInUseError(RuntimeError):
    """Another live ML server holds this home; the message says which and what to do."""


@dataclass(frozen=True)
class RunningServer:
    """The server that holds a home: where it listens (None when it was started on port 0) and its PID."""

    url: str | None
    pid: int


def _try_lock(handle: IO[str]) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(path: Path) -> RunningServer | None:
    try:
        data = json.loads(path.read_text())
        return RunningServer(url=data.get("url"), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_live(claim: RunningServer | None) -> bool:
    """Whether ``claim`` names a process that is alive (ours included)."""
    if claim is None:
        return False
    try:
        os.kill(claim.pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, OverflowError):
        return False
    return True


@contextmanager
def hold_home(home: Path, url: str | None) -> Iterator[RunningServer]:
    """Hold ``home`` for this process's server until the block ends.

    Args:
        home: The settings' home folder.
        url: Where this server listens (None if not known yet, e.g. port 0).

    Raises:
        HomeInUseError: another live server holds the home (its URL and PID are named).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the block: closing it drops the lock
    try:
        # a few tries: running_server() probes the lock for an instant, and must not look like a server;
        # a claim naming a live process is a server's (a probe never writes one): no need to wait then
        locked = False
        for _ in range(_TRIES):
            locked = _try_lock(handle)
            if locked or _is_live(_read(path)):
                break
            time.sleep(_RETRY_S)
        if not locked:
            other = _read(path)
            where = f" at {other.url}" if other is not None and other.url else ""
            pid = f" (pid {other.pid})" if other is not None else ""
            raise HomeInUseError(
                f"the home {home} is in use by another ML server{where}{pid}: stop it first, or use it "
                f"(QUANTCREW_CLIENT__URL{'=' + other.url if other is not None and other.url else ''}), or give "
                "this server another home (QUANTCREW_HOME)"
            )
        me = RunningServer(url=url, pid=os.getpid())
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"url": me.url, "pid": me.pid}))
        handle.flush()
        try:
            yield me
        finally:
            handle.seek(0)
            handle.truncate()  # a clean stop leaves no claim behind
            handle.flush()
    finally:
        handle.close()


def running_server(home: Path) -> RunningServer | None:
    """The live server that holds ``home``, or None (no file, an empty one, or a stale one).

    A file whose lock nobody holds is stale: its server died without cleaning up.
    """
    path = home / LOCK_FILE
    if not path.exists():
        return None
    claim = _read(path)
    if claim is None:
        return None
    if fcntl is None:  # pragma: no cover - Windows: trust a live PID
        try:
            os.kill(claim.pid, 0)
        except OSError:
            return None
        return claim
    with open(path) as probe:
        if _try_lock(probe):  # nobody holds it: released as the probe closes
            return None
    return claim
