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


def server_argv(host: str | None, port: int | None, config: str | None, *, insecure: bool = False) -> list[str]:
    """The server's command line: this interpreter, ``-m quantcrew.ml_server``, then the given options.

    Args:
        host: ``--host``, left out when empty.
        port: ``--port``, left out when None.
        config: ``--config``, left out when None.
        insecure: ``--insecure`` (bind a non-loopback host without a key), left out when False.
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
    return argv


def server(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    config: ConfigOpt = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Allow a non-loopback --host without an API key (refused otherwise).")] = False,
) -> None:
    """Run the ML server in the foreground (same as quantcrew-server)."""
    argv = server_argv(host, port, None if config is None else str(config), insecure=insecure)
    # exec discards this process's buffers: whatever was printed must be out first
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
