"""``quantcrew alerts list | ack | resolve`` against a real ML server."""

from __future__ import annotations

import json
import uuid

from typer.testing import CliRunner

from quantcrew.cli.app import app
from quantcrew.cli.exits import ExitCode
from quantcrew.config.settings import load_settings
from quantcrew.crew.server_process import LocalServer, free_port
from quantcrew.ml_server.schemas.alerts import AlertEvaluateRequest, MonitorEventRequest
from quantcrew.tools.client import make_client

runner = CliRunner()


def _fire_breaker_alert(url: str) -> int:
    """A breaker opening reported by a client of its own name, evaluated: the server's default rule fires."""
    settings = load_settings()
    client_name = f"cli-test-{uuid.uuid4().hex[:8]}"
    with make_client(settings.client, base_url=url) as client:
        client.monitor_event(MonitorEventRequest(kind="breaker_open", client=client_name, server=url, failures=3))
        fired = client.alerts_evaluate(AlertEvaluateRequest(rules=["client-breaker-open"])).changed
    (alert,) = [a for a in fired if a.labels.get("client") == client_name]
    return alert.alert_id


def test_list_ack_and_resolve_an_alert(live_server: LocalServer) -> None:
    url = live_server.url
    alert_id = _fire_breaker_alert(url)

    listed = runner.invoke(app, ["alerts", "list", "--server-url", url, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["alert_id"]: row for row in json.loads(listed.stdout)}
    assert rows[alert_id]["status"] == "firing" and rows[alert_id]["rule"] == "client-breaker-open"

    table = runner.invoke(app, ["alerts", "list", "--server-url", url], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "client-breaker-open" in table.stdout

    acked = runner.invoke(app, ["alerts", "ack", str(alert_id), "--by", "ops", "--server-url", url, "--json"])
    assert acked.exit_code == 0, acked.output
    assert json.loads(acked.stdout)["acknowledged_by"] == "ops"

    resolved = runner.invoke(app, ["alerts", "resolve", str(alert_id), "--server-url", url])
    assert resolved.exit_code == 0 and f"alert {alert_id} (client-breaker-open) resolved" in resolved.stdout
    open_now = json.loads(runner.invoke(app, ["alerts", "list", "--server-url", url, "--json"]).stdout)
    assert alert_id not in {row["alert_id"] for row in open_now}
    every = json.loads(runner.invoke(app, ["alerts", "list", "--status", "resolved", "--server-url", url,
                                           "--json"]).stdout)
    assert alert_id in {row["alert_id"] for row in every}

    again = runner.invoke(app, ["alerts", "ack", str(alert_id), "--server-url", url])
    assert again.exit_code == ExitCode.BAD_INPUT and "resolved" in again.output  # 409: nothing to acknowledge


def test_an_unknown_id_or_status_exits_2_and_a_dead_server_exits_6(live_server: LocalServer) -> None:
    unknown = runner.invoke(app, ["alerts", "resolve", "987654", "--server-url", live_server.url])
    assert unknown.exit_code == ExitCode.BAD_INPUT and "no alert with id 987654" in unknown.output
    bad = runner.invoke(app, ["alerts", "list", "--status", "smouldering", "--server-url", live_server.url])
    assert bad.exit_code == ExitCode.BAD_INPUT
    dead = runner.invoke(app, ["alerts", "list", "--server-url", f"http://127.0.0.1:{free_port()}"])
    assert dead.exit_code == ExitCode.SERVER_UNREACHABLE
