"""``quantcrew alerts list | ack | resolve``: the ML server's alerts (fired by its rules), acknowledged and
resolved from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, exit_for_error, fail

if TYPE_CHECKING:
    from quantcrew.ml_server.schemas.alerts import AlertInfo
    from quantcrew.tools.client import MLClient

__all__ = ["alerts_app", "alerts_table"]

alerts_app = typer.Typer(help="The ML server's alerts: list, acknowledge, resolve.", no_args_is_help=True)

_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_STATUSES = ("firing", "acknowledged", "resolved", "open", "all")

ServerUrlOpt = Annotated[str | None, typer.Option(
    help="ML server URL; default: the home's running server, or one started locally.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (recorded with the alert).")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why (recorded in the alert's history).")]


@contextmanager
def _client(server_url: str | None, config: Any) -> Iterator[MLClient]:
    """A client of the server (a local one started if none is named or running); client errors exit with their
    code."""
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    settings = load_cli_settings(config, client__url=server_url)
    try:
        with ml_server(settings, config), make_client(settings.client) as client:
            yield client
    except ServerStartError as exc:
        fail(err_console, f"the ML server did not start: {exc}", ExitCode.SERVER_UNREACHABLE)
    except MLClientError as exc:
        fail(err_console, str(exc), exit_for_error(exc))


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str, typer.Option(help="firing, acknowledged, resolved, open (firing or acknowledged) or "
                                             "all.")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most alerts to show, newest first.")] = 50,
    server_url: ServerUrlOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The server's alerts, newest first, with how often each fired."""
    if status not in _STATUSES:
        fail(err_console, f"--status must be one of {', '.join(_STATUSES)}, got {status!r}", ExitCode.BAD_INPUT)
    with _client(server_url, config) as client:
        found = client.alerts_list().alerts
    wanted: Callable[[AlertInfo], bool] = {
        "open": lambda a: a.status != "resolved", "all": lambda a: True}.get(status, lambda a: a.status == status)
    rows = [a for a in found if wanted(a)][:limit]
    if as_json:
        console.print_json(json.dumps([a.model_dump(mode="json") for a in rows]))
    else:
        console.print(alerts_table(rows, title=f"Alerts ({status}, newest {limit})"))


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[int, typer.Argument(min=1, help="The alert's id (from `alerts list`).")],
               by: ByOpt = None, note: NoteOpt = None, server_url: ServerUrlOpt = None, as_json: JsonOpt = False,
               config: ConfigOpt = None) -> None:
    """Acknowledge an alert: it stops escalating. An unknown id exits 2, a resolved alert too."""
    with _client(server_url, config) as client:
        info = client.alert_ack(alert_id, by=by, note=note)
    _print_one(info, as_json, "acknowledged")


@alerts_app.command("resolve")
def alerts_resolve(alert_id: Annotated[int, typer.Argument(min=1, help="The alert's id (from `alerts list`).")],
                   by: ByOpt = None, note: NoteOpt = None, server_url: ServerUrlOpt = None,
                   as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Resolve an alert by hand; it fires anew if its condition still holds. An unknown id exits 2."""
    with _client(server_url, config) as client:
        info = client.alert_resolve(alert_id, by=by, note=note)
    _print_one(info, as_json, "resolved")


def _print_one(info: AlertInfo, as_json: bool, verb: str) -> None:
    if as_json:
        console.print_json(info.model_dump_json())
    else:
        console.print(f"alert {info.alert_id} ({info.rule}) {verb}: now {info.status}, {info.severity}",
                      markup=False, highlight=False)


def alerts_table(rows: list[AlertInfo], *, title: str) -> Table:
    """Alerts as a table: id, severity, status, rule, labels, value, count, first and last seen, message."""
    table = Table("id", "severity", "status", "rule", "labels", "value", "count", "first seen", "last seen",
                  "message", title=title)
    for a in rows:
        labels = ", ".join(f"{k}={v}" for k, v in a.labels.items())
        value = "" if a.value is None else f"{a.value:.4g} {a.comparison} {a.threshold:g}".strip()
        table.add_row(str(a.alert_id), Text(a.severity, style=_STYLES.get(a.severity, "")), a.status, Text(a.rule),
                      Text(labels), value, str(a.count), a.first_seen.isoformat(timespec="seconds"),
                      a.last_seen.isoformat(timespec="seconds"), Text(a.message))
    return table
