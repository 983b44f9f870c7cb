"""One real ``quantcrew-server --ray --replicas 2`` for the package's tests, started once.

A local Ray cluster with token auth (its token given as the ``ray.auth_token`` setting: nothing is
written to ``~/.ray``), Serve's proxy on a free port, an API key, preload off, each replica reserving half a
CPU. It is stopped with SIGTERM after the package's last test, which must end it with exit 0
and leave no live claim on the home.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from quantcrew.config.server_lock import running_servers
from quantcrew.crew.server_process import free_port

KEY = "ray-test-key"
REPLICA = "x-quantcrew-replica"
START_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class RayServer:
    """The running server: its proxy's URL, its home and log, the Ray cluster's address and token."""

    url: str
    home: Path
    log: Path
    gcs_address: str
    ray_token: str

    def client(self, *, key: str | None = KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)


def cannot_run_ray() -> str | None:
    """Why a local Ray cluster cannot start here (None when it can)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return "no writable /dev/shm: Ray's object store cannot start"
    return None


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="package")
def ray_turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist each worker sets the package up for its own modules: their Ray clusters take turns."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    import fcntl

    # the workers' base temp folders share this parent, one per run
    with open(tmp_path_factory.getbasetemp().parent / "ray-cluster.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="package")
def ray_server(tmp_path_factory: pytest.TempPathFactory, ray_turn: None) -> Iterator[RayServer]:
    pytest.importorskip("ray.serve")
    reason = cannot_run_ray()
    if reason is not None:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("ray-home")
    log = tmp_path_factory.mktemp("ray-log") / "server.log"
    port = free_port()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTCREW_", "RAY_"))}
    env.update(QUANTCREW_HOME=str(home), QUANTCREW_SERVER__PRELOAD="false", QUANTCREW_SERVER__API_KEY=KEY,
               QUANTCREW_RAY__NUM_CPUS="0.5", QUANTCREW_RAY__AUTH_TOKEN=token)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantcrew.ml_server", "--ray", "--replicas", "2", "--port", str(port),
             "--log-level", "warning"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        # the server says so once every replica runs (the proxy answers from the first one on)
        while (up := re.search(rf"on Ray Serve at {re.escape(url)}: .* Ray cluster (\S+) \(Ray token auth: token\)",
                               log.read_text(errors="replace"))) is None:
            assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"not up in {START_TIMEOUT_S:.0f} s:\n{tail(log)}"
            time.sleep(0.5)
        yield RayServer(url, home, log, up.group(1), token)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, tail(log)
        assert running_servers(home) == [], "a stopped deployment left a live claim on the home"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own processes are in the server's session
            proc.wait(10)
