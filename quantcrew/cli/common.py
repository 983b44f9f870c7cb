"""What the command groups share: consoles, the ``--config`` option, settings, symbol checks, a local ML server.

Only typer, rich and the settings are imported here; the data, the crew and the server
process are imported when a command needs them, so that loading the CLI stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from quantcrew.cli.exits import ExitCode, fail
from quantcrew.config.settings import Settings, SettingsError, load_settings

__all__ = ["PIPE_WIDTH", "AllowDegradedOpt", "ConfigOpt", "check_symbols", "child_env", "console", "err_console",
           "load_cli_settings", "make_console", "ml_server"]

PIPE_WIDTH = 1000
"""Columns the consoles lay out to when their stream is not a terminal (a pipe, a log file) and
``COLUMNS`` is not set: wide enough that no table is squeezed and no line is wrapped, where Rich's
default of 80 cut the decision's labels to "volat…"."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that keeps whole lines when the stream is not a terminal."""
    made = Console(stderr=stderr)
    if not made.is_terminal and made._width is None:  # Rich sets _width from COLUMNS; unset, it would be 80
        made.width = PIPE_WIDTH
    return made


console = make_console()
err_console = make_console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.")]
"""The ``--config`` option every command takes."""
AllowDegradedOpt = Annotated[bool, typer.Option(
    "--allow-degraded", help="Exit 0 for a degraded run (a fallback answered for a model); it is still stored and "
                             "shown as degraded. Without it a degraded run exits 4.")]
"""The ``--allow-degraded`` option of the commands whose run can end degraded."""


def load_cli_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings from ``config`` and the environment, with the command's options on top.

    Args:
        config: The ``--config`` YAML file, or None.
        **overrides: ``section__key=value`` (e.g. ``client__url=...``); None leaves the setting as loaded.

    Raises:
        typer.Exit: code 2, after printing the settings error.
    """
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        setattr(getattr(settings, section), key, value)
    return settings


def check_symbols(names: list[str], settings: Settings, end_date: str | None) -> None:
    """Refuse unknown symbols and an end date outside the data, before any server starts.

    Raises:
        typer.Exit: code 2, after printing what is wrong.
    """
    from quantcrew.data import DataError, load_symbol

    for name in names:
        try:
            bars = load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
        except DataError as exc:
            fail(err_console, str(exc), ExitCode.BAD_INPUT)
        if end_date is not None:
            first = str(bars.timestamps[0].astype("datetime64[D]"))
            last = str(bars.timestamps[-1].astype("datetime64[D]"))
            if not first <= end_date[:10] <= last:
                fail(err_console, f"--end-date {end_date} is outside the data of {name}: it has bars from {first} "
                                  f"to {last}", ExitCode.BAD_INPUT)


@contextmanager
def ml_server(settings: Settings, config: Path | None, *,
              meanwhile: Callable[[], object] | None = None) -> Iterator[None]:
    """A local ML server for the command's duration, unless ``settings.client.url`` names one.

    The server runs as a child process started through its entry point (``python -m
    quantcrew.ml_server``); ``settings.client.url`` points at it until the block ends. When a
    server already holds the home (``<home>/server.lock``) and answers, that one is used and left
    running.

    Args:
        settings: The command's settings; ``client.url`` is set to the server's.
        config: The ``--config`` file, passed on to a local server.
        meanwhile: The command's own slow preparation (loading the crew), run before the block in
            every case; when a server is started, while it boots, so that the two overlap.

    Raises:
        ServerStartError: the child exited or was not ready in time.
    """
    from quantcrew.config.server_lock import running_server
    from quantcrew.crew.server_process import LocalServer

    if settings.client.url is not None:
        if meanwhile is not None:
            meanwhile()
        yield
        return
    running = running_server(settings.home)
    if running is not None and running.url is not None and _answers(running.url, wait_s=settings.client.timeout_s):
        # one server per home: a second one would refuse to start; reuse it and leave it running
        settings.client.url = running.url
        err_console.print(f"Using the ML server already running at {running.url} (pid {running.pid})", style="dim",
                          markup=False)
        if meanwhile is not None:
            meanwhile()
        yield
        return
    server = LocalServer(env=child_env(settings), config_file=config, log_path=settings.home / "logs" / "server.log")
    try:
        with console.status("Starting the ML server on a free loopback port..."):
            server.start(meanwhile=meanwhile)
        settings.client.url = server.url
        err_console.print(f"ML server started at {server.url}", style="dim", markup=False)  # stderr: --json stays pure
        yield
    finally:
        server.stop()


def _answers(url: str, *, wait_s: float = 0.0) -> bool:
    """Whether a server answers ``/health`` at ``url``; tried again for up to ``wait_s`` seconds, because a
    server holds the home's lock from before its app has loaded (a claim that does not answer yet is booting)."""
    import time

    import httpx

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def child_env(settings: Settings) -> dict[str, str]:
    """Settings the child server must share with us (home decides registry and artifacts)."""
    env = {"QUANTCREW_HOME": str(settings.home)}
    if settings.server.api_key is not None:
        env["QUANTCREW_SERVER__API_KEY"] = settings.server.api_key.get_secret_value()
    return env
