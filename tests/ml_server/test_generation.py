"""The write counter shared through a memory map: seen at once by every process, never losing a bump."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from quantcrew.ml_server.generation import Generation


def test_a_new_counter_reads_zero_and_each_bump_adds_one(tmp_path: Path) -> None:
    counter = Generation(tmp_path / "g")
    assert counter.read() == 0
    counter.bump()
    counter.bump()
    assert counter.read() == 2
    counter.close()


def test_reopening_keeps_the_count(tmp_path: Path) -> None:
    first = Generation(tmp_path / "g")
    first.bump()
    first.close()
    again = Generation(tmp_path / "g")
    assert again.read() == 1
    again.close()


def test_a_bump_through_one_mapping_is_read_through_another_at_once(tmp_path: Path) -> None:
    reader, writer = Generation(tmp_path / "g"), Generation(tmp_path / "g")
    tag = reader.read()
    writer.bump()
    assert reader.read() == tag + 1
    reader.close()
    writer.close()


def test_bumps_from_threads_and_another_process_at_once_are_all_counted(tmp_path: Path) -> None:
    path = tmp_path / "g"
    counter = Generation(path)
    child = textwrap.dedent(f"""
        from pathlib import Path
        from quantcrew.ml_server.generation import Generation
        g = Generation(Path({str(path)!r}))
        for _ in range(2000):
            g.bump()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    threads = [threading.Thread(target=lambda: [counter.bump() for _ in range(1000)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(60) == 0
    assert counter.read() == 5000
    counter.close()


def test_the_counter_of_a_database_file_lies_beside_it(tmp_path: Path) -> None:
    counter = Generation.of(tmp_path / "registry.db")
    assert counter.path == tmp_path / "registry.db.generation"
    counter.close()
