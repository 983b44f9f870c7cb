"""``bench/gpu_check.sh`` on a machine without a GPU: it runs what it can, prints its table and says so loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "no-wheels")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "GPU_CHECK_VENV": str(tmp_path / "venv"), **env})


@pytest.mark.slow
def test_without_a_gpu_the_check_runs_the_cpu_rows_and_exits_2(tmp_path: Path) -> None:
    # (this module must not name torch's device probe, nor its tests the device: the check runs the
    # tests of every module that does, selected by that word, and would run itself)
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("a GPU is present: this is the dry run of a machine without one")
    proc = _check(tmp_path, GPU_PYTHON=sys.executable, GPU_CHECK_ARGS="--quick")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "NO CUDA DEVICE" in out
    for case in ("MC VaR", "ensemble train epoch (lstm", "ensemble logits", "execution MC dropout", "batcher on",
                 "CUDA tests (pytest -k cuda)"):
        assert case in out, case
    assert " no " not in out.split("GPU check, none", 1)[1].split("NO CUDA DEVICE", 1)[0]  # no CPU check failed


def test_a_python_without_torch_is_not_run_and_says_why(tmp_path: Path) -> None:
    proc = _check(tmp_path, GPU_PYTHON="/bin/false")
    assert proc.returncode == 3
    assert "GPU CHECK NOT RUN" in proc.stderr and "cannot import torch" in proc.stderr
