"""Device selection: auto falls back to CPU, an explicit cuda without a GPU refuses to start."""

from __future__ import annotations

import pytest

from quantcrew.ml_server.device import DeviceUnavailableError, resolve_device


def test_cpu_is_always_cpu() -> None:
    assert resolve_device("cpu") == "cpu"


def test_auto_picks_cuda_only_when_available() -> None:
    torch = pytest.importorskip("torch")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_gpu_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        resolve_device("cuda")
