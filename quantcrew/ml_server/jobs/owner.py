"""Who owns a job: the server process that runs it, and how another process tells whether it is gone.

Every job row records its owner: a token unique to the :class:`~quantcrew.ml_server.jobs.JobManager`
that submitted it (one per server process), the owner's host and PID, and a heartbeat (a UTC time
the owner moves forward every few seconds while it holds unfinished jobs). Another process on the
same registry judges an unfinished job's owner **gone** (:func:`owner_gone`) when:

* the row names no owner (written before owners were recorded: no live server can be running it,
  since such a server held the home exclusively); or
* the owner is on this host (same host name and the same PID namespace) and its PID is not
  alive: a crash or a kill is seen at once; or
* its heartbeat is older than the lease (``lease_s``): the owner is on another host or in another
  PID namespace, or its PID was reused, or it hangs.

A live owner is never judged gone while it keeps its heartbeat, so a replica starting beside it
never marks its jobs ``interrupted``. Across hosts the lease compares clocks: keep them in sync
(NTP) and the lease well above the heartbeat interval.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["JobOwner", "host_key", "owner_gone", "pid_alive"]


def host_key() -> str:
    """This process's host: its host name and, where Linux tells it, its PID namespace.

    Two containers may share a host name (host networking) while their PIDs live in different
    namespaces: a PID is comparable only between processes with the same key.
    """
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        return name
    return f"{name}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


@dataclass(frozen=True)
class JobOwner:
    """One server process's identity as its jobs record it."""

    host: str = field(default_factory=host_key)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def owner(self) -> str:
        """The value of the ``owner`` column: unique to this manager, readable by a person."""
        return f"{self.host}:{self.pid}:{self.token}"


def owner_gone(me: JobOwner, *, owner: str | None, host: str | None, pid: int | None,
               heartbeat_at: datetime | None, now: datetime, lease_s: float) -> bool:
    """Whether a job owned as described has lost its owner (see the module docstring).

    Args:
        me: This process (its own jobs are never gone to it).
        owner: The row's owner token (None: written before owners were recorded).
        host: The owner's :func:`host_key`.
        pid: The owner's PID.
        heartbeat_at: The owner's last heartbeat for the job (UTC).
        now: The time now (UTC).
        lease_s: How old a heartbeat may be before its owner counts as gone.
    """
    if owner is None:
        return True
    if owner == me.owner:
        return False
    if host == me.host and pid is not None and not pid_alive(pid):
        return True
    return heartbeat_at is None or now - heartbeat_at > timedelta(seconds=lease_s)
