"""Which device torch models run on: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import importlib.util
from typing import Literal

__all__ = ["DeviceUnavailableError", "resolve_device"]


class DeviceUnavailableError(RuntimeError):
    """``cuda`` was asked for and none is there: refuse to start rather than run slowly."""


def resolve_device(requested: Literal["auto", "cpu", "cuda"]) -> str:
    """Resolve the configured device once, at start-up (torch is imported only here)."""
    if requested == "cpu":
        return "cpu"
    if importlib.util.find_spec("torch") is None:
        if requested == "cuda":
            raise DeviceUnavailableError("QUANTCREW_SERVER__DEVICE=cuda but torch is not installed")
        return "cpu"
    import torch

    has_cuda = bool(torch.cuda.is_available())
    if requested == "cuda" and not has_cuda:
        raise DeviceUnavailableError("QUANTCREW_SERVER__DEVICE=cuda but no CUDA device is visible; use auto or cpu")
    return "cuda" if has_cuda else "cpu"
