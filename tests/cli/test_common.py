"""The helpers every command group shares: settings with overrides, symbol checks, the child's environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from pydantic import SecretStr

from quantcrew.cli.common import check_symbols, child_env, load_cli_settings, ml_server
from quantcrew.config.settings import Settings
from quantcrew.crew.server_process import LocalServer
from tests.support.servers import local_server


def test_load_cli_settings_applies_overrides_and_skips_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTCREW_CLIENT__URL", "http://127.0.0.1:1")
    settings = load_cli_settings(None, client__url=None, crew__max_llm_calls=7)
    assert settings.client.url == "http://127.0.0.1:1"
    assert settings.crew.max_llm_calls == 7


def test_load_cli_settings_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUANTCREW_CLIENT__TIMEOUT_S", "-1")
    with pytest.raises(typer.Exit) as info:
        load_cli_settings(None)
    assert info.value.exit_code == 2
    assert "QUANTCREW_CLIENT__TIMEOUT_S" in capsys.readouterr().err


def test_check_symbols_refuses_unknown_symbol_and_end_date_outside_the_data(settings: Settings) -> None:
    check_symbols(["SP500"], settings, "2010-06-30")
    for names, end in ((["SP500", "NOPE"], None), (["SP500"], "2030-01-01")):
        with pytest.raises(typer.Exit) as info:
            check_symbols(names, settings, end)
        assert info.value.exit_code == 2


def test_child_env_shares_home_and_server_key(settings: Settings) -> None:
    assert child_env(settings) == {"QUANTCREW_HOME": str(settings.home)}
    settings.server.api_key = SecretStr("s3cret")
    assert child_env(settings)["QUANTCREW_SERVER__API_KEY"] == "s3cret"


def test_ml_server_with_a_configured_url_starts_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("a server was started although --server-url was given")

    monkeypatch.setattr(LocalServer, "start", refuse)
    settings.client.url = "http://127.0.0.1:9"
    loaded: list[str] = []
    with ml_server(settings, Path("unused.yaml"), meanwhile=lambda: loaded.append("crew")):
        assert settings.client.url == "http://127.0.0.1:9"
        assert loaded == ["crew"]  # the command's own preparation ran before its block


# -- a second command, or a second server, on a home a server holds ------------------------------------------------
@pytest.fixture(scope="module")
def held_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalServer]]:
    """A home and the server holding it, shared by the tests below (one start instead of one each)."""
    home = tmp_path_factory.mktemp("held") / "home"
    with local_server(home) as first:
        yield home, first


@pytest.mark.integration
def test_ml_server_reuses_the_server_holding_the_home_and_leaves_it_running(
        held_home: tuple[Path, LocalServer]) -> None:
    import httpx

    from quantcrew.config.server_lock import running_server
    from quantcrew.config.settings import load_settings

    home, first = held_home
    held = running_server(home)
    assert held is not None and held.url == first.url
    settings = load_settings(home=home)

    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("a second server was started on a home that has one")

    loaded: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalServer, "start", refuse)
        with ml_server(settings, None, meanwhile=lambda: loaded.append("crew")):
            assert settings.client.url == first.url
            assert loaded == ["crew"]  # the command's own preparation ran before its block
    assert httpx.get(f"{first.url}/health", timeout=5).status_code == 200  # still running


@pytest.mark.integration
def test_second_server_on_a_home_in_use_exits_2_naming_the_first(held_home: tuple[Path, LocalServer]) -> None:
    import os
    import subprocess
    import sys

    from quantcrew.crew.server_process import free_port

    home, first = held_home
    second = subprocess.run(
        [sys.executable, "-m", "quantcrew.ml_server", "--port", str(free_port())],
        env={**os.environ, "QUANTCREW_HOME": str(home)}, capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 2
    assert "in use by another ML server" in second.stderr and first.url in second.stderr


@pytest.mark.integration
def test_a_stopped_server_frees_its_home(held_home: tuple[Path, LocalServer]) -> None:
    # last of the tests on the held home: it stops the server they share
    from quantcrew.config.server_lock import running_server

    home, first = held_home
    first.stop()
    assert not first.running
    assert running_server(home) is None


def test_a_console_on_a_pipe_keeps_whole_lines_unless_columns_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.table import Table

    from quantcrew.cli.common import PIPE_WIDTH, make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # a pipe: not a terminal
    piped = make_console()
    assert piped.width == PIPE_WIDTH
    table = Table("symbol", "regime (p)", "followed", "why")
    why = "the bandit chose conservative in the volatile regime; sized by the execution network " * 2
    table.add_row("NASDAQ", "volatile (0.93)", "conservative", why)
    with piped.capture() as captured:
        piped.print(table)
    text = captured.get()
    assert "volatile (0.93)" in text and "conservative" in text and why.strip() in text and "…" not in text
    monkeypatch.setenv("COLUMNS", "90")
    assert make_console().width == 90  # the user's choice wins


def test_ml_server_waits_for_a_server_that_holds_the_home_but_is_still_booting(tmp_path: Path) -> None:
    # the server takes the home's lock before its app loads: a live claim that does not answer yet is booting
    import http.server
    import threading

    from quantcrew.config.server_lock import hold_home
    from quantcrew.config.settings import load_settings
    from quantcrew.crew.server_process import free_port

    port = free_port()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    booted = http.server.ThreadingHTTPServer(("127.0.0.1", port), Health)
    serving = threading.Event()

    def serve() -> None:
        serving.set()
        booted.serve_forever()

    timer = threading.Timer(1.0, serve)  # answers /health one second from now
    settings = load_settings(home=tmp_path)

    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("a second server was started on a home whose server was booting")

    with hold_home(tmp_path, f"http://127.0.0.1:{port}"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalServer, "start", refuse)
        timer.start()
        try:
            with ml_server(settings, None):
                assert settings.client.url == f"http://127.0.0.1:{port}"
        finally:
            timer.cancel()
            if serving.is_set():
                booted.shutdown()
            booted.server_close()
