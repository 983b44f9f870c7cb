"""StrategySignalTool against the real app: a deployed policy, a gated one (its rule answers, not degraded), none
(degraded), the server down, bad input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings, load_settings
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.rl import RLTrainRequest, RLTrainResult
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.fallbacks import rule_positions
from quantcrew.tools.strategy import StrategySignalTool, consensus, parse_agents

_AGENTS = ["conservative", "aggressive", "balanced", "contrarian"]


@dataclass(frozen=True)
class _Trained:
    settings: Settings
    client: MLClient
    model_id: str  # the aggressive policy, deployed for SP500
    gated_id: str  # the contrarian policy, which failed its gate


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Trained]:
    """One app whose registry holds tiny A2C policies for SP500 (trained once per module): the aggressive one
    deployed, the contrarian one failed its gate (trained without regimes, its sideways return cannot be measured).
    """
    home = tmp_path_factory.mktemp("strategy-home")
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse env cleaner
        mp.chdir(Path(home))
        for name in [n for n in os.environ if n.startswith("QUANTCREW_")]:
            mp.delenv(name)
        settings = load_settings(home=home)
    with TestClient(create_app(settings)) as tc:
        client = MLClient(tc)
        data = to_payload_dict(load_sample("SP500").tail(400))
        job = client.rl_train(RLTrainRequest.model_validate(
            {"data": data, "symbol": "SP500", "agents": ["aggressive", "contrarian"], "algorithm": "a2c",
             "timesteps": 512, "regime_features": False, "n_envs": 2, "seeds": 1,
             "grid": {"reward_scale": [1.0]}}))
        done = client.wait_for_job(job.job_id, poll_s=0.05, timeout_s=60)
        assert done.status == "succeeded", done.error
        aggressive, contrarian = RLTrainResult.model_validate(done.result).policies
        assert contrarian.gate is not None and not contrarian.gate.passed and not contrarian.deployed
        if not aggressive.deployed:  # a tiny run rarely passes: deploy it as a passing one would be
            store = tc.app.state.deployments  # type: ignore[attr-defined]
            store.set(model_id=aggressive.model_id, name="rl-aggressive-sp500", version=aggressive.model_version,
                      stage="full")
        yield _Trained(settings, client, aggressive.model_id, contrarian.model_id)


def _expected_rules(lookback: int) -> dict[str, float]:
    close = load_sample("SP500").tail(lookback).close
    return {agent: float(series[-1]) for agent, series in rule_positions(close).items()}


@pytest.mark.slow
def test_run_answers_from_the_trained_policy(trained: _Trained) -> None:
    tool = StrategySignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", agents="aggressive", lookback=300, position=0.5)
    assert "degraded: false" in text and trained.model_id in text and "aggressive" in text
    assert "gated" not in text
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded and not result.gated
    [signal] = result.data["signals"]
    assert signal["source"] == "rl_policy" and signal["model_id"] == trained.model_id
    assert signal["algorithm"] == "a2c" and signal["action_label"] in {"short", "flat", "long"}
    assert sum(signal["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert signal["target_position"] == {"short": -1.0, "flat": 0.0, "long": 1.0}[signal["action_label"]]
    assert result.data["consensus"]["majority"] == signal["action_label"]
    assert result.data["consensus"]["mean_target_position"] == signal["target_position"]
    prov = result.data["provenance"]
    assert prov["model_ids"] == [trained.model_id] and prov["data_hash"].startswith("sha256:")
    assert prov["as_of"] == result.data["as_of"] == "2018-12-31"
    assert result.data["position_held"] == 0.5 and result.data["regime"] is None  # trained without regimes


@pytest.mark.slow
def test_a_gated_agent_is_answered_by_its_rule_and_is_not_degraded(trained: _Trained) -> None:
    tool = StrategySignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", agents="contrarian,aggressive", lookback=300)
    result = tool.last_result
    assert result is not None and result.ok and result.gated and not result.degraded
    assert result.degraded_reason is None and result.data["missing_policies"] == []
    reason = result.gated_reason or ""
    assert reason.startswith(f"contrarian: RL policy {trained.gated_id} failed its gate (")
    assert "return in sideways regimes not measurable" in reason and reason.endswith("mean-reversion rule answered")
    by_agent = {s["agent"]: s for s in result.data["signals"]}
    assert by_agent["aggressive"]["source"] == "rl_policy" and by_agent["aggressive"]["model_id"] == trained.model_id
    gated = by_agent["contrarian"]
    assert gated["source"] == "rules" and gated["gated"] is True and gated["gated_model_id"] == trained.gated_id
    assert gated["gate"].startswith("failed: ")
    assert gated["target_position"] == pytest.approx(_expected_rules(300)["contrarian"])
    assert f"gated: true ({reason})" in text and text.endswith("degraded: false")
    assert result.data["gated_policies"][0]["model_id"] == trained.gated_id


@pytest.mark.slow
def test_every_agent_gated_answers_rules_with_no_policy_and_is_not_degraded(trained: _Trained) -> None:
    tool = StrategySignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", agents="contrarian", lookback=300)
    result = tool.last_result
    assert result is not None and result.ok and result.gated and not result.degraded
    [signal] = result.data["signals"]
    assert signal["source"] == "rules" and signal["gated"] is True
    assert result.data["provenance"]["model_ids"] == [] and "models none answered" in text
    assert "gated: true" in text and "degraded: false" in text


@pytest.mark.slow
def test_all_agents_mix_the_policy_with_rules_for_gated_and_untrained_agents(trained: _Trained) -> None:
    tool = StrategySignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", lookback=300)
    result = tool.last_result
    assert result is not None and result.ok and result.degraded and result.gated
    assert [s["agent"] for s in result.data["signals"]] == _AGENTS
    sources = {s["agent"]: s["source"] for s in result.data["signals"]}
    assert sources == {"conservative": "rules", "aggressive": "rl_policy", "balanced": "rules",
                       "contrarian": "rules"}
    assert result.data["missing_policies"] == ["conservative", "balanced"]
    assert [g["agent"] for g in result.data["gated_policies"]] == ["contrarian"]
    assert "no trained policy for agents conservative, balanced on SP500" in text
    assert "run `quantcrew setup --symbols SP500`" in text and "degraded: true" in text and "gated: true" in text
    rules = _expected_rules(300)
    for s in result.data["signals"]:
        if s["source"] == "rules":
            assert s["target_position"] == pytest.approx(rules[s["agent"]])
    mean = sum(s["target_position"] for s in result.data["signals"]) / 4
    assert result.data["consensus"]["mean_target_position"] == pytest.approx(mean)


@pytest.mark.slow
def test_algorithm_without_a_policy_falls_back_to_rules(trained: _Trained) -> None:
    tool = StrategySignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", agents="aggressive", algorithm="PPO")
    assert "no trained policy for agent aggressive on SP500: run `quantcrew setup --symbols SP500`" in text
    assert tool.last_result is not None and tool.last_result.degraded and not tool.last_result.gated


@pytest.mark.slow
async def test_arun_matches_run(trained: _Trained) -> None:
    sync = StrategySignalTool(settings=trained.settings, client=trained.client)
    sync.run(symbol="SP500", agents="aggressive", lookback=250)
    app = create_app(trained.settings)  # a second app on the same registry sees the same policy
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ml.test")
        async with AsyncMLClient(http) as client:
            tool = StrategySignalTool(settings=trained.settings, async_client=client)
            text = await tool.arun(symbol="SP500", agents="aggressive", lookback=250)
    assert "degraded: false" in text
    assert tool.last_result is not None and sync.last_result is not None
    assert tool.last_result.data["signals"] == sync.last_result.data["signals"]


def test_no_trained_policy_answers_rules_and_says_to_train(settings: Settings, ml_client: MLClient) -> None:
    tool = StrategySignalTool(settings=settings, client=ml_client)
    text = tool.run(symbol="SP500", lookback=300)
    assert "degraded: true" in text and "RULES" in text
    assert ("no trained policy for agents conservative, aggressive, balanced, contrarian on SP500: "
            "run `quantcrew setup --symbols SP500`") in text
    result = tool.last_result
    assert result is not None and result.ok and result.degraded and not result.gated
    assert {s["agent"]: s["target_position"] for s in result.data["signals"]} == pytest.approx(_expected_rules(300))
    assert result.data["provenance"]["method_used"] == "fallback_rules"


def test_server_down_answers_rules_and_says_why(dead_server: Settings) -> None:
    tool = StrategySignalTool(settings=dead_server)
    text = tool.run(symbol="SP500", lookback=400, agents="contrarian,aggressive")
    assert "degraded: true (ML server unavailable" in text
    result = tool.last_result
    assert result is not None and result.ok and result.degraded
    assert [s["agent"] for s in result.data["signals"]] == ["aggressive", "contrarian"]
    rules = _expected_rules(400)
    assert all(s["target_position"] == pytest.approx(rules[s["agent"]]) for s in result.data["signals"])
    assert result.data["regime_source"].startswith("rule-based")


def test_end_date_cuts_the_bars_the_rules_see(dead_server: Settings) -> None:
    tool = StrategySignalTool(settings=dead_server)
    tool.run(symbol="SP500", end_date="2008-10-15", lookback=200)
    assert tool.last_result is not None and tool.last_result.data["as_of"] == "2008-10-15"
    close = load_sample("SP500").between(None, "2008-10-15").tail(200).close
    got = {s["agent"]: s["target_position"] for s in tool.last_result.data["signals"]}
    assert got == pytest.approx({a: float(p[-1]) for a, p in rule_positions(close).items()})


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"agents": "reckless"}, "agents: unknown ['reckless']"),
        ({"agents": "aggressive,aggressive"}, "twice"),
        ({"algorithm": "sac"}, "algorithm: unknown 'sac'"),
        ({"end_date": "1999-02-01"}, "cannot use the data"),
        ({"symbol": "NOPE_NOT_A_SYMBOL"}, "cannot use the data"),
    ],
)
def test_bad_arguments_come_back_as_sentences(settings: Settings, ml_client: MLClient, kwargs: dict[str, str],
                                              needle: str) -> None:
    tool = StrategySignalTool(settings=settings, client=ml_client)
    text = tool.run(**kwargs)
    assert text.startswith("strategy_signals:") and needle in text
    assert tool.last_result is not None and not tool.last_result.ok


def test_args_schema_rejects_a_lookback_too_short_for_the_features(settings: Settings) -> None:
    with pytest.raises(ValueError, match="lookback"):
        StrategySignalTool(settings=settings).run(lookback=30)


def test_parse_agents_reads_what_an_llm_writes() -> None:
    assert parse_agents("all") == parse_agents(None) == parse_agents("") == _AGENTS
    assert parse_agents("Contrarian, aggressive") == ["aggressive", "contrarian"]
    assert parse_agents(["balanced"]) == ["balanced"]
    assert parse_agents("[all]") == _AGENTS


def test_consensus_takes_the_majority_or_says_split() -> None:
    def sig(label: str, target: float) -> dict[str, object]:
        return {"action_label": label, "target_position": target}

    agree = consensus([sig("long", 1.0), sig("long", 0.5), sig("flat", 0.0)])
    assert agree["majority"] == "long" and agree["mean_target_position"] == pytest.approx(0.5)
    split = consensus([sig("long", 1.0), sig("short", -1.0)])
    assert split["majority"] == "split" and split["mean_target_position"] == 0.0


def test_tool_name_and_schema_are_stable() -> None:
    tool = StrategySignalTool()
    assert tool.name == "strategy_signals"
    props = tool.args_schema.model_json_schema()["properties"]
    assert set(props) == {"symbol", "lookback", "end_date", "agents", "algorithm", "position"}
    assert all(p.get("description") for p in props.values())
