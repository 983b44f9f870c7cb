"""``quantcrew-server``: it refuses to bind beyond loopback without a key unless told it is on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantcrew.ml_server.__main__ import bind_refusal, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.10", "example.org"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_non_loopback_bind_needs_a_key_or_insecure() -> None:
    refusal = bind_refusal("0.0.0.0", has_key=False, insecure=False)
    assert refusal is not None and "--insecure" in refusal and "QUANTCREW_SERVER__API_KEY" in refusal
    assert bind_refusal("0.0.0.0", has_key=True, insecure=False) is None
    assert bind_refusal("0.0.0.0", has_key=False, insecure=True) is None
    assert bind_refusal("127.0.0.1", has_key=False, insecure=False) is None


def _server(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantcrew.ml_server", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_server_exits_2_on_an_open_bind_without_a_key() -> None:
    proc = _server("--host", "0.0.0.0", "--port", "1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("quantcrew-server: refusing to bind '0.0.0.0' without an API key")
    assert "Traceback" not in proc.stderr


def test_server_exits_2_on_a_blank_key_naming_the_setting() -> None:
    proc = _server(QUANTCREW_SERVER__API_KEY=" ")
    assert proc.returncode == 2, proc.stderr
    assert "QUANTCREW_SERVER__API_KEY" in proc.stderr and "blank" in proc.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (("--replicas", "2"), "--replicas needs --ray"),
    (("--ray", "--replicas", "0"), "--replicas must be at least 1, got 0"),
    (("--ray", "--mcp-stdio"), "--ray and --mcp-stdio do not go together"),
])
def test_server_exits_2_on_flags_that_do_not_go_together(flags: tuple[str, ...], message: str) -> None:
    proc = _server(*flags)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"quantcrew-server: {message}"


HEAVY = ("quantcrew.ml_server.app", "fastapi", "uvicorn", "torch", "sklearn", "scipy", "hmmlearn")
"""What a served process loads; a refused one must not have."""


def test_a_second_server_on_a_held_home_is_refused_before_the_app_loads(tmp_path: Path) -> None:
    from quantcrew.config.server_lock import hold_home

    home = tmp_path / "home"
    # the entry point in a child process; it prints which of the server's heavy modules it had loaded on return
    code = ("import sys; from quantcrew.ml_server.__main__ import main; code = main(['--port', '7778']); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(code)")
    with hold_home(home, "http://127.0.0.1:7777"):
        proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "QUANTCREW_HOME": str(home)},
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("quantcrew-server: the home") and "http://127.0.0.1:7777" in proc.stderr
    assert proc.stdout.strip() == "[]"  # refused before the app, uvicorn or any model library was imported



def test_server_exits_2_on_a_bad_alert_rules_file_naming_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: slow\n    metric: no.such.metric\n    comparison: '>'\n    threshold: 1\n"
                     "    severity: warning\n")
    proc = _server(QUANTCREW_MONITOR__ALERT_RULES=str(rules), QUANTCREW_HOME=str(tmp_path / "home"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("quantcrew-server: ") and "Traceback" not in proc.stderr
    assert f"{rules}:3:" in proc.stderr and "no.such.metric" in proc.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_server_is_served_on_the_event_loop_its_settings_name(
        loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from quantcrew.config.settings import load_settings
    from quantcrew.ml_server import __main__ as entry

    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    # compute_threads 0: nothing capped in this test process
    entry._serve(load_settings(home=tmp_path, server={"preload": False, "event_loop": loop, "compute_threads": 0}))
    assert served["loop"] == loop


def test_asyncio_is_the_default_event_loop(tmp_path: Path) -> None:
    from quantcrew.config.settings import load_settings

    assert load_settings(home=tmp_path).server.event_loop == "asyncio"
