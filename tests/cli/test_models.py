"""``quantcrew models``: list, show, lineage, stage, promote, rollback and cleanup against a real server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.cli.exits import ExitCode
from quantcrew.crew.server_process import LocalServer
from tests.ml_server.services.supervised.test_service import linear_data


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["models", *args], env={"COLUMNS": "250"})


def _fit(url: str, name: str, seed: int) -> str:
    features, y = linear_data(80, seed=seed)
    resp = httpx.post(f"{url}/v1/supervised/fit", json={"features": features, "target": y, "task": "regression",
                                                        "method": "random_forest", "n_estimators": 5, "name": name},
                      timeout=60)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model_id"])


@pytest.fixture
def two_versions(live_server: LocalServer) -> tuple[str, str, str]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    return name, _fit(live_server.url, name, 0), _fit(live_server.url, name, 1)


def test_promote_through_canary_to_full_then_roll_back(live_server: LocalServer,
                                                       two_versions: tuple[str, str, str]) -> None:
    name, v1, v2 = two_versions
    url = ["--server-url", live_server.url]
    assert _cli("stage", v1, "full", "--reason", "first", *url).exit_code == 0
    staged = _cli("stage", v2, "shadow", *url)
    assert staged.exit_code == 0, staged.output
    assert f"{v2} is now shadow of '{name}'" in staged.stdout
    canary = _cli("promote", name, "--reason", "looks fine", *url)
    assert canary.exit_code == 0, canary.output
    assert f"promoted {v2} (version 2) to canary" in canary.stdout and "shadow -> canary (promote: looks fine)" \
        in canary.stdout
    full = _cli("promote", name, "--json", *url)
    assert full.exit_code == 0, full.output
    assert json.loads(full.stdout)["deployment"]["stage"] == "full"
    nothing = _cli("promote", name, *url)
    assert nothing.exit_code == ExitCode.BAD_INPUT and "nothing to promote" in " ".join(nothing.stderr.split())
    back = _cli("rollback", name, "--reason", "quality fell", *url)
    assert back.exit_code == 0, back.output
    assert f"rolled '{name}' back to {v1} (version 1); {v2} retired" in back.stdout
    again = _cli("rollback", name, *url)
    assert again.exit_code == ExitCode.BAD_INPUT and "no previous champion" in " ".join(again.stderr.split())
    listed = json.loads(_cli("list", "--name", name, "--json", *url).stdout)
    assert [m["model_id"] for m in listed] == [v2, v1]
    lineage = json.loads(_cli("lineage", v2, "--json", *url).stdout)
    assert [n["model_id"] for n in lineage["chain"]] == [v2, v1]
    assert [e["action"] for e in lineage["chain"][0]["events"]] == ["stage", "promote", "promote", "rollback"]
    table = _cli("lineage", v2, *url)
    assert table.exit_code == 0 and v1 in table.stdout and "rollback" in table.stdout


def test_show_list_and_cleanup_print_what_the_server_holds(live_server: LocalServer,
                                                           two_versions: tuple[str, str, str]) -> None:
    name, v1, v2 = two_versions
    url = ["--server-url", live_server.url]
    shown = json.loads(_cli("show", v2, *url).stdout)
    assert shown["lineage"]["parent_model_id"] == v1 and shown["lineage"]["trigger"] == "manual"
    table = _cli("list", "--name", name, *url)
    assert table.exit_code == 0 and v1 in table.stdout and v2 in table.stdout
    dry = _cli("cleanup", "--name", name, "--dry-run", "--json", *url)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["deleted"] == []  # two versions: within the default retention


def test_unknown_ids_and_bad_stages_exit_2(live_server: LocalServer) -> None:
    url = ["--server-url", live_server.url]
    missing = _cli("show", "nope-000000000000", *url)
    assert missing.exit_code == ExitCode.BAD_INPUT and "nope-000000000000" in missing.stderr
    bad = _cli("stage", "nope-000000000000", "best", *url)
    assert bad.exit_code == ExitCode.BAD_INPUT and "best" in bad.stderr
