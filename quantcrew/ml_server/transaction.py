"""The one write transaction every SQLite store of the server uses: ``BEGIN IMMEDIATE`` up front.

Taking the write lock before the first read makes a read-then-write step atomic across threads
and across processes (replicas on a shared home): a second writer waits on the busy timeout
instead of failing halfway with "database is locked".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["immediate"]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction on ``conn``: committed when it ends, rolled
    back when it raises (the exception goes on)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
