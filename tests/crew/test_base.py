"""``QuantCrew``: the crew as a crewAI ``@CrewBase`` class, from the same YAML, factories and tools as
``quantcrew run``, and deciding as it does."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from crewai import CrewOutput, Process
from crewai.project import CrewBase, after_kickoff

from quantcrew.config.paths import AGENTS_YAML, TASKS_YAML
from quantcrew.config.settings import Settings
from quantcrew.crew.base import TASKS, QuantCrew
from quantcrew.crew.crew import CREWS
from quantcrew.crew.decision import Decision
from quantcrew.crew.kickoff import run
from quantcrew.crew.server_process import LocalServer, free_port
from quantcrew.crew.views import RegimeView, RiskView, StrategyView
from tests.crew.conftest import FOLLOWED
from tests.support.offline import isolate_crewai

INPUTS = {"symbols": "SP500,NASDAQ", "lookback": 300, "end_date": "2013-06-28"}


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    return isolate_crewai(monkeypatch, tmp_path)


def _dead(settings: Settings) -> str:
    settings.client.retries = 0
    return f"http://127.0.0.1:{free_port()}"


def _without_ids(decision: Decision) -> str:
    """The decision as JSON with the bandit's decision ids (new on every selection) blanked."""
    return re.sub(r"dec-[0-9a-f]+", "dec-?", json.dumps(decision.model_dump(mode="json"), sort_keys=True))


def _kickoff(quant: QuantCrew, inputs: dict[str, Any]) -> CrewOutput:
    output = quant.crew().kickoff(inputs=inputs)
    assert isinstance(output, CrewOutput)
    return output


def _yaml(path: Path) -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def test_the_class_builds_the_four_agents_and_tasks_from_the_yaml_with_the_crews_tools(settings: Settings) -> None:
    quant = QuantCrew(settings)
    built = quant.crew()
    agents_yaml, tasks_yaml = _yaml(AGENTS_YAML), _yaml(TASKS_YAML)
    loaded = vars(quant)  # crewAI's own loading of the two files: the same entries
    assert loaded["agents_config"] == agents_yaml and loaded["tasks_config"].keys() == tasks_yaml.keys()
    assert [t.name for t in built.tasks] == list(TASKS) == list(CREWS["full"].tasks)
    for t in built.tasks:
        assert t.name is not None
        entry = tasks_yaml[t.name]
        assert t.description == entry["description"] and t.expected_output == entry["expected_output"]
        assert t.agent is not None and t.agent.role == agents_yaml[entry["agent"]]["role"]
    assert [t.output_pydantic for t in built.tasks] == [RegimeView, RiskView, StrategyView, Decision]
    assert [a.role.strip() for a in built.agents] == [agents_yaml[k]["role"].strip() for k in CREWS["full"].agents]
    expected = {agents_yaml[key]["role"].strip(): [cls.model_fields["name"].default
                                                    for cls in CREWS["full"].agent_tools[key]()]
                for key in CREWS["full"].agents}
    expected["Meta-Orchestrator"].append("portfolio_decision")  # the decision pipeline, as `quantcrew run` adds it
    assert {a.role.strip(): [tool.name for tool in a.tools or []] for a in built.agents} == expected
    assert all(a.llm is quant.llm for a in built.agents) and built.process == Process.sequential
    assert quant.llm.model == "quantcrew-planner"


