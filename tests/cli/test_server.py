"""``quantcrew server`` hands the process over to the server's own entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.cli import server as server_module
from quantcrew.crew.server_process import free_port
from tests.support.servers import CHILD_SERVER_ENV


class _Execed(Exception):
    """Stands in for a successful exec, which never returns."""


def test_server_execs_the_entry_point_with_the_given_options(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    calls: list[tuple[str, list[str]]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise _Execed

    monkeypatch.setattr(os, "execv", execv)
    config = tmp_path / "settings.yaml"
    result = CliRunner().invoke(app, ["server", "--host", "0.0.0.0", "--port", "9000", "--config", str(config)])
    assert isinstance(result.exception, _Execed)
    assert calls == [(sys.executable, [sys.executable, "-m", "quantcrew.ml_server", "--host", "0.0.0.0",
                                       "--port", "9000", "--config", str(config)])]


def test_server_passes_insecure_to_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise _Execed

    monkeypatch.setattr(os, "execv", fake_execv)
    result = CliRunner().invoke(app, ["server", "--host", "0.0.0.0", "--insecure"])
    assert isinstance(result.exception, _Execed)
    assert calls[0][1][3:] == ["--host", "0.0.0.0", "--insecure"]


def test_server_argv_leaves_out_options_not_given() -> None:
    assert server_module.server_argv(None, None, None) == [sys.executable, "-m", "quantcrew.ml_server"]
    assert server_module.server_argv("", 0, None)[3:] == ["--port", "0"]


def test_server_argv_passes_the_replica_and_mcp_flags_through() -> None:
    argv = server_module.server_argv(None, None, None, ray=True, replicas=3, shared_home=True, mcp_stdio=False)
    assert argv[3:] == ["--ray", "--replicas", "3", "--shared-home"]
    assert server_module.server_argv(None, None, None, mcp_stdio=True)[3:] == ["--mcp-stdio"]


def test_server_exit_code_and_message_are_the_entry_points_when_settings_are_bad() -> None:
    env = {**os.environ, "QUANTCREW_CLIENT__TIMEOUT_S": "-1"}
    proc = subprocess.run([sys.executable, "-m", "quantcrew.cli", "server"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("quantcrew-server: ") and "QUANTCREW_CLIENT__TIMEOUT_S" in proc.stderr


@pytest.mark.slow  # the server loads its model stack: several seconds
def test_server_serves_in_the_cli_process_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "quantcrew.cli", "server", "--port", str(port)],
                            env={**os.environ, "QUANTCREW_HOME": str(tmp_path), **CHILD_SERVER_ENV},
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2.0).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready, proc.communicate(timeout=10)[0]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"quantcrew.ml_server" in cmdline  # the same pid now runs the server: no child in between
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output or proc.returncode == 0, output
