"""The container files of deploy/, read as the tests need them: Dockerfile instructions, the compose services,
the paths a service mounts, and the command and environment a container gets."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
SERVER_DOCKERFILE = DEPLOY / "docker" / "server.Dockerfile"
AGENT_DOCKERFILE = DEPLOY / "docker" / "agent.Dockerfile"
SECRETS_IN_CONTAINER = Path("/run/secrets")


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile's instructions, continuation lines joined, comments dropped: (KEYWORD, arguments)."""

    path: Path
    instructions: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        joined: list[str] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        assert not pending, f"{path}: a continuation line ends the file"
        return cls(path, tuple((line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined))

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"{self.path.name} has no {keyword}"
        return found[-1]

    @property
    def cmd(self) -> list[str]:
        """CMD in exec (JSON) form; shell form is refused: the process would not get SIGTERM."""
        cmd = json.loads(self.last("CMD"))
        assert isinstance(cmd, list) and all(isinstance(arg, str) for arg in cmd), cmd
        return cmd

    @property
    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command, in exec form."""
        _, _, command = self.last("HEALTHCHECK").partition("CMD ")
        check = json.loads(command)
        assert isinstance(check, list) and all(isinstance(arg, str) for arg in check), check
        return check

    @property
    def env(self) -> dict[str, str]:
        """Every ENV, in order (``K=V`` pairs)."""
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, sep, value = pair.partition("=")
                assert sep, f"{self.path.name}: ENV {pair!r} is not NAME=value"
                env[name] = value
        return env


@cache
def compose(path: Path = COMPOSE) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    found = compose()["services"][name]
    assert isinstance(found, dict)
    return found


def build_context(svc: dict[str, Any]) -> Path:
    """The folder a service's image is built from (relative to the compose file's folder)."""
    build = svc["build"]
    return (DEPLOY / str(build if isinstance(build, str) else build.get("context", "."))).resolve()


def build_dockerfile(svc: dict[str, Any]) -> Path:
    """The Dockerfile a service's image is built from (relative to its build context)."""
    build = svc["build"]
    return build_context(svc) / str("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))


def bind_mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def named_volumes(svc: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for volume in svc.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
        if not source.startswith((".", "/")):
            names.add(source)
    return names


def secret_mounts(svc: dict[str, Any]) -> dict[Path, str]:
    """Container path -> the compose secret mounted there."""
    mounts: dict[Path, str] = {}
    for secret in svc.get("secrets", []):
        source, target = (secret, secret) if isinstance(secret, str) else (secret["source"],
                                                                         secret.get("target", secret["source"]))
        mounts[SECRETS_IN_CONTAINER / target] = source
    return mounts


def secret_file(name: str) -> Path:
    """The host file of a compose secret."""
    return (DEPLOY / str(compose()["secrets"][name]["file"])).resolve()


def example_of(path: Path) -> Path:
    return path.with_name(path.name + ".example")


def command(name: str) -> list[str]:
    """The command a service's container runs: its compose ``command``, else its image's CMD."""
    svc = service(name)
    override = svc.get("command")
    if override is not None:
        return shlex.split(override) if isinstance(override, str) else [str(arg) for arg in override]
    return Dockerfile.read(build_dockerfile(svc)).cmd


def environment(name: str) -> dict[str, str]:
    """The environment a service's container gets from its image and the compose file (compose wins)."""
    svc = service(name)
    env = Dockerfile.read(build_dockerfile(svc)).env if "build" in svc else {}
    given = svc.get("environment", {})
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    env.update({key: str(value) for key, value in given.items()})
    return env


def published_ports(svc: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host address or None for all, host port) of each published port."""
    published: list[tuple[str | None, str]] = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            published.append((port.get("host_ip"), str(port.get("published", ""))))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            published.append((parts[0], parts[1]))
        elif len(parts) == 2:
            published.append((None, parts[0]))
        else:
            published.append((None, parts[0]))  # a container port alone: docker picks a host port on every address
    return published


def url_host_port(url: str) -> tuple[str, int]:
    match = re.fullmatch(r"https?://([^/:]+):(\d+)/?", url)
    assert match, f"not http://host:port: {url}"
    return match.group(1), int(match.group(2))


def mounted_secrets(name: str, folder: Path) -> Path:
    """``folder`` filled as /run/secrets is in the service's container, each secret from its example file."""
    folder.mkdir()
    for target, secret in secret_mounts(service(name)).items():
        shutil.copyfile(example_of(secret_file(secret)), folder / target.name)
    return folder


def in_container(env: dict[str, str], *, secrets: Path, home: Path) -> dict[str, str]:
    """A service's environment with its container paths (the secrets, the home volume) pointed at folders here."""
    mapped = {str(SECRETS_IN_CONTAINER): str(secrets), "/data": str(home)}
    return {key: mapped.get(value, value) for key, value in env.items()}
