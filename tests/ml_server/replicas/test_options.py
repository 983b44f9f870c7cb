"""Serve's options from the settings: fixed replicas or autoscaling, GPUs shared out, refusals named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcrew.config.settings import Settings, load_settings
from quantcrew.ml_server.replicas.options import (
    DEPLOYMENT_NAME,
    OptionsError,
    cluster_cpus,
    deployment_options,
    gpus_per_replica,
    http_options,
    most_replicas,
    serve_url,
)


def _settings(**ray: object) -> Settings:
    settings = load_settings()
    for name, value in ray.items():
        setattr(settings.ray, name, value)
    return settings


def test_fixed_replicas_with_resources_per_replica() -> None:
    options = deployment_options(_settings(replicas=3, num_cpus=0.5), cluster_gpus=0)
    assert options["name"] == DEPLOYMENT_NAME and options["num_replicas"] == 3
    assert "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert options["max_ongoing_requests"] == 64 and options["logging_config"]["enable_access_log"] is False


def test_autoscaling_bounds_replace_the_fixed_count() -> None:
    settings = _settings(replicas=9, min_replicas=1, max_replicas=4, target_ongoing_requests=3.0)
    options = deployment_options(settings, cluster_gpus=0)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 4,
                                             "target_ongoing_requests": 3.0}
    assert most_replicas(settings) == 4


@pytest.mark.parametrize(("ray", "named"), [
    ({"min_replicas": 2}, "ray.max_replicas"),
    ({"max_replicas": 2}, "ray.min_replicas"),
    ({"min_replicas": 3, "max_replicas": 2}, "ray.min_replicas (3) is above ray.max_replicas (2)"),
    ({"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 100.0, "max_ongoing_requests": 10},
     "ray.target_ongoing_requests (100) is above ray.max_ongoing_requests (10)"),
    ({"num_gpus": 1.5}, "ray.num_gpus (1.5) must be at most 1 or a whole number"),
])
def test_settings_that_do_not_go_together_are_refused_by_name(ray: dict[str, object], named: str) -> None:
    with pytest.raises(OptionsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        deployment_options(_settings(**ray), cluster_gpus=1)


def test_gpus_asked_for_are_given_as_asked() -> None:
    assert gpus_per_replica(_settings(num_gpus=2.0), cluster_gpus=0) == 2.0
    assert gpus_per_replica(_settings(num_gpus=0.0), cluster_gpus=8) == 0.0


def test_one_gpu_is_shared_by_two_replicas() -> None:
    assert gpus_per_replica(_settings(replicas=2), cluster_gpus=1) == 0.5
    assert gpus_per_replica(_settings(replicas=2), cluster_gpus=0) == 0.0
    assert gpus_per_replica(_settings(replicas=2), cluster_gpus=4) == 1.0


@given(replicas=st.integers(1, 256), gpus=st.floats(0.0, 64.0, allow_nan=False))
def test_the_gpu_share_never_asks_for_more_than_the_cluster_has(replicas: int, gpus: float) -> None:
    share = gpus_per_replica(_settings(replicas=replicas), cluster_gpus=gpus)
    assert 0.0 <= share <= 1.0
    assert share * replicas <= gpus + 1e-9
    if gpus >= replicas:
        assert share == 1.0


def test_a_local_cluster_has_room_for_the_replicas_and_one_training_task() -> None:
    assert cluster_cpus(Settings(ray={"num_cpus": 1.0}), 2, machine_cpus=16) == 16
    assert cluster_cpus(Settings(ray={"num_cpus": 1.0}), 2, machine_cpus=2) == 3  # 2 held by replicas, 1 for a task
    assert cluster_cpus(Settings(ray={"num_cpus": 0.5, "task_num_cpus": 2}), 3, machine_cpus=1) == 4
    assert cluster_cpus(Settings(ray={"num_cpus": 1.0, "fan_out": False}), 2, machine_cpus=2) == 2


def test_http_options_and_url_follow_the_server_settings() -> None:
    settings = load_settings()
    settings.server.host, settings.server.port = "0.0.0.0", 9000
    assert http_options(settings) == {"host": "0.0.0.0", "port": 9000}
    assert serve_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"
    assert serve_url("::1", 9000) == "http://[::1]:9000"
