"""AgentSelectionTool against the real app (bandit created on first use, rewards learned), a dead server, bad input."""

from __future__ import annotations

import httpx
import pytest

from quantcrew.config.settings import Settings
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest
from quantcrew.ml_server.schemas.regime import RegimeLabelRequest
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.fallbacks import regime_fallback
from quantcrew.tools.selection import REWARD_RANGE, AgentSelectionTool

_AGENTS = ["conservative", "aggressive", "balanced", "contrarian"]


def test_first_selection_creates_the_bandit_and_returns_a_decision_id(settings: Settings,
                                                                     ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    text = tool.run(regime="bull")
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded
    data = result.data
    assert data["created"] is True and data["agent"] in _AGENTS and data["regime"] == "bull"
    assert data["decision_id"].startswith("dec-") and f"decision_id: {data['decision_id']}" in text
    assert "keep it" in text and "degraded: false" in text and data["reason"] in text
    assert [a["arm"] for a in data["arms"]] == _AGENTS and all(a["raw_pulls"] == 0 for a in data["arms"])
    state = ml_client.bandit_state("meta-orchestrator")
    assert state.bandit.policy == "discounted_thompson" and state.bandit.arms == _AGENTS
    assert state.bandit.params.reward_range == REWARD_RANGE and state.bandit.decisions == 1
    tool.run(regime="bull")
    assert tool.last_result is not None and tool.last_result.data["created"] is False
    assert ml_client.bandit_state("meta-orchestrator").bandit.decisions == 2


def test_reward_is_recorded_and_the_estimates_move(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    tool.run(regime="sideways")
    assert tool.last_result is not None
    chosen, decision_id = tool.last_result.data["agent"], tool.last_result.data["decision_id"]
    before = {a["arm"]: a for a in tool.last_result.data["arms"]}
    text = tool.run(decision_id=decision_id, reward="0.4%")
    result = tool.last_result
    assert result is not None and result.ok and result.data["recorded"] is True
    assert f"Recorded reward +0.004 for decision {decision_id}" in text and "degraded: false" in text
    assert result.data["agent"] == chosen and result.data["reward"] == pytest.approx(0.004)
    assert result.data["pulls"] == 1 and result.data["clipped"] is False
    after = {a["arm"]: a for a in result.data["arms"]}
    assert after[chosen]["raw_pulls"] == before[chosen]["raw_pulls"] + 1
    assert after[chosen]["pulls"] > before[chosen]["pulls"]
    assert after[chosen]["estimate"] != before[chosen]["estimate"]
    assert all(after[a] == before[a] for a in _AGENTS if a != chosen)
    [sideways] = [r for r in ml_client.bandit_state("meta-orchestrator").regimes if r.regime == "sideways"]
    assert sideways.pulls == 1 and sideways.pending == 0


def test_unknown_decision_id_is_a_sentence_saying_so(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    text = tool.run(decision_id="dec-0000000000000000", reward=0.01)
    assert "decision 'dec-0000000000000000' is unknown" in text and "Nothing was recorded" in text
    assert tool.last_result is not None and not tool.last_result.ok and not tool.last_result.degraded


def test_a_second_reward_for_one_decision_changes_nothing(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    tool.run(regime="bear")
    assert tool.last_result is not None
    decision_id = tool.last_result.data["decision_id"]
    tool.run(decision_id=decision_id, reward=0.01)
    text = tool.run(decision_id=decision_id, reward=0.02)
    assert "already has its reward" in text and "Nothing changed" in text
    assert ml_client.bandit_state("meta-orchestrator").pulls == 1


def test_auto_regime_uses_the_servers_regime(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    text = tool.run(symbol="SP500", regime="auto", lookback=500)
    result = tool.last_result
    assert result is not None and result.ok
    expected = ml_client.regime_label(RegimeLabelRequest.model_validate(
        {"data": to_payload_dict(load_sample("SP500").tail(501)), "include_probabilities": False}))
    assert result.data["regime"] == expected.current_label
    assert result.data["regime_source"] == "server regime model"
    assert result.data["regime_probability"] == pytest.approx(expected.current_probability)
    assert f"{expected.current_label.upper()} regime (from the ML server's" in text
    [regime] = [r for r in ml_client.bandit_state("meta-orchestrator").regimes if r.decisions]
    assert regime.regime == expected.current_label


def test_an_existing_bandit_is_used_as_it_is(settings: Settings, ml_client: MLClient) -> None:
    ml_client.bandit_create(BanditCreateRequest(name="desk", policy="ucb1"))
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    tool.run(regime="volatile", bandit="desk")
    assert tool.last_result is not None
    assert tool.last_result.data["created"] is False and tool.last_result.data["policy"] == "ucb1"


def test_server_down_round_robins_through_the_agents_in_order(dead_server: Settings) -> None:
    tool = AgentSelectionTool(settings=dead_server)
    chosen = []
    for _ in range(5):
        text = tool.run(regime="bull")
        result = tool.last_result
        assert result is not None and result.ok and result.degraded and result.data["decision_id"] is None
        assert "ML server unavailable: round-robin choice, no learning" in text and "degraded: true" in text
        chosen.append(result.data["agent"])
    assert chosen == [*_AGENTS, "conservative"]
    tool.run(regime="bear")  # each regime keeps its own turn
    assert tool.last_result is not None and tool.last_result.data["agent"] == "conservative"


def test_server_down_auto_regime_uses_the_rule_estimate(dead_server: Settings) -> None:
    tool = AgentSelectionTool(settings=dead_server)
    tool.run(symbol="SP500", lookback=400)
    assert tool.last_result is not None and tool.last_result.degraded
    assert tool.last_result.data["regime"] == regime_fallback(load_sample("SP500").tail(401))["current_label"]
    assert tool.last_result.data["regime_source"] == "rule-based estimate"


def test_reward_with_the_server_down_is_not_pretended(dead_server: Settings) -> None:
    tool = AgentSelectionTool(settings=dead_server)
    text = tool.run(decision_id="dec-0123456789abcdef", reward=0.01)
    assert "was NOT recorded" in text and "report them again" in text
    result = tool.last_result
    assert result is not None and not result.ok and result.degraded and result.data["recorded"] is False


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"decision_id": "dec-0123456789abcdef"}, "decision_id was given without reward"),
        ({"reward": 0.01}, "reward was given without decision_id"),
        ({"decision_id": "dec-0123456789abcdef", "reward": "a lot"}, "reward: 'a lot' is not a number"),
        ({"regime": "euphoric"}, "regime: unknown 'euphoric'"),
        ({"policy": "greedy"}, "policy: unknown 'greedy'"),
        ({"bandit": "my bandit!"}, "bandit: 'my bandit!' is not a usable name"),
        ({"symbol": "NOPE_NOT_A_SYMBOL"}, "cannot use the data"),
    ],
)
def test_bad_arguments_come_back_as_sentences(settings: Settings, ml_client: MLClient, kwargs: dict[str, object],
                                              needle: str) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    text = tool.run(**kwargs)
    assert text.startswith("agent_selection: bad argument") or text.startswith("agent_selection: cannot use")
    assert needle in text
    assert tool.last_result is not None and not tool.last_result.ok


async def test_arun_selects_then_records(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ml.test")
        async with AsyncMLClient(http) as client:
            tool = AgentSelectionTool(settings=settings, async_client=client)
            await tool.arun(regime="bull")
            assert tool.last_result is not None and tool.last_result.data["created"] is True
            decision_id = tool.last_result.data["decision_id"]
            text = await tool.arun(decision_id=decision_id, reward=-0.01)
            state = await client.bandit_state("meta-orchestrator")
    assert f"Recorded reward -0.01 for decision {decision_id}" in text
    assert state.pulls == 1


def test_tool_name_and_schema_are_stable() -> None:
    tool = AgentSelectionTool()
    assert tool.name == "agent_selection"
    props = tool.args_schema.model_json_schema()["properties"]
    assert set(props) == {"symbol", "regime", "lookback", "end_date", "bandit", "policy", "explore", "decision_id",
                          "reward"}
    assert all(p.get("description") for p in props.values())


def test_selection_is_deterministic_by_default_and_says_why(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    pays = {"conservative": 0.001, "aggressive": -0.002, "balanced": 0.003, "contrarian": 0.0}
    for _ in range(12):  # some evidence, gathered the way the bandit learns: drawing
        tool.run(regime="bull", explore=True)
        assert tool.last_result is not None and tool.last_result.data["selection"] == "explore"
        data = tool.last_result.data
        tool.run(decision_id=data["decision_id"], reward=pays[data["agent"]])
    before = ml_client.bandit_state("meta-orchestrator")
    texts, agents = [], []
    for _ in range(5):
        texts.append(tool.run(regime="bull"))
        assert tool.last_result is not None and tool.last_result.ok
        agents.append(tool.last_result.data["agent"])
        assert tool.last_result.data["selection"] == "exploit"
    after = ml_client.bandit_state("meta-orchestrator")
    assert len(set(agents)) == 1 and after.data_hash == before.data_hash and after.pulls == before.pulls
    [bull] = [r for r in before.regimes if r.regime == "bull"]
    rewarded = [a for a in bull.explanation if a.mean_reward is not None]
    assert agents[0] == max(rewarded, key=lambda a: a.mean_reward or 0.0).arm
    assert tool.last_result is not None
    reason = tool.last_result.data["reason"]
    assert reason.startswith(f"{agents[0]} has the highest mean reward in the bull regime")
    assert all(f"Why: {reason}." in t and "deterministic for this bandit state" in t for t in texts)


def test_a_bandit_without_rewards_says_to_warm_start(settings: Settings, ml_client: MLClient) -> None:
    tool = AgentSelectionTool(settings=settings, client=ml_client)
    text = tool.run(regime="volatile")
    assert tool.last_result is not None and tool.last_result.data["agent"] == "conservative"
    assert "no rewards yet in regime volatile" in text and "quantcrew setup" in text
