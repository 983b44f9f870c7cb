"""The one ``BEGIN IMMEDIATE`` transaction of the server's stores, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from quantcrew.ml_server.transaction import immediate


def _open(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_a_block_that_ends_is_committed_and_one_that_raises_is_rolled_back(tmp_path: Path) -> None:
    conn = _open(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE t (x INTEGER)")
    with immediate(conn) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ValueError, match="boom"), immediate(conn) as tx:
        tx.execute("INSERT INTO t VALUES (2)")
        raise ValueError("boom")
    other = _open(tmp_path / "db.sqlite")
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not conn.in_transaction


def test_the_write_lock_is_taken_before_the_first_read(tmp_path: Path) -> None:
    first = _open(tmp_path / "db.sqlite")
    first.execute("CREATE TABLE t (x INTEGER)")
    second = _open(tmp_path / "db.sqlite", timeout=0.05)
    with immediate(first), pytest.raises(sqlite3.OperationalError, match="locked"), immediate(second):
        pass  # a second writer cannot even begin while the first holds the lock, though neither wrote yet
    with immediate(second) as tx:  # free again once the first block ended
        tx.execute("INSERT INTO t VALUES (3)")
    assert first.execute("SELECT x FROM t").fetchall() == [(3,)]
