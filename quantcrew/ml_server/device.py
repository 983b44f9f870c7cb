"""Which device torch models run on: ``auto`` picks CUDA when present, else CPU.

Importing torch costs seconds, and the server resolves its device at every start. So ``auto``
asks torch only when a CUDA device could be visible: :func:`cuda_ruled_out` first looks for what
CUDA cannot do without, reading files only: a torch built with CUDA (or ROCm), a GPU driver's
device file, and ``CUDA_VISIBLE_DEVICES`` not hiding every GPU. When one is missing, ``auto`` is
the CPU and the torch families load torch with their first request (or the preload thread does).
An explicit ``cuda`` always asks torch.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

__all__ = ["GPU_DEVICE_FILES", "DeviceUnavailableError", "cuda_ruled_out", "resolve_device", "torch_build"]

logger = logging.getLogger(__name__)

GPU_DEVICE_FILES: tuple[str, ...] = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")
"""Files a Linux GPU driver provides, one of which CUDA needs: NVIDIA's, WSL's (``dxg``) and ROCm's (``kfd``)."""


class DeviceUnavailableError(RuntimeError):
    """``cuda`` was asked for and none is there: refuse to start rather than run slowly."""


def resolve_device(requested: Literal["auto", "cpu", "cuda"]) -> str:
    """Resolve the configured device once, at start-up.

    ``auto`` imports torch only when :func:`cuda_ruled_out` cannot rule CUDA out; ``cuda`` always
    imports it, to refuse a start without a GPU.

    Raises:
        DeviceUnavailableError: ``cuda`` was asked for and torch or a visible CUDA device is missing.
    """
    if requested == "cpu":
        return "cpu"
    spec = importlib.util.find_spec("torch")
    if spec is None:
        if requested == "cuda":
            raise DeviceUnavailableError("QUANTCREW_SERVER__DEVICE=cuda but torch is not installed")
        return "cpu"
    if requested == "auto":  # even when torch is loaded, or loading in the preload thread: no wait for it
        where = spec.submodule_search_locations
        reason = cuda_ruled_out(Path(where[0]) if where else None)
        if reason is not None:
            logger.info("device auto: cpu, since %s", reason)
            return "cpu"
    import torch

    has_cuda = bool(torch.cuda.is_available())
    if requested == "cuda" and not has_cuda:
        raise DeviceUnavailableError("QUANTCREW_SERVER__DEVICE=cuda but no CUDA device is visible; use auto or cpu")
    return "cuda" if has_cuda else "cpu"


def cuda_ruled_out(torch_dir: Path | None, *, environ: Mapping[str, str] | None = None,
                   device_files: Sequence[str] = GPU_DEVICE_FILES, platform: str | None = None) -> str | None:
    """Why no CUDA device can be visible to this process, told without importing torch; None when one may be.

    Args:
        torch_dir: The installed ``torch`` package folder (its ``version.py`` says how it was built).
        environ: The environment (default: this process's).
        device_files: The GPU driver files to look for (on Linux only).
        platform: ``sys.platform`` (default: this one's).
    """
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    build = torch_build(torch_dir) if torch_dir is not None else None
    if build is not None and build == {"cuda": None, "hip": None}:
        return "torch is a CPU-only build"
    if (platform or sys.platform).startswith("linux") and not any(Path(f).exists() for f in device_files):
        return "no GPU driver on this machine"
    return None


def torch_build(torch_dir: Path) -> dict[str, str | None] | None:
    """The CUDA and ROCm versions torch was built with, from its ``version.py`` without importing it.

    None when the file is missing or does not say both plainly (the caller then asks torch itself).
    """
    try:
        tree = ast.parse((torch_dir / "version.py").read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, str | None] = {}
    for node in tree.body:
        target, value = ((node.targets[0] if len(node.targets) == 1 else None, node.value)
                         if isinstance(node, ast.Assign) else
                         (node.target, node.value) if isinstance(node, ast.AnnAssign) else (None, None))
        if (isinstance(target, ast.Name) and target.id in ("cuda", "hip") and isinstance(value, ast.Constant)
                and (value.value is None or isinstance(value.value, str))):
            found[target.id] = value.value
    return found if set(found) == {"cuda", "hip"} else None
