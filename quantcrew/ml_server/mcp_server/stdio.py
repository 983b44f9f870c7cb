"""``quantcrew-server --mcp-stdio``: the same tools over stdin and stdout, for desktop MCP clients.

The app's state opens as it does under uvicorn (its lifespan: registry, stores, jobs, prediction log) and no
port is bound; the client starts this process and speaks MCP over its pipes. Standard output carries the
protocol and nothing else: the protocol writes to a copy of the original descriptor, while descriptor 1 and
``sys.stdout`` are pointed at standard error for the rest of the run, so that a library's stray print, from
Python or from C, lands in the client's log instead of breaking a message. Logging goes to standard error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import TextIOWrapper
from typing import BinaryIO

import anyio
import anyio.to_thread
from fastapi import FastAPI
from mcp.server.stdio import stdio_server

from quantcrew.config.settings import Settings
from quantcrew.ml_server.mcp_server.server import build_mcp, build_tools
from quantcrew.ml_server.preload import preload
from quantcrew.ml_server.threads import limit_compute_threads

__all__ = ["serve_stdio"]

logger = logging.getLogger("quantcrew.ml_server")


def serve_stdio(settings: Settings, create_app: Callable[[Settings], FastAPI]) -> None:
    """Serve the MCP tools over stdio until the client closes standard input (the caller holds the home).

    Args:
        settings: The settings tree; ``server.mcp`` (the HTTP endpoint) does not apply here.
        create_app: ``quantcrew.ml_server.app.create_app``, passed in by the entry point: the app mounts
            this package at ``/mcp``, so this package does not import it back.
    """
    server = settings.server.model_copy(update={"mcp": False})  # no /mcp route: nothing listens for HTTP
    settings = settings.model_copy(update={"server": server})
    logging.basicConfig(stream=sys.stderr, level=server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_compute_threads(server.compute_threads)  # before any model code loads its native libraries
    if server.preload:
        preload()  # in the background: the first RL, ensemble or execution call need not wait for torch
    with _protocol_channel() as channel:
        anyio.run(_serve, create_app(settings), channel)


async def _serve(app: FastAPI, channel: BinaryIO) -> None:
    async with app.router.lifespan_context(app):
        await anyio.to_thread.run_sync(build_tools)
        mcp = build_mcp(app)
        # FastMCP.run_stdio_async writes to sys.stdout, which is standard error here: its server runs on the
        # protocol's own channel instead
        lowlevel = mcp._mcp_server
        out = anyio.wrap_file(TextIOWrapper(channel, encoding="utf-8"))
        async with stdio_server(stdout=out) as (read, write):
            logger.info("quantcrew MCP server ready on stdio with %d tools", len(await mcp.list_tools()))
            await lowlevel.run(read, write, lowlevel.create_initialization_options())


@contextmanager
def _protocol_channel() -> Iterator[BinaryIO]:
    """The original standard output, for the protocol alone, while everything else written there goes to
    standard error; both are put back afterwards."""
    sys.stdout.flush()
    out_fd, err_fd = 1, 2  # the process's descriptors: what a child's pipes and a C library write to
    saved_fd = os.dup(out_fd)
    channel = os.fdopen(os.dup(out_fd), "wb")
    saved_stdout = sys.stdout
    os.dup2(err_fd, out_fd)
    sys.stdout = sys.stderr
    try:
        yield channel
    finally:
        channel.close()
        sys.stdout = saved_stdout
        os.dup2(saved_fd, out_fd)
        os.close(saved_fd)
