"""Server fixtures: an app on a temp registry, a TestClient, realistic payloads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as tc:
        yield tc


@pytest.fixture(scope="session")
def sp500_payload() -> dict[str, Any]:
    """The last 300 real S&P 500 bars as a wire payload."""
    from quantcrew.data import load_sample, to_payload_dict

    return to_payload_dict(load_sample("SP500").tail(300))
