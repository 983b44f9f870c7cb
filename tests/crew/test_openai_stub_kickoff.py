"""The real-LLM path with no network: CrewAI's OpenAI provider against a local stub server."""

from __future__ import annotations

from pathlib import Path

import pytest
from crewai import LLM, Agent, Crew, Task

from tests.crew.test_planner_llm import EchoStatsTool
from tests.support.offline import isolate_crewai
from tests.support.openai_stub import openai_stub

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    return isolate_crewai(monkeypatch, tmp_path)


def test_kickoff_with_openai_llm_runs_tool_the_stub_asked_for(refused: list[str]) -> None:
    tool = EchoStatsTool()
    with openai_stub("echo_stats", {"symbol": "NDX", "lookback": 42}, final_text="Regime report from stub.") as stub:
        llm = LLM(model="openai/gpt-4o-mini", base_url=stub.base_url, api_key="test-key")
        agent = Agent(role="Regime Analyst", goal="Label regimes", backstory="Quant.", llm=llm, tools=[tool])
        task = Task(description="Analyse {symbol}.", expected_output="A report.", agent=agent)
        output = Crew(agents=[agent], tasks=[task]).kickoff(inputs={"symbol": "SP500"})

    first, second = stub.requests[0], stub.requests[-1]
    assert first["model"] == "gpt-4o-mini"
    assert [t["function"]["name"] for t in first["tools"]] == ["echo_stats"]
    assert "Analyse SP500." in str(first["messages"])
    assert tool.calls == [("NDX", 42)]  # the stub's arguments, not the kickoff inputs
    assert {"role": "tool", "tool_call_id": "call_stub_1", "name": "echo_stats", "content": "NDX:42"} in second[
        "messages"
    ]
    assert len(stub.requests) == 2
    assert "Regime report from stub." in output.raw and "NDX:42" in output.raw
    assert stub.unhandled == []
    assert refused == []
