"""deploy/compose.yaml (and its GPU override), the Prometheus config and the Grafana provisioning, read as
docker compose, Prometheus and Grafana would read them: every file they name exists, the services find each
other by name and port, and the API key reaches the server, the scheduler and Prometheus from one secret."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcrew.config.settings import ServerSettings, load_settings
from quantcrew.ml_server.__main__ import bind_refusal
from tests.deploy.files import (
    COMPOSE_GPU,
    DEPLOY,
    PROMETHEUS_CONFIG,
    REPO,
    SECRETS_IN_CONTAINER,
    Dockerfile,
    bind_mounts,
    build_context,
    build_dockerfile,
    compose,
    environment,
    example_of,
    in_container,
    mounted_secrets,
    named_volumes,
    published_ports,
    secret_file,
    secret_mounts,
    service,
    url_host_port,
)

SERVICES = ("server", "scheduler", "prometheus", "grafana")


def _server_port() -> int:
    return int(environment("server").get("QUANTCREW_SERVER__PORT", ServerSettings().port))


def _prometheus() -> dict[str, Any]:
    loaded = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_four_services_are_defined_and_each_has_an_image_or_a_dockerfile_that_exists() -> None:
    services = compose()["services"]
    assert set(SERVICES) <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            assert build_dockerfile(svc).is_file(), f"{name}: {build_dockerfile(svc)}"
            assert build_context(svc) == REPO  # .dockerignore at the repository's root applies


def test_the_gpu_override_changes_only_the_server_build_and_reserves_a_gpu() -> None:
    override = compose(COMPOSE_GPU)["services"]
    assert set(override) == {"server"}
    server = override["server"]
    assert server["build"]["args"]["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu")
    assert "TORCH_INDEX" in " ".join(Dockerfile.read(build_dockerfile(service("server"))).all("ARG"))
    [device] = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_every_file_mounted_or_named_as_a_secret_exists_and_real_secrets_stay_out_of_git() -> None:
    declared_volumes = set(compose()["volumes"])
    declared_secrets = set(compose()["secrets"])
    for name, svc in compose()["services"].items():
        for target, host in bind_mounts(svc).items():
            assert host.exists(), f"{name} mounts {host} at {target}: missing"
            assert DEPLOY in host.parents, f"{name} mounts {host}, outside deploy/"
        assert named_volumes(svc) <= declared_volumes, name
        assert set(secret_mounts(svc).values()) <= declared_secrets, name
    for secret in declared_secrets:
        path = secret_file(secret)
        # the real secret is the operator's: the repository ships its example and ignores the file itself
        assert example_of(path).is_file() and example_of(path).read_text().strip(), secret
        if shutil.which("git") and (REPO / ".git").exists():
            ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
            assert ignored.returncode == 0, f"{path} is not git-ignored"
            shipped = subprocess.run(["git", "check-ignore", "-q", str(example_of(path))], cwd=REPO, check=False)
            assert shipped.returncode == 1, f"{example_of(path)} is git-ignored"


def test_no_port_is_published_beyond_this_host() -> None:
    for name, svc in compose()["services"].items():
        for host_ip, _ in published_ports(svc):
            assert host_ip == "127.0.0.1", f"{name} publishes a port on {host_ip or 'every address'}"
    assert ("127.0.0.1", str(_server_port())) in published_ports(service("server"))


def test_the_server_reads_its_key_from_the_secret_and_may_then_bind_every_address(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    env = environment("server")
    assert not any("API_KEY" in key for key in env), "the key belongs in a secret, not in the environment"
    secrets = mounted_secrets("server", tmp_path / "secrets")
    for key, value in in_container(env, secrets=secrets, home=tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    key = example_of(secret_file("api_key")).read_text().strip()
    assert settings.server.api_key is not None and settings.server.api_key.get_secret_value() == key
    assert settings.home == tmp_path / "home"
    assert bind_refusal("0.0.0.0", has_key=True, insecure=settings.server.insecure) is None
    # the container's command binds every address: without the secret it would be refused
    assert bind_refusal("0.0.0.0", has_key=False, insecure=settings.server.insecure) is not None


def test_the_scheduler_reaches_the_server_by_its_service_name_with_the_same_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment("scheduler")
    assert not any("API_KEY" in key for key in env)
    assert url_host_port(env["QUANTCREW_CLIENT__URL"]) == ("server", _server_port())
    assert set(secret_mounts(service("scheduler")).values()) == set(secret_mounts(service("server")).values())
    secrets = mounted_secrets("scheduler", tmp_path / "secrets")
    for key, value in in_container(env, secrets=secrets, home=tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.server.api_key is None  # the agent image is no server: only its client holds the key
    assert settings.client.api_key is not None
    assert settings.client.api_key.get_secret_value() == example_of(secret_file("api_key")).read_text().strip()
    assert settings.client.url == env["QUANTCREW_CLIENT__URL"]


def test_services_wait_for_dependencies_that_report_their_health() -> None:
    services = compose()["services"]
    waits = 0
    for name, svc in services.items():
        for dependency, how in svc.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on an unknown {dependency}"
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
            dep = services[dependency]
            has_check = "healthcheck" in dep or (
                "build" in dep and Dockerfile.read(build_dockerfile(dep)).all("HEALTHCHECK"))
            assert has_check, f"{name} waits for {dependency} to be healthy, which has no health check"
            waits += 1
    assert services["scheduler"]["depends_on"]["server"]["condition"] == "service_healthy"
    assert waits >= 3


def test_prometheus_scrapes_the_server_service_with_the_key_and_loads_the_alert_rules() -> None:
    prometheus = service("prometheus")
    mounts = bind_mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG  # the image's default config path
    config = _prometheus()
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "quantcrew-ml-server"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [targets] = [group["targets"] for group in job["static_configs"]]
    assert targets == [f"server:{_server_port()}"]
    # the bearer key is read from the secret that gives the server its key
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    credentials = Path(auth["credentials_file"])
    assert credentials.parent == SECRETS_IN_CONTAINER
    server_key = secret_mounts(service("server"))[SECRETS_IN_CONTAINER / "quantcrew_server__api_key"]
    assert secret_mounts(prometheus)[credentials] == server_key
    # every rule file is mounted from deploy/, and the monitoring issue's alert rules are among them
    rule_files = {mounts[path] for path in config["rule_files"]}
    assert DEPLOY / "prometheus" / "alert_rules.yml" in rule_files
    for path in rule_files:
        assert yaml.safe_load(path.read_text())["groups"], path


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboard() -> None:
    grafana = service("grafana")
    mounts = bind_mounts(grafana)
    datasources = mounts["/etc/grafana/provisioning/datasources"]
    [source] = [s for f in sorted(datasources.glob("*.y*ml")) for s in yaml.safe_load(f.read_text())["datasources"]]
    assert source["type"] == "prometheus" and source.get("isDefault") is True
    host, port = url_host_port(source["url"])
    assert host == "prometheus" and host in compose()["services"]
    assert ("127.0.0.1", str(port)) in published_ports(service("prometheus"))

    providers = mounts["/etc/grafana/provisioning/dashboards"]
    [provider] = [p for f in sorted(providers.glob("*.y*ml")) for p in yaml.safe_load(f.read_text())["providers"]]
    folder = provider["options"]["path"]
    dashboards = {target: host for target, host in mounts.items() if str(Path(target).parent) == folder}
    assert set(dashboards.values()) == {DEPLOY / "grafana" / "quantcrew-dashboard.json"}
    dashboard = json.loads((DEPLOY / "grafana" / "quantcrew-dashboard.json").read_text())
    # the dashboard's data source variable lists Prometheus sources: the provisioned one is the default
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == source["type"]
    assert secret_mounts(grafana), "the admin password comes from a secret"
    assert environment("grafana")["GF_SECURITY_ADMIN_PASSWORD__FILE"] in {str(path) for path in secret_mounts(grafana)}
