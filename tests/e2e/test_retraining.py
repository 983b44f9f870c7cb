"""Training schedules' firings against a real server: promote through the lifecycle API, watch, roll back.

One server, two tiny ensembles (a few seconds each). What the firing records and what the server
holds (deployments, lineage, deployment events, alerts) must agree at every step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from quantcrew.config.settings import ClientSettings
from quantcrew.crew.retrain_runner import HttpRetrainServer
from quantcrew.crew.retraining import RetrainPolicy, RetrainStore, model_name, retrain_symbol
from quantcrew.crew.server_process import LocalServer
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_ar_market
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest
from quantcrew.ml_server.schemas.lineage import StageRequest
from quantcrew.ml_server.schemas.monitor import OutcomeBatch
from quantcrew.tools.client import MLClient, make_client

SYMBOL = "RETRAIN"
NAME = model_name(SYMBOL)
TINY: Mapping[str, Any] = {"epochs": 1, "members": 1, "folds": 1, "hidden": 8, "horizon": 1,
                           "up_threshold": 0.001, "down_threshold": 0.001}


class OpenGate(HttpRetrainServer):
    """Every gate open (a challenger that failed its own gate is put in shadow first): a forced promotion."""

    def compare(self, champion_id: str, challenger_id: str, bars: OHLCV, holdout: int) -> dict[str, Any]:
        return {"passed": True, "reason": "forced open by the test"}

    def promote(self, name: str, model_id: str, reason: str) -> None:
        self.client.models_stage(model_id, StageRequest(stage="shadow", reason="test: past its own gate"))
        super().promote(name, model_id, reason)


@pytest.fixture(scope="module")
def client(own_server: LocalServer) -> Iterator[MLClient]:
    with make_client(ClientSettings(url=own_server.url, timeout_s=600.0)) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RetrainStore]:
    s = RetrainStore(tmp_path / "runs.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def bars() -> OHLCV:
    return generate_ar_market(420, mu=0.0004, phi=0.4, sigma=0.01, seed=11, symbol=SYMBOL)


def test_a_promoted_challenger_whose_live_quality_fails_is_rolled_back_to_the_champion(
        client: MLClient, store: RetrainStore, bars: OHLCV) -> None:
    http = HttpRetrainServer(client)
    always = RetrainPolicy(symbols=(SYMBOL,), on_drift=False, always=True, holdout_bars=60, cooldown_s=0.0,
                           train=TINY)

    # a first firing with no champion: trained, judged by its own gate; deployed by hand when it failed it
    first = retrain_symbol(http, store, always, SYMBOL, bars)
    assert [e.step for e in first.events][:3] == ["triggered", "trained", "gated"]
    assert first.events[0].cause == "schedule" and first.outcome in ("promoted", "rejected")
    v1 = first.events[1].model_id
    assert v1 is not None
    if first.outcome == "rejected":
        assert http.champion(NAME)[0] is None  # a rejected challenger never reaches full
        client.models_stage(v1, StageRequest(stage="full", reason="test: a champion to start from"))
    assert http.champion(NAME)[0] == v1

    # the adapter's drift and compare calls answer from the real routes
    drifted, summary = http.drift(v1, bars.tail(150))
    assert isinstance(drifted, bool) and {"judged", "psi_max", "drifted_features"} <= set(summary)

    # a second firing, its gate forced open: the challenger goes shadow -> canary -> full through the API
    second = retrain_symbol(OpenGate(client), store, always, SYMBOL, bars)
    assert second.outcome == "promoted"
    v2 = second.events[-1].model_id
    assert v2 is not None and http.champion(NAME)[0] == v2
    lineage = client.models_lineage(v2)
    newest = lineage.chain[0].model
    assert newest is not None and newest.lineage.trigger == "schedule" and newest.lineage.parent_model_id == v1
    assert newest.lineage.data_end is not None and newest.lineage.code_version
    assert [n.model_id for n in lineage.chain[:2]] == [v2, v1]  # its parent is the champion it replaced
    steps = [(e.model_id, e.action, e.to_stage, e.actor) for e in client.models_events()]
    assert (v2, "promote", "canary", "retrain") in steps and (v2, "promote", "full", "retrain") in steps
    verdict = http.compare(v1, v2, bars, 60)
    assert verdict["decision"] in ("promote", "reject", "insufficient") and verdict["n"] > 0

    # the crew's traffic: each answer of v2 is followed by the outcome that proves it wrong
    for t in range(len(bars) - 45, len(bars) - 1):
        window = bars.head(t + 1).tail(120)
        reply = client.ensemble_predict(EnsemblePredictRequest.model_validate(
            {"symbol": SYMBOL, "data": to_payload_dict(window), "seed": 0}))
        assert reply.model_id == v2
        wrong = 0.01 if reply.probabilities["up"] < 0.5 else -0.01
        client.monitor_outcomes(OutcomeBatch.model_validate({"outcomes": [{
            "outcome_id": f"test:{t}", "subject": SYMBOL, "as_of": to_payload_dict(window)["timestamps"][-1],
            "realised_return": wrong}]}))
    watch = RetrainPolicy(symbols=(SYMBOL,), on_drift=False, quality_metric="log_loss", rollback_limit=0.69,
                          cooldown_s=0.0, train=TINY)
    third = retrain_symbol(http, store, watch, SYMBOL, bars)
    assert [e.step for e in third.events] == ["checked", "rolled_back"], third.events
    checked = third.events[0].detail
    assert checked["judged"] and checked["value"] > 0.69 and checked["samples"] >= 30
    assert third.events[-1].model_id == v1 and http.champion(NAME)[0] == v1
    alerts = [a for a in client.alerts_list().alerts if a.rule == "model_rolled_back"]
    assert len(alerts) == 1 and alerts[0].labels == {"name": NAME} and v2 in alerts[0].message

    # v1 has answered nothing since: no judged live quality, so nothing is rolled back again
    again = retrain_symbol(http, store, watch, SYMBOL, bars)
    assert "rolled_back" not in [e.step for e in again.events]
