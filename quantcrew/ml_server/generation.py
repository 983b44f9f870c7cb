"""A write counter shared by every process on one home, read without a system call.

A store that caches what it read from SQLite needs to know, on each use, whether any process
(another replica on the same home included) has written since. Asking SQLite costs a statement
(``PRAGMA data_version`` or the row itself) and asking the file system a ``stat``: each releases
the GIL, and at 64 concurrent requests every release is a hand-off that costs far more than the
call (measured on the light predict path: the row's ``SELECT`` added about 0.15 ms a request).

:class:`Generation` is eight bytes in a file beside the database, mapped shared into every process
that opens it. A writer calls :meth:`Generation.bump` after its transaction has committed; a
reader takes :meth:`Generation.read` *before* it reads the database and keeps what it read tagged
with that value; the copy is good while ``read()`` still returns the tag. Why that is exact,
without a lock between processes:

* a write that commits after the tag was taken bumps the counter after it, so the tag goes stale;
* a copy read after a commit but tagged before its bump is newer than its tag: at worst reread.

That needs a counter that only grows: bumps are serialised by an exclusive ``flock`` on the file
(two system calls per write; reads take none), or two writers could both write ``n + 1`` and a
slow one could later write a value some reader had already tagged.

It holds only on one host: a memory map is not coherent across machines (a home on a network file
system shared by several hosts needs another store). A process that dies between its commit and
its bump leaves the others' copies stale until the next write; a writer outside the server (the
``sqlite3`` shell) never bumps, so a server must be restarted after such an edit.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Generation"]

_COUNTER = struct.Struct("<Q")


class Generation:
    """The counter kept in ``path`` (created holding 0 when missing).

    Args:
        path: The counter's file; every process that shares the store must open the same one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._lock = threading.Lock()  # a flock does not exclude the threads sharing this descriptor
        with self._exclusive():
            if os.fstat(self._fd).st_size < _COUNTER.size:
                os.ftruncate(self._fd, _COUNTER.size)  # grown with zeros: the counter starts at 0
        self._map = mmap.mmap(self._fd, _COUNTER.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def of(cls, db_path: Path) -> Generation:
        """The counter of the SQLite file ``db_path``: ``<db_path>.generation``, beside it.

        Every store on one file (the registry, the deployment stages) shares it, so a write to any
        of them is seen by the others' kept reads too.
        """
        return cls(Path(db_path).with_name(Path(db_path).name + ".generation"))

    def read(self) -> int:
        """The counter now: the tag to keep with whatever is read from the store next."""
        return int(_COUNTER.unpack_from(self._map, 0)[0])

    def bump(self) -> None:
        """Mark a committed write: every tag taken before it stops matching."""
        with self._exclusive():
            _COUNTER.pack_into(self._map, 0, self.read() + 1)  # 2**64 writes would take longer than anyone waits

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
