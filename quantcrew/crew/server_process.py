"""Start ``quantcrew-server`` as a child process on a free loopback port, and stop it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["LocalServer", "ServerStartError", "free_port"]


class ServerStartError(RuntimeError):
    """The child server exited or did not become ready in time; the message has its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """Context manager running the ML server in a child process until exit (Ctrl-C included).

    Args:
        host: Loopback address to bind.
        env: Extra environment for the child (settings travel as ``QUANTCREW_*`` variables).
        config_file: YAML settings file passed on to the child.
        ready_timeout_s: How long to wait for ``/ready``.
        log_path: Where the child's output goes (read back when it fails to start).
        base_env: The environment ``env`` is laid over (default: this process's, when the child starts).
        cwd: The child's working directory, where it reads a ``.env`` file (default: ours).
    """

    def __init__(self, *, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                 config_file: str | Path | None = None, ready_timeout_s: float = 90.0,
                 log_path: Path | None = None, base_env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._env = env or {}
        self._base_env = base_env
        self._cwd = cwd
        self._config_file = config_file
        self._ready_timeout_s = ready_timeout_s
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    def start(self, meanwhile: Callable[[], object] | None = None) -> LocalServer:
        """Spawn the child, run ``meanwhile`` while it boots, then wait until it answers ``/ready``.

        Args:
            meanwhile: Work of ours that overlaps the child's start-up (loading the crew, say);
                if it raises, the child is stopped and the error propagates.
        """
        cmd = [sys.executable, "-m", "quantcrew.ml_server", "--host", self.host, "--port", str(self.port),
               "--log-level", "warning"]
        if self._config_file is not None:
            cmd += ["--config", str(self._config_file)]
        log_path = self._log_path or Path(os.devnull)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        # A new session: Ctrl-C reaches only us, and we stop the child in order.
        self._proc = subprocess.Popen(cmd, env=self._child_env(), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=self._cwd)
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                self.stop()
                raise
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._ready_timeout_s
        # /ready needs the server's key when one is set (server.protect_ops): the child's own
        key = self._child_env().get("QUANTCREW_SERVER__API_KEY", "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=self.url, timeout=2.0, headers=headers) as http:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    self.stop()
                    raise ServerStartError(f"ML server exited with code {code} before it was ready{self._tail()}")
                try:
                    if http.get("/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"ML server not ready after {self._ready_timeout_s:.0f} s at {self.url}{self._tail()}")

    def _child_env(self) -> dict[str, str]:
        return {**(os.environ if self._base_env is None else self._base_env), **self._env}

    def _tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")[-2000:]
        return f"; its log ({self._log_path}) ends with:\n{text}" if text else ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait for a graceful shutdown, then SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log, self._log = self._log, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