def test_kickoff_with_the_planner_decides_as_quantcrew_run_does(taught_server: LocalServer, settings: Settings,
                                                               tmp_path: Path, refused: list[str]) -> None:
    from quantcrew.config.settings import load_settings

    settings.client.url = taught_server.url
    expected = run(INPUTS, settings)
    quant = QuantCrew(load_settings(home=tmp_path / "other-home"), server_url=taught_server.url)
    output = _kickoff(quant, INPUTS)
    decision = quant.decision
    assert decision is not None and expected.decision is not None
    assert output.pydantic == decision  # the crew's structured output is the pipeline's decision
    assert _without_ids(decision) == _without_ids(expected.decision)
    # the same tool calls with the same arguments (the strategy agent's run in parallel: order aside)
    assert sorted(json.dumps([r.tool, r.arguments], sort_keys=True) for r in quant.results) == \
        sorted(json.dumps([r.tool, r.arguments], sort_keys=True) for r in expected.tool_results)
    # not a trivial equality: the taught bandit's agent is followed and holds a position on both symbols
    assert [(d.symbol, d.followed) for d in decision.decisions] == [("SP500", FOLLOWED), ("NASDAQ", FOLLOWED)]
    assert all(abs(d.target_position) > 0.05 and d.decision_id for d in decision.decisions)
    assert quant.degraded == expected.degraded and quant.degraded  # no ensemble or policy trained: rules answered
    assert any(n.startswith("strategy_signals[SP500]") for n in quant.degraded_notes)
    assert refused == []


def test_one_instance_is_one_run_and_a_second_kickoff_is_refused(settings: Settings, refused: list[str]) -> None:
    quant = QuantCrew(settings, server_url=_dead(settings), symbols=["SP500"])
    output = _kickoff(quant, {"lookback": 300})
    assert quant.inputs["symbols"] == "SP500" and quant.inputs["weights"] == "1"  # the defaults filled in
    assert isinstance(output.pydantic, Decision) and quant.degraded
    assert any("could not be reached" in n or "unavailable" in n.lower() for n in quant.degraded_notes)
    with pytest.raises(RuntimeError, match="has run already"):
        quant.crew().kickoff(inputs={"symbols": "NASDAQ", "lookback": 300})
    assert quant.decision is not None and [d.symbol for d in quant.decision.decisions] == ["SP500"]
    assert refused == []


def test_hierarchical_process_has_the_meta_orchestrator_delegate_each_task(settings: Settings,
                                                                          refused: list[str]) -> None:
    quant = QuantCrew(settings, server_url=_dead(settings), process="hierarchical")
    built = quant.crew()
    assert built.process == Process.hierarchical and built.manager_agent is not None
    assert built.manager_agent.tools == [] and built.manager_agent not in built.agents
    output = _kickoff(quant, {"symbols": "SP500", "lookback": 300})
    assert {"regime_detection", "risk_metrics", "strategy_signals", "portfolio_decision"} <= \
        {r.tool for r in quant.results}
    assert output.pydantic == quant.decision and quant.decision is not None
    assert refused == []


def test_instances_made_one_after_another_keep_their_own_agents_and_tools(settings: Settings) -> None:
    seen: list[int] = []
    for _ in range(4):
        quant = QuantCrew(settings)
        seen.append(id(quant))
        # crewAI memoizes @agent by id(instance): an agent of a dead instance must never come back
        analyst = quant.task_for("market_regimes").agent
        assert analyst is not None and analyst.tools
        tool = analyst.tools[0]
        assert getattr(tool, "on_result", None) == quant._keep
        del quant, tool, analyst
        gc.collect()
    assert len(set(seen)) == len(seen)  # the cached agents keep their instances alive: no id comes back


def test_a_subclass_keeps_the_crews_tasks_and_hooks_and_adds_its_own(settings: Settings,
                                                                     refused: list[str]) -> None:
    ran: list[str] = []

    @CrewBase
    class Desk(QuantCrew):
        @after_kickoff
        def report(self, output: Any) -> Any:
            ran.append(type(output.pydantic).__name__)
            return output

    desk = Desk(settings, server_url=_dead(settings))
    built = desk.crew()
    assert [t.name for t in built.tasks] == list(TASKS)
    desk.crew().kickoff(inputs={"symbols": "SP500", "lookback": 300})
    assert desk.decision is not None and ran == ["Decision"]  # its hook ran after the crew's own
    assert refused == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"process": "parallel"}, "process must be one of"),
])
def test_bad_arguments_are_refused_with_their_name(settings: Settings, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QuantCrew(settings, **kwargs)
