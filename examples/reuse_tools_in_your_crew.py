"""Reuse quantcrew's tools in a crew that is not quantcrew's: your agent, your task, your LLM.

Run a server first (``quantcrew-server``), then::

    QUANTCREW_CLIENT__URL=http://127.0.0.1:8765 OPENAI_API_KEY=... python examples/reuse_tools_in_your_crew.py

Nothing here comes from quantcrew's own crews: only two tools are borrowed. Without a server
the tools still answer, from their numpy fallbacks, and say ``degraded: true``.
"""

from __future__ import annotations

from typing import Any

from crewai import LLM, Agent, Crew, Process, Task

from quantcrew.tools import RegimeDetectionTool, RiskMetricsTool


def build_crew(llm: Any, tools: list[Any] | None = None) -> Crew:
    """A one-agent macro desk that checks the regime, then the risk of a 60/40 index book."""
    tools = tools if tools is not None else [RegimeDetectionTool(), RiskMetricsTool()]
    desk = Agent(
        role="Macro desk lead",
        goal="Decide whether the SP500 / NASDAQ book should be cut, with numbers from the tools.",
        backstory="You run a small index book and never quote a number you did not get from a tool.",
        tools=tools, llm=llm, allow_delegation=False, max_iter=5, verbose=False,
    )
    check = Task(
        description="Check the SP500 market regime, then the one-day 99% VaR of a 60/40 SP500 / NASDAQ book, "
                    "and say whether to cut it.",
        expected_output="Two sentences: the regime with its probability, the VaR, and the call.",
        agent=desk,
    )
    return Crew(agents=[desk], tasks=[check], process=Process.sequential, verbose=False)


if __name__ == "__main__":
    crew = build_crew(LLM(model="openai/gpt-4o-mini"))
    print(crew.kickoff())
