"""``quantcrew-server`` / ``python -m quantcrew.ml_server``: run the ML server with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings

__all__ = ["bind_refusal", "is_loopback", "main"]


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load settings (failing fast with a clear message), serve."""
    parser = argparse.ArgumentParser(prog="quantcrew-server", description="Run the quantcrew ML server.")
    parser.add_argument("--host", help="bind address (default from settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (0 picks a free one; default from settings: 8765)")
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without an API key (anyone who reaches the port can use "
                             "the server); same as QUANTCREW_SERVER__INSECURE=true")
    parser.add_argument("--shared-home", action="store_true",
                        help="share the home with other server processes (replicas of one deployment): the lock is "
                             "taken shared, each process owns its jobs; same as QUANTCREW_SERVER__SHARED_HOME=true")
    parser.add_argument("--mcp-stdio", action="store_true",
                        help="serve the families as MCP tools over stdin/stdout (desktop MCP clients) instead of HTTP")
    parser.add_argument("--ray", action="store_true",
                        help="serve the app as Ray Serve replicas (needs the 'ray' extra); implies --shared-home")
    parser.add_argument("--replicas", type=int, help="with --ray: how many replicas (default from settings: 2)")
    args = parser.parse_args(argv)

    from quantcrew.config.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"quantcrew-server: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    if args.host:
        server.host = args.host
    if args.port is not None:
        server.port = args.port
    if args.log_level:
        server.log_level = args.log_level
    if args.insecure:
        server.insecure = True
    if args.shared_home or args.ray:
        server.shared_home = True
    if args.replicas is not None:
        if not args.ray:
            print("quantcrew-server: --replicas needs --ray", file=sys.stderr)
            return 2
        if args.replicas < 1:
            print(f"quantcrew-server: --replicas must be at least 1, got {args.replicas}", file=sys.stderr)
            return 2
        settings.ray.replicas = args.replicas
    if args.ray and args.mcp_stdio:
        print("quantcrew-server: --ray and --mcp-stdio do not go together", file=sys.stderr)
        return 2

    refusal = bind_refusal(server.host, has_key=server.api_key is not None, insecure=server.insecure)
    if refusal is not None:
        print(f"quantcrew-server: {refusal}", file=sys.stderr)
        return 2
    from quantcrew.ml_server.services.monitor.rules import RuleFileError, load_rules

    try:  # a bad alert-rules file refuses the start, naming its line, before the app loads
        load_rules(settings.monitor.alert_rules)
    except RuleFileError as exc:
        print(f"quantcrew-server: {exc}", file=sys.stderr)
        return 2

    if args.ray:  # each replica takes the home (shared) in its own process
        from quantcrew.ml_server.replicas.serve import serve_ray

        return serve_ray(settings)

    from quantcrew.config.server_lock import HomeInUseError, hold_home

    # one server per home: a second one would share the registry and mark the first one's jobs interrupted.
    # The lock needs only the standard library, so it is taken before the app and its model libraries load
    # (seconds): a refused second server says so at once.
    try:
        if args.mcp_stdio:
            with hold_home(settings.home, None, shared=server.shared_home):
                from quantcrew.ml_server.app import create_app
                from quantcrew.ml_server.mcp_server.stdio import serve_stdio

                serve_stdio(settings, create_app)
        else:
            with hold_home(settings.home, _client_url(server.host, server.port), shared=server.shared_home):
                _serve(settings)
    except HomeInUseError as exc:
        print(f"quantcrew-server: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve(settings: Settings) -> None:
    """Load the app and serve it until stopped (the caller holds the home)."""
    server = settings.server
    from quantcrew.ml_server.threads import limit_compute_threads

    limit_compute_threads(server.compute_threads)  # before any model code loads its native libraries
    if server.preload:
        from quantcrew.ml_server.preload import preload

        preload()  # the first RL / ensemble / execution request need not wait for torch and SB3
    import uvicorn

    from quantcrew.ml_server.app import create_app

    uvicorn.run(create_app(settings), host=server.host, port=server.port, log_level=server.log_level,
                access_log=False, timeout_graceful_shutdown=5, loop=server.event_loop)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, *, has_key: bool, insecure: bool) -> str | None:
    """Why the server must not start on ``host`` (None when it may).

    A non-loopback bind without a key would let anyone who reaches the port train and query
    models; it takes an explicit ``--insecure`` (``server.insecure``).
    """
    if has_key or insecure or is_loopback(host):
        return None
    return (f"refusing to bind {host!r} without an API key: anyone who can reach the port could use the server. "
            "Set QUANTCREW_SERVER__API_KEY, bind 127.0.0.1, or pass --insecure "
            "(QUANTCREW_SERVER__INSECURE=true) to run open on purpose.")


def _client_url(host: str, port: int) -> str | None:
    """The URL a client on this machine reaches the server at (None on port 0: not known before binding)."""
    if port == 0:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


if __name__ == "__main__":
    raise SystemExit(main())
