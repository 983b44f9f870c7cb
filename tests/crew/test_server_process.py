"""``LocalServer``: a child ML server; the caller's own work overlaps its start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.servers import local_server


class _Refused(Exception):
    """What the caller's preparation raised."""


def test_work_done_while_the_child_boots_runs_after_the_spawn_and_its_error_stops_the_child(tmp_path: Path) -> None:
    server = local_server(tmp_path / "home")
    seen: list[subprocess.Popen[bytes] | None] = []

    def prepare() -> None:
        seen.append(server._proc)  # the child is already running: the two overlap
        raise _Refused

    with pytest.raises(_Refused):
        server.start(meanwhile=prepare)
    [child] = seen
    assert child is not None
    assert child.poll() is not None  # stopped (reaped), not left behind
    assert not server.running


def test_a_child_server_with_an_api_key_is_ready_and_keeps_its_routes_closed(tmp_path: Path) -> None:
    import httpx

    from quantcrew.crew.server_process import LocalServer
    from tests.support.servers import CHILD_SERVER_ENV

    home = tmp_path / "home"
    env = {"QUANTCREW_HOME": str(home), **CHILD_SERVER_ENV, "QUANTCREW_SERVER__API_KEY": "s3cret"}
    with LocalServer(env=env, log_path=home / "server.log", ready_timeout_s=60) as server:  # /ready needs the key
        assert httpx.get(f"{server.url}/ready", timeout=5).status_code == 401
        assert httpx.get(f"{server.url}/ready", headers={"Authorization": "Bearer s3cret"}, timeout=5).status_code \
            == 200


def test_a_child_given_its_environment_and_folder_reads_neither_our_settings_nor_our_dotenv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from quantcrew.crew.server_process import LocalServer, ServerStartError

    # ours: a bad setting in the environment and another in the .env of our folder
    monkeypatch.setenv("QUANTCREW_CLIENT__TIMEOUT_S", "-1")
    Path(".env").write_text("QUANTCREW_SERVER__MAX_ROWS=-1\n")
    # the child's: a folder whose .env has a bad setting of its own, so that it exits at once, naming it
    folder = tmp_path / "child-cwd"
    folder.mkdir()
    (folder / ".env").write_text("QUANTCREW_SERVER__MAX_COLUMNS=-1\n")
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    server = LocalServer(env={"QUANTCREW_HOME": str(home)}, log_path=home / "server.log", base_env=base, cwd=folder)
    with pytest.raises(ServerStartError, match="exited with code 2") as caught:
        server.start()
    said = str(caught.value)
    assert "QUANTCREW_SERVER__MAX_COLUMNS" in said
    assert "QUANTCREW_CLIENT__TIMEOUT_S" not in said and "QUANTCREW_SERVER__MAX_ROWS" not in said
