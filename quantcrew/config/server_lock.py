"""Who serves a home: the lock file ``<home>/server.lock``, the replicas' claims, and what they say.

Two ways to hold a home, which never mix:

* **exclusive** (the default: one ML server per home). The server holds an exclusive ``flock``
  on ``server.lock`` for as long as its process lives and writes its URL and PID into it. A
  second server on the same home refuses to start (:class:`HomeInUseError`), so it can never
  mark the first one's running jobs ``interrupted``.
* **shared** (``--shared-home``: the replicas of one deployment, several server processes on
  one registry, e.g. Ray Serve replicas or several uvicorn processes). Each replica holds a
  *shared* ``flock`` on ``server.lock``, so any number of replicas coexist, and an exclusive
  server is refused while one of them lives (and a replica is refused while an exclusive server
  lives), each with a message naming the other side. Each replica also writes a claim of its
  own, ``<home>/replicas/<pid>-<token>.json`` (its URL and PID), on which it holds an exclusive
  ``flock``: the claim is live exactly as long as its process. Claims appear fully written
  (written under a temporary name, locked, then renamed), and a claim whose lock nobody holds
  (its replica died without cleaning up) is ignored and removed by whoever reads it.

The kernel drops a ``flock`` when its process dies, however it dies, so a file left behind by a
killed server is recognised as stale (nobody holds its lock) rather than trusted. The CLI reads
the home (:func:`running_server`) and reuses the server it names instead of starting another
one; :func:`running_servers` lists every live one (all the replicas of a shared home).

What the shared mode does not cover: the lock is the kernel's, so it holds for processes of one
machine on a local filesystem; replicas on several machines share no lock (and should share no
SQLite file either: a server-class database is the way there).

Both sides import this module: it needs only the standard library. ``flock`` is POSIX; where
it is missing (Windows) nothing is enforced: a claim (exclusive or shared) is trusted while its
PID is alive.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "REPLICAS_DIR", "HomeInUseError", "RunningServer", "hold_home", "running_server",
           "running_servers"]

LOCK_FILE = "server.lock"
REPLICAS_DIR = "replicas"
"""Folder of the home where shared replicas put their claims (one JSON file per replica)."""
_TRIES = 5
_RETRY_S = 0.1


class HomeInUseError(RuntimeError):
    """Another live ML server holds this home in a way this one cannot join; the message says which and what to do."""


@dataclass(frozen=True)
class RunningServer:
    """A server that holds a home: where it listens (None when started on port 0), its PID, whether it shares it."""

    url: str | None
    pid: int
    shared: bool = False


def _try_lock(handle: IO[str], *, shared: bool = False) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(path: Path, *, shared: bool = False) -> RunningServer | None:
    try:
        data = json.loads(path.read_text())
        return RunningServer(url=data.get("url"), pid=int(data["pid"]), shared=shared)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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


def _replicas(home: Path) -> list[RunningServer]:
    """The live replicas' claims in ``home``, oldest claim first; stale claims are removed on the way."""
    folder = home / REPLICAS_DIR
    try:
        paths = sorted(folder.glob("*.json"), key=_mtime)
    except OSError:
        return []
    live = []
    for path in paths:
        claim = _read(path, shared=True)
        if fcntl is None:  # pragma: no cover - Windows: trust a live PID
            if claim is not None and _is_live(claim):
                live.append(claim)
            continue
        try:
            probe = open(path)  # noqa: SIM115 - closed below; closing drops the probe's lock
        except OSError:
            continue  # removed meanwhile: its replica stopped
        with probe:
            if _try_lock(probe):
                with suppress(OSError):  # nobody holds it: its replica died without cleaning up
                    path.unlink()
                continue
        if claim is not None:
            live.append(claim)
    return live


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _names(servers: list[RunningServer]) -> str:
    return ", ".join(f"{s.url or 'port not known yet'} (pid {s.pid})" for s in servers)


