"""Shared fixtures: a clean environment, settings in a temp home, real bars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.config.settings import Settings, get_settings, load_settings
from tests.support.offline import CREWAI_OFFLINE_ENV

# CrewAI sets its telemetry up when it is first imported, which for a test module importing the crew is at
# collection, before any fixture runs: its opt-outs must be in the environment from the start, or a background
# exporter may look up telemetry.crewai.com in whatever test is running when it wakes
for _name, _value in CREWAI_OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)

# pytest-xdist runs each worker with COLUMNS=80 in its environment; the CLI's consoles read it (the user's
# choice wins over their pipe width), so under workers every table would be squeezed to 80 columns where a
# plain run lays it out whole. Tests that need a width set it themselves.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No QUANTCREW_* from the developer's shell; CrewAI telemetry off; a throwaway home."""
    for name in list(os.environ):
        if name.startswith("QUANTCREW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QUANTCREW_HOME", str(tmp_path_factory.mktemp("home")))
    # servers started by tests load their model code when a test needs it (tests/ml_server/test_preload.py
    # covers the preload itself); on 2 cores a preload in every child server slows each start by seconds
    monkeypatch.setenv("QUANTCREW_SERVER__PRELOAD", "false")
    for name, value in (("CREWAI_DISABLE_TELEMETRY", "true"), ("CREWAI_DISABLE_TRACKING", "true"),
                        ("CREWAI_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true"),
                        ("CREWAI_DISABLE_VERSION_CHECK", "true")):
        monkeypatch.setenv(name, value)
    # crewAI writes kickoff outputs under XDG_DATA_HOME: keep them out of the real home
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no stray .env is read
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with home, registry and artifacts under tmp_path."""
    return load_settings(home=tmp_path / "home")
