"""Keep CrewAI offline in tests: its opt-out variables plus a guard that refuses non-loopback sockets.

CrewAI (1.15) reaches out on its own unless told not to: OpenTelemetry spans to
telemetry.crewai.com (off with ``CREWAI_DISABLE_TELEMETRY`` / ``CREWAI_DISABLE_TRACKING`` /
``OTEL_SDK_DISABLED``), its trace uploads and first-run trace prompt (off with
``CREWAI_TRACING_ENABLED=false``; without it a kickoff also stalls 5 s per agent waiting for
an LLM-call event), and a PyPI version check when a crew is verbose (off with
``CREWAI_DISABLE_VERSION_CHECK``). It also writes under the user's data directory, which
``isolate_crewai`` points at a temporary folder.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CREWAI_OFFLINE_ENV", "block_non_loopback", "isolate_crewai"]

CREWAI_OFFLINE_ENV: dict[str, str] = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}
_PROVIDER_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_MODEL_NAME", "MODEL", "BASE_URL")


def _is_loopback(host: Any) -> bool:
    if host in (None, "localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host)).is_loopback
    except ValueError:
        return False


def block_non_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse DNS look-ups and connections to anything but loopback for the rest of the test.

    Returns:
        The list that every refused attempt is appended to (``"dns <host>"``, ``"connect <addr>"``),
        so a test can assert it stayed empty even where CrewAI swallows the error.
    """
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            attempts.append(f"dns {host}")
            raise socket.gaierror(f"network disabled in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def _allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return True
        if isinstance(address, tuple) and _is_loopback(address[0]):
            return True
        attempts.append(f"connect {address}")
        return False

    def connect(self: socket.socket, address: Any) -> None:
        if not _allowed(self, address):
            raise ConnectionRefusedError(f"network disabled in tests: {address}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _allowed(self, address):
            raise ConnectionRefusedError(f"network disabled in tests: {address}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def isolate_crewai(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Set CrewAI's opt-outs, drop provider variables, redirect its data dirs, block the network.

    Returns:
        The refused-attempts list from :func:`block_non_loopback`.
    """
    for name, value in CREWAI_OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    for name in _PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return block_non_loopback(monkeypatch)
