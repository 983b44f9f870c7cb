"""Ray Serve's options from the settings: replicas or autoscaling bounds, resources per replica, HTTP.

Pure functions over :class:`~quantcrew.config.settings.Settings` (no Ray import), so that the
rules are tested without a cluster and a bad combination is refused before Ray starts.
"""

from __future__ import annotations

import math
from typing import Any

from quantcrew.config.settings import Settings

__all__ = ["APP_NAME", "DEPLOYMENT_NAME", "OptionsError", "cluster_cpus", "deployment_options", "gpus_per_replica",
           "http_options", "logging_config", "most_replicas", "serve_url"]

APP_NAME = "quantcrew"
"""The Serve application (``serve status`` shows it)."""
DEPLOYMENT_NAME = "MLServer"
"""The one deployment of the application: the ingress replicas."""


class OptionsError(ValueError):
    """A combination of ``ray.*`` settings Serve cannot run; the message names the settings."""


def _autoscaling(settings: Settings) -> tuple[int, int] | None:
    """The (min, max) replica bounds when autoscaling is asked for, else None."""
    ray = settings.ray
    if ray.min_replicas is None and ray.max_replicas is None:
        return None
    if ray.min_replicas is None or ray.max_replicas is None:
        raise OptionsError("autoscaling needs both ray.min_replicas (QUANTCREW_RAY__MIN_REPLICAS) and "
                           "ray.max_replicas (QUANTCREW_RAY__MAX_REPLICAS); set both, or neither for a fixed "
                           "ray.replicas")
    if ray.min_replicas > ray.max_replicas:
        raise OptionsError(f"ray.min_replicas ({ray.min_replicas}) is above ray.max_replicas ({ray.max_replicas})")
    if ray.target_ongoing_requests > ray.max_ongoing_requests:
        raise OptionsError(f"ray.target_ongoing_requests ({ray.target_ongoing_requests:g}) is above "
                           f"ray.max_ongoing_requests ({ray.max_ongoing_requests}): a replica never gets that many")
    return ray.min_replicas, ray.max_replicas


def most_replicas(settings: Settings) -> int:
    """How many replicas may run at once: ``ray.replicas``, or ``ray.max_replicas`` when autoscaling."""
    bounds = _autoscaling(settings)
    return settings.ray.replicas if bounds is None else bounds[1]


def cluster_cpus(settings: Settings, replicas: int, machine_cpus: int) -> int:
    """Logical CPUs of a local cluster started for ``replicas`` replicas on a machine with ``machine_cpus`` cores.

    The machine's cores, and never fewer than the replicas reserve (so that more replicas than cores
    still start: they share the cores) plus, with ``ray.fan_out``, one training task: replicas hold
    their CPUs for as long as they run, and a cluster whose CPUs all sat under replicas would run
    every training job's pieces in turn.
    """
    reserved = math.ceil(settings.ray.num_cpus * replicas)
    task = math.ceil(settings.ray.task_num_cpus) if settings.ray.fan_out else 0
    return max(machine_cpus, reserved + task)


def gpus_per_replica(settings: Settings, cluster_gpus: float) -> float:
    """GPUs Ray reserves for each replica.

    ``ray.num_gpus`` when set. Unset, the cluster's GPUs are shared out: each replica gets
    ``cluster_gpus / most_replicas`` capped at one (two replicas on one GPU get half of it each and
    both see it; a replica never spans GPUs: the server runs a model on one device), and none when
    the cluster has no GPU.

    Raises:
        OptionsError: ``ray.num_gpus`` above one but not whole (Ray cannot split that).
    """
    asked = settings.ray.num_gpus
    if asked is not None:
        if asked > 1 and not float(asked).is_integer():
            raise OptionsError(f"ray.num_gpus ({asked:g}) must be at most 1 or a whole number")
        return float(asked)
    if cluster_gpus <= 0:
        return 0.0
    share = min(1.0, cluster_gpus / most_replicas(settings))
    return math.floor(share * 100) / 100  # Ray's resource granularity; never more than there is


def deployment_options(settings: Settings, cluster_gpus: float) -> dict[str, Any]:
    """Keyword arguments for ``serve.deployment``: replicas or autoscaling, resources, queueing.

    Args:
        settings: The settings tree (``ray.*``).
        cluster_gpus: GPUs the Ray cluster has (Ray's resource view; 0 without any).

    Raises:
        OptionsError: the ``ray.*`` settings do not go together.
    """
    ray = settings.ray
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": ray.num_cpus, "num_gpus": gpus_per_replica(settings, cluster_gpus)},
        "max_ongoing_requests": ray.max_ongoing_requests,
        "graceful_shutdown_timeout_s": ray.graceful_shutdown_s,
        "logging_config": logging_config(settings),
    }
    bounds = _autoscaling(settings)
    if bounds is None:
        options["num_replicas"] = ray.replicas
    else:
        low, high = bounds
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "initial_replicas": min(max(ray.replicas, low), high),
                                         "target_ongoing_requests": ray.target_ongoing_requests}
    return options


def logging_config(settings: Settings) -> dict[str, Any]:
    """Serve's logging for the replicas, the proxy and the controller: the server's level, no access log
    (as under uvicorn; ``/metrics`` counts the requests)."""
    return {"log_level": settings.server.log_level.upper(), "enable_access_log": False}


def http_options(settings: Settings) -> dict[str, Any]:
    """Serve's HTTP proxy options: the server's host and port."""
    return {"host": settings.server.host, "port": settings.server.port}


def serve_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches the proxy at."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
