"""Tool fixtures: an MLClient over the real app (TestClient), and one pointed at a dead port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.tools.client import MLClient


@pytest.fixture
def ml_client(settings: Settings) -> Iterator[MLClient]:
    with TestClient(create_app(settings)) as tc:
        yield MLClient(tc)


@pytest.fixture
def dead_server(settings: Settings) -> Settings:
    """Settings whose client points at a loopback port nothing listens on, with no retries."""
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"
    settings.client.retries = 0
    return settings
