"""Import the server's heavy model code in the background at start-up.

The families import torch and stable-baselines3 lazily, and the registry imports skops (which
loads every scikit-learn estimator) with the first model it stores or loads, so that the app
(and every test that builds one) starts without them. A served process does better to pay that
cost while it is idle: the first RL, ensemble or execution request of a fresh server, and its
first fit, otherwise wait seconds for imports. Only the server's entry point calls
:func:`preload`; the device is resolved without these imports (``quantcrew.ml_server.device``),
so the server answers ``/ready`` while they run.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

__all__ = ["MODULES", "preload"]

logger = logging.getLogger(__name__)

MODULES: tuple[str, ...] = (
    "quantcrew.ml_server.services.rl.policy",
    "quantcrew.ml_server.services.ensemble.model",
    "quantcrew.ml_server.services.execution.model",
    "skops.io",
)
"""The adapters whose imports bring in torch and stable-baselines3, and the registry's estimator format."""


def preload(modules: tuple[str, ...] = MODULES) -> threading.Thread:
    """Start a daemon thread importing ``modules``; a module that fails is logged and skipped."""

    def run() -> None:
        started = time.perf_counter()
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a preload never stops the server; the request says what is wrong
                logger.warning("preloading %s failed; it will load with its first request", name, exc_info=True)
        logger.info("model code preloaded in %.1f s", time.perf_counter() - started)

    thread = threading.Thread(target=run, name="quantcrew-preload", daemon=True)
    thread.start()
    return thread
