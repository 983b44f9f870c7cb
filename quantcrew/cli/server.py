"""``quantcrew server``: the ML server in the foreground, through its own entry point.

The command execs ``python -m quantcrew.ml_server`` with the same interpreter: that process
takes this one's place (same pid, same terminal, same environment), so signals, logs and the
exit code are the server's own, and the agent side never imports the server.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from quantcrew.cli.common import ConfigOpt

__all__ = ["SERVER_MODULE", "server", "server_argv"]

SERVER_MODULE = "quantcrew.ml_server"
"""The module ``python -m`` runs: the same entry point as the ``quantcrew-server`` script."""


def server_argv(host: str | None, port: int | None, config: str | None, *, insecure: bool = False,
                ray: bool = False, replicas: int | None = None, shared_home: bool = False,
                mcp_stdio: bool = False) -> list[str]:
    """The server's command line: this interpreter, ``-m quantcrew.ml_server``, then the given options.

    Args:
        host: ``--host``, left out when empty.
        port: ``--port``, left out when None.
        config: ``--config``, left out when None.
        insecure: ``--insecure`` (bind a non-loopback host without a key), left out when False.
        ray: ``--ray`` (Ray Serve replicas), left out when False.
        replicas: ``--replicas``, left out when None.
        shared_home: ``--shared-home``, left out when False.
        mcp_stdio: ``--mcp-stdio`` (MCP over stdin/stdout instead of HTTP), left out when False.
    """
    argv = [sys.executable, "-m", SERVER_MODULE]
    if host:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    if config is not None:
        argv += ["--config", config]
    if insecure:
        argv.append("--insecure")
    if ray:
        argv.append("--ray")
    if replicas is not None:
        argv += ["--replicas", str(replicas)]
    if shared_home:
        argv.append("--shared-home")
    if mcp_stdio:
        argv.append("--mcp-stdio")
    return argv


def server(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    config: ConfigOpt = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Allow a non-loopback --host without an API key (refused otherwise).")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Serve as Ray Serve replicas (the 'ray' extra).")] = False,
    replicas: Annotated[int | None, typer.Option(help="With --ray: how many replicas (default 2).")] = None,
    shared_home: Annotated[bool, typer.Option(
        "--shared-home", help="Share the home with other server processes (replicas of one deployment).")] = False,
    mcp_stdio: Annotated[bool, typer.Option(
        "--mcp-stdio", help="Serve the MCP tools over stdin/stdout (desktop MCP clients) instead of HTTP.")] = False,
) -> None:
    """Run the ML server in the foreground (same as quantcrew-server)."""
    argv = server_argv(host, port, None if config is None else str(config), insecure=insecure, ray=ray,
                       replicas=replicas, shared_home=shared_home, mcp_stdio=mcp_stdio)
    # exec discards this process's buffers: whatever was printed must be out first
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
