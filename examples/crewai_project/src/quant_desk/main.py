#!/usr/bin/env python
"""Entry points of the project, as ``crewai create crew`` lays them out: ``run`` (``crewai run``, ``run_crew``)
kicks the crew off; ``run_flow`` runs quantcrew's daily flow instead.

Settings come from the environment as for ``quantcrew`` itself: ``QUANTCREW_CLIENT__URL`` names the ML
server (start one with ``quantcrew server``; without one every tool answers from its fallback rule and
says ``degraded``), ``QUANTCREW_CREW__LLM`` the LLM (default: the offline planner, no key needed).
``QUANT_DESK_SYMBOLS``, ``QUANT_DESK_END_DATE`` and ``QUANT_DESK_LOOKBACK`` (daily bars) choose what to decide on.
"""

from __future__ import annotations

import os
from typing import Any

from crewai import CrewOutput

from quant_desk.crew import QuantDesk


def _inputs() -> dict[str, Any]:
    inputs: dict[str, Any] = {"symbols": os.environ.get("QUANT_DESK_SYMBOLS", "SP500,NASDAQ"),
                              "lookback": int(os.environ.get("QUANT_DESK_LOOKBACK", "750"))}
    if os.environ.get("QUANT_DESK_END_DATE"):
        inputs["end_date"] = os.environ["QUANT_DESK_END_DATE"]
    return inputs


def run() -> CrewOutput:
    """Run the crew: one decision per symbol, printed and written to ``output/decision.json``."""
    desk = QuantDesk()
    output = desk.crew().kickoff(inputs=_inputs())
    if not isinstance(output, CrewOutput):  # a streaming crew would return chunks: this one does not stream
        raise TypeError(f"expected a CrewOutput, got {type(output).__name__}")
    if desk.decision is not None:
        print(desk.decision.summary())
    for note in desk.degraded_notes:
        print(f"DEGRADED: {note}")
    return output


def run_flow() -> Any:
    """Run quantcrew's daily flow (regime, risk, strategy, decision, outcomes), its state kept by flow id."""
    from quantcrew.crew import DailyFlow

    inputs = _inputs()
    state = DailyFlow().kickoff(inputs={"symbols": inputs["symbols"], "lookback": inputs["lookback"],
                                        "as_of": inputs.get("end_date")})
    print(state.summary())
    return state


if __name__ == "__main__":
    run()