@contextmanager
def hold_home(home: Path, url: str | None, *, shared: bool = False) -> Iterator[RunningServer]:
    """Hold ``home`` for this process's server until the block ends.

    Args:
        home: The settings' home folder.
        url: Where this server listens (None if not known yet, e.g. port 0).
        shared: Join the home's other replicas (shared mode) instead of holding it alone.

    Raises:
        HomeInUseError: exclusive: another live server (exclusive or shared) holds the home;
            shared: a live exclusive server holds it. The message names it (URL and PID).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the block: closing it drops the lock
    try:
        # a few tries: running_server() probes the lock for an instant, and must not look like a server;
        # a claim naming a live process is a server's (a probe never writes one): no need to wait then
        locked = False
        for _ in range(_TRIES):
            locked = _try_lock(handle, shared=shared)
            if locked or _is_live(_read(path)) or (not shared and _replicas(home)):
                break
            time.sleep(_RETRY_S)
        if not locked:
            raise HomeInUseError(_refusal(home, path, shared=shared))
        if shared:
            with _claim(home, url) as me:
                # whatever an exclusive server that died left in the lock file is stale (we hold it shared):
                # emptied, it cannot be taken for a live server. Every replica writes the same (nothing).
                handle.truncate(0)
                handle.flush()
                yield me
            return
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


def _refusal(home: Path, path: Path, *, shared: bool) -> str:
    other = _read(path)
    if not shared:
        replicas = _replicas(home)
        if replicas:
            return (f"the home {home} is shared by {len(replicas)} ML server replica(s): {_names(replicas)}; start "
                    "this server with --shared-home (QUANTCREW_SERVER__SHARED_HOME=true) to join them, stop them "
                    "first, or give this server another home (QUANTCREW_HOME)")
    where = f" at {other.url}" if other is not None and other.url else ""
    pid = f" (pid {other.pid})" if other is not None else ""
    if shared:
        return (f"the home {home} is held by an ML server{where}{pid} that does not share it: a shared replica "
                "cannot join it; stop it first, or give the replicas another home (QUANTCREW_HOME)")
    return (f"the home {home} is in use by another ML server{where}{pid}: stop it first, or use it "
            f"(QUANTCREW_CLIENT__URL{'=' + other.url if other is not None and other.url else ''}), or give "
            "this server another home (QUANTCREW_HOME)")


@contextmanager
def _claim(home: Path, url: str | None) -> Iterator[RunningServer]:
    """This replica's claim file, locked for the block, removed at its end."""
    folder = home / REPLICAS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    me = RunningServer(url=url, pid=os.getpid(), shared=True)
    name = f"{me.pid}-{uuid.uuid4().hex[:8]}"
    tmp, final = folder / f".{name}.tmp", folder / f"{name}.json"
    handle = open(tmp, "w")  # noqa: SIM115 - held open for the block: closing it drops the lock
    try:
        _try_lock(handle)  # a new file nobody else opened: the lock is ours at once
        handle.write(json.dumps({"url": me.url, "pid": me.pid}))
        handle.flush()
        os.replace(tmp, final)  # appears whole and locked: a reader never sees it unlocked while we live
        try:
            yield me
        finally:
            final.unlink(missing_ok=True)
    finally:
        handle.close()
        tmp.unlink(missing_ok=True)


def running_servers(home: Path) -> list[RunningServer]:
    """Every live server that holds ``home``: the exclusive one, or each shared replica (oldest first).

    A lock file or claim whose lock nobody holds is stale: its server died without cleaning up.
    """
    path = home / LOCK_FILE
    if not path.exists():
        return []
    if fcntl is None:  # pragma: no cover - Windows: trust a live PID
        claim = _read(path)
        return [claim] if claim is not None and _is_live(claim) else _replicas(home)
    with open(path) as probe:
        if _try_lock(probe):  # nobody holds it: released as the probe closes
            return []
    claim = _read(path)
    if claim is not None:
        return [claim]
    return _replicas(home)


def running_server(home: Path) -> RunningServer | None:
    """The live server that holds ``home`` (with a URL, where a shared home has one), or None.

    None for no file, an empty or stale one, and a home held by nobody. For a shared home, the
    oldest live replica that knows its URL (else the oldest live one).
    """
    servers = running_servers(home)
    return next((s for s in servers if s.url), servers[0] if servers else None)
