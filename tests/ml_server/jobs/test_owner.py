"""Who owns a job, and when another process takes its owner for gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from quantcrew.ml_server.jobs.owner import JobOwner, host_key, owner_gone, pid_alive

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE_S = 60.0


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    assert not pid_alive(child.pid)
    return child.pid


def _gone(me: JobOwner, other: JobOwner | None, *, beat_age_s: float | None) -> bool:
    return owner_gone(me, owner=None if other is None else other.owner, host=None if other is None else other.host,
                      pid=None if other is None else other.pid,
                      heartbeat_at=None if beat_age_s is None else NOW - timedelta(seconds=beat_age_s), now=NOW,
                      lease_s=LEASE_S)


def test_owner_names_host_pid_and_a_token_unique_to_each_manager() -> None:
    first, second = JobOwner(), JobOwner()
    assert first.pid == second.pid == os.getpid() and first.host == second.host == host_key()
    assert host_key().startswith(socket.gethostname())
    assert first.owner != second.owner and first.owner.startswith(f"{host_key()}:{os.getpid()}:")


def test_a_row_without_owner_is_gone_and_ones_own_never_is() -> None:
    me = JobOwner()
    assert _gone(me, None, beat_age_s=0.0)
    assert not _gone(me, me, beat_age_s=10 * LEASE_S)


def test_on_this_host_a_dead_pid_is_gone_at_once_and_a_live_one_only_past_its_lease(dead_pid: int) -> None:
    me = JobOwner()
    assert _gone(me, JobOwner(pid=dead_pid), beat_age_s=0.0)
    sibling = JobOwner()  # another manager of a live process (here: ours)
    assert not _gone(me, sibling, beat_age_s=LEASE_S - 1)
    assert _gone(me, sibling, beat_age_s=LEASE_S + 1)  # alive but silent: hung, or its PID reused


def test_on_another_host_only_the_lease_counts(dead_pid: int) -> None:
    me = JobOwner()
    # the PID of another host (or PID namespace) says nothing here, even one that is dead here
    elsewhere = JobOwner(host="other-node/pid:[1]", pid=dead_pid)
    assert not _gone(me, elsewhere, beat_age_s=LEASE_S - 1)
    assert _gone(me, elsewhere, beat_age_s=LEASE_S + 1)
    assert _gone(me, elsewhere, beat_age_s=None)


@pytest.mark.parametrize("pid", [0, -1, 2**40])
def test_impossible_pids_are_not_alive(pid: int) -> None:
    assert not pid_alive(pid)
