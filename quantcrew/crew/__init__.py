"""Crew assembly, kickoff, the decision pipeline, runs store, schedules and the scheduler.

Names resolve lazily (as in ``quantcrew.tools``): ``import quantcrew.crew.decision`` or
``quantcrew.crew.schedule`` does not pay for importing crewai (several seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["CrewRunError", "DailyFlow", "DailyState", "Decision", "QuantCrew", "RiskLimits", "RunOutcome", "decide",
           "run"]

_WHERE = {
    "CrewRunError": "quantcrew.crew.kickoff",
    "RunOutcome": "quantcrew.crew.kickoff",
    "run": "quantcrew.crew.kickoff",
    "Decision": "quantcrew.crew.decision",
    "RiskLimits": "quantcrew.crew.decision",
    "decide": "quantcrew.crew.decision",
    "QuantCrew": "quantcrew.crew.base",
    "DailyFlow": "quantcrew.crew.daily_flow",
    "DailyState": "quantcrew.crew.flow_state",
}

if TYPE_CHECKING:
    from quantcrew.crew.base import QuantCrew
    from quantcrew.crew.daily_flow import DailyFlow
    from quantcrew.crew.decision import Decision, RiskLimits, decide
    from quantcrew.crew.flow_state import DailyState
    from quantcrew.crew.kickoff import CrewRunError, RunOutcome, run


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'quantcrew.crew' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
