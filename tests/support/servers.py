"""ML servers that tests start in child processes: their settings, and one way to start them on a home.

A server no test trains a torch model on runs on the CPU (``QUANTCREW_SERVER__DEVICE=cpu``):
with the default ``auto`` it imports torch at start-up only to look for a GPU, seconds on every
start. The choice itself is covered where it is made (tests/ml_server/test_device.py), and the
in-process apps keep ``auto``. A server that trains keeps ``auto``: it needs torch anyway, and
loading it at start-up keeps those seconds out of the first job's time limit.
"""

from __future__ import annotations

from pathlib import Path

from quantcrew.crew.server_process import LocalServer

__all__ = ["CHILD_SERVER_ENV", "TRAINING_SERVER_ENV", "local_server"]

TRAINING_SERVER_ENV: dict[str, str] = {"QUANTCREW_SERVER__PRELOAD": "false"}
"""Settings for a child server that tests train torch models on."""
CHILD_SERVER_ENV: dict[str, str] = {**TRAINING_SERVER_ENV, "QUANTCREW_SERVER__DEVICE": "cpu"}
"""Settings for a child server (or a CLI's child server) that no test trains a torch model on."""


def local_server(home: Path, *, trains: bool = False) -> LocalServer:
    """A server (not started yet) on ``home``, logging to ``<home>/server.log``.

    Args:
        home: Its home (registry, artifacts, lock).
        trains: Tests train torch models on it (RL, ensemble, execution network).
    """
    env = TRAINING_SERVER_ENV if trains else CHILD_SERVER_ENV
    return LocalServer(env={"QUANTCREW_HOME": str(home), **env}, log_path=Path(home) / "server.log")
