"""Device selection: auto falls back to CPU (without loading torch when CUDA is ruled out), an explicit cuda
without a GPU refuses to start."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantcrew.ml_server.device import DeviceUnavailableError, cuda_ruled_out, resolve_device, torch_build

CPU_BUILD = ("from typing import Optional\n__version__ = '2.3.0+cpu'\ncuda: Optional[str] = None\n"
             "hip: Optional[str] = None\n")
CUDA_BUILD = "__version__ = '2.3.0+cu121'\ncuda = '12.1'\nhip = None\n"
ROCM_BUILD = "__version__ = '2.3.0+rocm6.0'\ncuda = None\nhip = '6.0.32830'\n"


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


def _torch_dir(tmp_path: Path, version_py: str | None) -> Path:
    folder = tmp_path / "torch"
    folder.mkdir(parents=True)
    if version_py is not None:
        (folder / "version.py").write_text(version_py)
    return folder


@pytest.mark.parametrize(("version_py", "build"), [
    (CPU_BUILD, {"cuda": None, "hip": None}),
    (CUDA_BUILD, {"cuda": "12.1", "hip": None}),
    (ROCM_BUILD, {"cuda": None, "hip": "6.0.32830"}),
    ("cuda = None\n", None),  # says nothing of ROCm: not known
    ("cuda = _detect()\nhip = None\n", None),  # not a plain value: not known
    ("cuda = None\nhip = None\ndef broken(:\n", None),
    (None, None),  # no version.py
])
def test_torch_build_is_read_from_its_version_file_or_not_known(tmp_path: Path, version_py: str | None,
                                                                build: dict[str, str | None] | None) -> None:
    assert torch_build(_torch_dir(tmp_path, version_py)) == build


def test_cuda_is_ruled_out_by_a_cpu_build_a_hidden_gpu_or_a_missing_driver(tmp_path: Path) -> None:
    driver = tmp_path / "nvidiactl"
    driver.touch()
    present, absent = [str(driver)], [str(tmp_path / "no-such-device")]
    cpu, cuda, rocm = (_torch_dir(tmp_path / name, text) for name, text in
                       (("cpu", CPU_BUILD), ("cuda", CUDA_BUILD), ("rocm", ROCM_BUILD)))
    linux = {"platform": "linux", "environ": {}}
    assert cuda_ruled_out(cpu, device_files=present, **linux) == "torch is a CPU-only build"  # type: ignore[arg-type]
    assert cuda_ruled_out(cuda, device_files=absent, **linux) == "no GPU driver on this machine"  # type: ignore[arg-type]
    for hidden in ("", "-1"):
        assert cuda_ruled_out(cuda, device_files=present, platform="linux",
                              environ={"CUDA_VISIBLE_DEVICES": hidden}) == "CUDA_VISIBLE_DEVICES hides every GPU"
    # CUDA possible: torch is asked
    assert cuda_ruled_out(cuda, device_files=present, **linux) is None  # type: ignore[arg-type]
    assert cuda_ruled_out(rocm, device_files=present, **linux) is None  # type: ignore[arg-type]
    assert cuda_ruled_out(None, device_files=present, **linux) is None  # type: ignore[arg-type]
    assert cuda_ruled_out(cuda, device_files=present, platform="linux", environ={"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert cuda_ruled_out(cuda, device_files=absent, platform="win32", environ={}) is None  # no driver files known


def test_auto_in_a_fresh_process_agrees_with_torch_and_loads_it_only_when_cuda_is_possible() -> None:
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.submodule_search_locations
    possible = cuda_ruled_out(Path(spec.submodule_search_locations[0])) is None
    code = ("import json, sys; from quantcrew.ml_server.device import resolve_device; "
            "print(json.dumps([resolve_device('auto'), 'torch' in sys.modules]))")
    device, loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True, timeout=120).stdout)
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded == possible
