"""The served process imports its torch / SB3 model code in the background; a failing import never stops it."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from quantcrew.ml_server.preload import preload


def test_preload_imports_the_model_code_in_a_background_thread() -> None:
    code = ("import sys; from quantcrew.ml_server.preload import preload; t = preload(); "
            "assert t.daemon and t.name == 'quantcrew-preload'; t.join(120); "
            "sys.exit(int(not all(m in sys.modules for m in ('torch', 'stable_baselines3', 'skops.io', "
            "'quantcrew.ml_server.services.ensemble.model'))))")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=180).returncode == 0


def test_a_module_that_fails_to_import_is_logged_and_the_rest_still_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="quantcrew.ml_server.preload"):
        preload(("quantcrew.no_such_module", "json")).join(30)
    assert "preloading quantcrew.no_such_module failed" in caplog.text
    assert "json" in sys.modules
