"""One ML server per home: the lock file, held for the server's life, read by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantcrew.config.server_lock import LOCK_FILE, HomeInUseError, hold_home, running_server


def test_holding_a_home_names_the_server_until_released(tmp_path: Path) -> None:
    with hold_home(tmp_path, "http://127.0.0.1:9999") as me:
        assert me.pid == os.getpid()
        assert running_server(tmp_path) == me
        assert json.loads((tmp_path / LOCK_FILE).read_text()) == {"url": "http://127.0.0.1:9999", "pid": os.getpid()}
    assert running_server(tmp_path) is None


def test_second_holder_is_refused_with_the_first_ones_url(tmp_path: Path) -> None:
    with (hold_home(tmp_path, "http://127.0.0.1:9999"), pytest.raises(HomeInUseError) as err,
          hold_home(tmp_path, "http://127.0.0.1:8888")):
        pass
    message = str(err.value)
    assert "http://127.0.0.1:9999" in message and f"pid {os.getpid()}" in message and "QUANTCREW_HOME" in message


def test_home_is_free_again_after_a_refusal(tmp_path: Path) -> None:
    with hold_home(tmp_path, "http://a:1"), pytest.raises(HomeInUseError), hold_home(tmp_path, "http://b:2"):
        pass
    with hold_home(tmp_path, "http://b:2") as me:
        assert running_server(tmp_path) == me


def test_stale_file_of_a_dead_server_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 999_999}))
    assert running_server(tmp_path) is None
    with hold_home(tmp_path, "http://127.0.0.1:2") as me:  # and it does not block a new server
        assert running_server(tmp_path) == me


@pytest.mark.parametrize("content", ["", "not json", '{"url": "x"}'])
def test_unreadable_lock_file_means_no_server(tmp_path: Path, content: str) -> None:
    (tmp_path / LOCK_FILE).write_text(content)
    assert running_server(tmp_path) is None


def test_lock_held_by_another_process_is_seen_and_refused(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from quantcrew.config.server_lock import hold_home\n"
        "with hold_home(Path(sys.argv[1]), 'http://127.0.0.1:7777'):\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        found = running_server(tmp_path)
        assert found is not None and found.pid == child.pid and found.url == "http://127.0.0.1:7777"
        with pytest.raises(HomeInUseError, match="7777"), hold_home(tmp_path, None):
            pass
    finally:
        child.kill()
        child.wait(10)
    assert running_server(tmp_path) is None  # the kernel dropped the lock with the process
