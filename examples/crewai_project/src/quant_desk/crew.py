"""The project's crew: quantcrew's ``QuantCrew`` (its agents, tasks, tools, YAML and decision pipeline) with one
``@after_kickoff`` hook of the project's own, which writes the decision to ``output/decision.json``.

There is no ``config/`` folder here on purpose: the agents and tasks are quantcrew's
``config/agents.yaml`` and ``config/tasks.yaml`` (``QuantCrew.agents_config`` / ``tasks_config``
point at them), so the project and ``quantcrew run`` can never drift apart. A project that wants its
own wording sets ``agents_config = "config/agents.yaml"`` (and ``tasks_config``) on the class and
copies the two files, keeping their keys: the class builds its agents and tasks by those keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crewai import CrewOutput
from crewai.project import CrewBase, after_kickoff

from quantcrew.crew import QuantCrew

OUTPUT_DIR = "output"
"""Where :meth:`QuantDesk.save_decision` writes (relative to the working folder, as crewAI's ``output_file``);
``QUANT_DESK_OUTPUT`` overrides it."""


@CrewBase
class QuantDesk(QuantCrew):
    """quantcrew's crew: the regime analyst, risk manager, strategy agent and meta-orchestrator, one decision per
    symbol. Built like any ``@CrewBase`` crew: ``QuantDesk().crew().kickoff(inputs={...})``."""

    @after_kickoff
    def save_decision(self, output: CrewOutput) -> CrewOutput:
        """Write the decision (the decision pipeline's, whatever an LLM wrote) as JSON for the desk's records."""
        if self.decision is not None:
            folder = Path(os.environ.get("QUANT_DESK_OUTPUT", OUTPUT_DIR))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "decision.json").write_text(json.dumps(self.decision.model_dump(mode="json"), indent=2),
                                                  encoding="utf-8")
        return output
