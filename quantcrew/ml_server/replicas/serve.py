"""Run the ML server on Ray Serve: ``quantcrew-server --ray [--replicas N]`` and ``serve run``'s app builder.

:func:`serve_ray` starts (or joins, ``ray.address``) a Ray cluster, deploys the app as
``ray.replicas`` replicas (or autoscaled between ``ray.min_replicas`` and ``ray.max_replicas``)
behind Serve's HTTP proxy on ``server.host:server.port``, and serves until SIGINT or SIGTERM.
:func:`build_app` is the same deployment for ``serve run deploy/ray/serve_config.yaml``.

Who checks what:

* the server's API key (``server.api_key``) is checked by the app in every replica, as under
  uvicorn: Serve's proxy passes the ``Authorization`` header through;
* Ray's token auth guards the cluster itself: the gRPC between Ray's processes, joining the
  cluster as a driver, the dashboard and job submission. It does not cover Serve's HTTP port.
  ``ray.token_auth`` (on by default) sets ``RAY_AUTH_MODE=token`` for the cluster started here
  and for joining one (``ray.address``); the token is ``ray.auth_token`` when set (a secret file
  works, as for the API key), else Ray's own sources (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), and a local cluster generates one into
  ``~/.ray/auth_token`` when there is none.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from quantcrew.config.server_lock import HomeInUseError, hold_home
from quantcrew.config.settings import RaySettings, Settings, SettingsError, load_settings
from quantcrew.ml_server.replicas.options import (
    APP_NAME,
    OptionsError,
    cluster_cpus,
    http_options,
    logging_config,
    most_replicas,
    serve_url,
)

if TYPE_CHECKING:
    from ray.serve.deployment import Application

__all__ = ["MISSING_RAY", "build_app", "ray_auth_env", "serve_ray"]

MISSING_RAY = ("--ray needs Ray Serve, which is not installed here: install the 'ray' extra "
               "(pip install 'quantcrew[ray]'), or run without --ray (one uvicorn process)")


def ray_auth_env(settings: Settings) -> dict[str, str]:
    """The environment that sets Ray's token auth as ``ray.token_auth`` and ``ray.auth_token`` say."""
    env = {"RAY_AUTH_MODE": "token" if settings.ray.token_auth else "disabled"}
    if settings.ray.auth_token is not None:
        env["RAY_AUTH_TOKEN"] = settings.ray.auth_token.get_secret_value()
    return env


def serve_ray(settings: Settings) -> int:
    """Serve the app as Ray Serve replicas until SIGINT or SIGTERM; the process's exit code.

    0 after a clean stop; 2 when it cannot start (no Ray, settings that do not go together, a
    home held by an exclusive server); 1 when the deployment fails (the message says why).
    """
    # Ray's token auth, explicit (older Ray releases start a cluster without it, and joining one by its address
    # takes the mode from the environment): set before Ray is imported, which reads it once per process
    os.environ.update(ray_auth_env(settings))
    try:
        import ray  # noqa: F401 - only to know it is there before anything starts
        from ray import serve  # noqa: F401
    except ImportError:
        print(f"quantcrew-server: {MISSING_RAY}", file=sys.stderr)
        return 2
    try:
        replicas = most_replicas(settings)
    except OptionsError as exc:
        print(f"quantcrew-server: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    if server.port == 0:  # Serve's proxy needs its port before it starts
        server.port = _free_port(server.host)
    url = serve_url(server.host, server.port)
    try:
        # taken here too, before Ray starts (seconds): a home held by an exclusive server refuses at once
        with hold_home(settings.home, url, shared=True):
            return _run(settings, url, replicas)
    except HomeInUseError as exc:
        print(f"quantcrew-server: {exc}", file=sys.stderr)
        return 2


def _run(settings: Settings, url: str, replicas: int) -> int:
    import ray
    from ray import serve

    from quantcrew.ml_server.replicas.deployment import bind

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_ray(settings, replicas)
        for sig in previous:  # after ray.init, which sets its own SIGTERM handler (a bare exit)
            signal.signal(sig, on_signal)
        try:
            serve.start(http_options=http_options(settings), logging_config=logging_config(settings))
            gpus = _cluster_gpus()
            app = bind(settings, url, cluster_gpus=gpus)
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)  # returns once the replicas run
            scaling = (f"{settings.ray.min_replicas}-{settings.ray.max_replicas} replicas (autoscaling)"
                       if settings.ray.max_replicas is not None else f"{settings.ray.replicas} replicas")
            auth = ray_auth_env(settings)["RAY_AUTH_MODE"]
            print(f"quantcrew ML server on Ray Serve at {url}: {scaling}, {gpus:g} GPUs in the cluster; Ray "
                  f"cluster {ray.get_runtime_context().gcs_address} (Ray token auth: {auth})",
                  file=sys.stderr, flush=True)
            while not stop.wait(1.0):
                pass
        except Exception as exc:  # noqa: BLE001 - a failed deployment ends the process with its reason
            print(f"quantcrew-server: the Ray Serve deployment failed: {exc}", file=sys.stderr)
            return 1
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _start_ray(settings: Settings, replicas: int) -> None:
    """Join ``ray.address``, or start a local cluster with Ray's token auth on."""
    import ray

    level: int = getattr(logging, settings.server.log_level.upper())
    if settings.ray.address is not None:
        ray.init(address=settings.ray.address, logging_level=level, log_to_driver=True)
        return
    cpus = cluster_cpus(settings, replicas, os.cpu_count() or 1)
    ray.init(num_cpus=cpus, include_dashboard=settings.ray.dashboard, logging_level=level, log_to_driver=True)


def _cluster_gpus() -> float:
    """GPUs in the Ray cluster this process is connected to (Ray's resource view: no CUDA library loaded here)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_app(args: dict[str, Any]) -> Application:
    """``serve run``'s application builder (``import_path: quantcrew.ml_server.replicas.serve:build_app``).

    Args:
        args: The config's ``args``: ``config`` (a quantcrew settings file; unset: the environment),
            ``url`` (where clients reach the proxy, written in the home's lock) and any ``ray.*``
            setting (``replicas``, ``min_replicas``, ``max_replicas``, ``num_gpus``...).

    Raises:
        SettingsError: a bad argument or setting (named).
    """
    import ray

    from quantcrew.ml_server.replicas.deployment import bind

    args = dict(args)
    config = args.pop("config", None)
    url = args.pop("url", None)
    settings = load_settings(config)
    unknown = sorted(set(args) - set(RaySettings.model_fields))
    if unknown:
        raise SettingsError(f"unknown serve config args {unknown}: expected config, url or a ray.* setting "
                            f"({', '.join(RaySettings.model_fields)})")
    try:
        settings.ray = RaySettings.model_validate({**settings.ray.model_dump(), **args})
    except ValueError as exc:
        raise SettingsError(f"bad serve config args: {exc}") from exc
    settings.server.shared_home = True
    return bind(settings, url, cluster_gpus=_cluster_gpus() if ray.is_initialized() else 0.0)
