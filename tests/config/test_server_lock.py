"""One ML server per home: the lock file, held for the server's life, read by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantcrew.config.server_lock import (
    LOCK_FILE,
    REPLICAS_DIR,
    HomeInUseError,
    hold_home,
    running_server,
    running_servers,
)


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


# -- shared mode: the replicas of one deployment -----------------------------------------------------------------

_HOLD = (
    "import sys, time; from pathlib import Path; from quantcrew.config.server_lock import hold_home\n"
    "with hold_home(Path(sys.argv[1]), sys.argv[2], shared=sys.argv[3] == 'shared'):\n"
    "    print('held', flush=True); time.sleep(30)\n"
)


def _holder(home: Path, url: str, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(home), url, mode], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def _kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(10)


def test_shared_replicas_coexist_and_each_is_named(tmp_path: Path) -> None:
    with hold_home(tmp_path, "http://127.0.0.1:7001", shared=True) as one, \
            hold_home(tmp_path, None, shared=True) as two:  # a replica whose port is not known yet
        assert one.shared and two.shared and one.pid == two.pid == os.getpid()
        assert set(running_servers(tmp_path)) == {one, two}
        assert running_server(tmp_path) == one  # the one with a URL, for the CLI to use
        assert len(list((tmp_path / REPLICAS_DIR).glob("*.json"))) == 2
    assert running_servers(tmp_path) == [] and running_server(tmp_path) is None
    assert list((tmp_path / REPLICAS_DIR).iterdir()) == []  # each removed its claim


def test_an_exclusive_server_is_refused_while_replicas_share_the_home(tmp_path: Path) -> None:
    child = _holder(tmp_path, "http://127.0.0.1:7002", "shared")
    try:
        with pytest.raises(HomeInUseError) as err, hold_home(tmp_path, "http://127.0.0.1:7003"):
            pass
        message = str(err.value)
        assert "shared by 1 ML server replica(s)" in message and "http://127.0.0.1:7002" in message
        assert f"pid {child.pid}" in message and "--shared-home" in message
        with hold_home(tmp_path, "http://127.0.0.1:7004", shared=True) as me:  # another replica may join
            assert {s.url for s in running_servers(tmp_path)} == {"http://127.0.0.1:7002", me.url}
    finally:
        _kill(child)
    assert running_server(tmp_path) is None


def test_a_replica_is_refused_while_an_exclusive_server_holds_the_home(tmp_path: Path) -> None:
    child = _holder(tmp_path, "http://127.0.0.1:7005", "exclusive")
    try:
        with pytest.raises(HomeInUseError) as err, hold_home(tmp_path, "http://127.0.0.1:7006", shared=True):
            pass
        message = str(err.value)
        assert "does not share it" in message and "http://127.0.0.1:7005" in message and f"pid {child.pid}" in message
        assert running_servers(tmp_path) == [running_server(tmp_path)]
    finally:
        _kill(child)


def test_a_killed_replicas_claim_is_stale_and_removed(tmp_path: Path) -> None:
    dead, alive = _holder(tmp_path, "http://127.0.0.1:7007", "shared"), _holder(tmp_path, "http://127.0.0.1:7008",
                                                                                "shared")
    try:
        _kill(dead)
        assert len(list((tmp_path / REPLICAS_DIR).glob("*.json"))) == 2  # its file is still there...
        assert [s.url for s in running_servers(tmp_path)] == ["http://127.0.0.1:7008"]  # ...but not trusted
        assert len(list((tmp_path / REPLICAS_DIR).glob("*.json"))) == 1  # and removed by whoever looked
        (tmp_path / REPLICAS_DIR / "999999-deadbeef.json").write_text('{"url": "http://x:1", "pid": 999999}')
        assert [s.url for s in running_servers(tmp_path)] == ["http://127.0.0.1:7008"]  # a claim nobody locks: stale
    finally:
        _kill(alive)
    assert running_servers(tmp_path) == []
    with hold_home(tmp_path, "http://127.0.0.1:7009") as me:  # nothing left blocks an exclusive server
        assert running_server(tmp_path) == me


def test_a_replica_clears_the_claim_a_killed_exclusive_server_left(tmp_path: Path) -> None:
    child = _holder(tmp_path, "http://127.0.0.1:7010", "exclusive")
    _kill(child)
    assert "7010" in (tmp_path / LOCK_FILE).read_text()  # left behind
    with hold_home(tmp_path, "http://127.0.0.1:7011", shared=True) as me:
        assert (tmp_path / LOCK_FILE).read_text() == ""
        assert running_server(tmp_path) == me
