"""What importing each group of our modules loads, measured once in one fresh interpreter.

The light-import tests of several packages read it. The groups are imported in the order of
:data:`STEPS`, lightest first, and after each step every module loaded so far is recorded: a
step's record is a superset of what its own imports load in a fresh interpreter, so a check
that something is absent is never weaker than one run in a process of its own. One child
process instead of one per test: the agent-side groups load CrewAI, seconds each time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

__all__ = ["STEPS", "loaded_after"]

STEPS: dict[str, str] = {
    "server schemas": (
        "import quantcrew.ml_server.schemas.common, quantcrew.ml_server.schemas.regime\n"
        "import quantcrew.ml_server.schemas.risk, quantcrew.ml_server.schemas.risk_backtest\n"
        "import quantcrew.ml_server.schemas.decompose, quantcrew.ml_server.schemas.cluster\n"
        "import quantcrew.ml_server.schemas.anomaly, quantcrew.ml_server.schemas.supervised\n"
        "import quantcrew.ml_server.schemas.ensemble, quantcrew.ml_server.schemas.execution\n"
    ),
    "backtest command": "import quantcrew.cli.backtest\n",
    "cli": "import quantcrew.cli\n",
    "decision and schedule": "import quantcrew.crew.decision, quantcrew.crew.schedule, quantcrew.crew.runs\n",
    "backtest": (
        "import quantcrew.backtest.walk_forward, quantcrew.backtest.report, quantcrew.cli.backtest\n"
        "import quantcrew.backtest.book, quantcrew.crew.decision, quantcrew.tools.selection\n"
    ),
    "agent side": (
        "import quantcrew.tools, quantcrew.agents, quantcrew.crew, quantcrew.data, quantcrew.config\n"
        "import quantcrew.cli, quantcrew.crew.planner_llm, quantcrew.tools.regime, quantcrew.tools.risk\n"
        "import quantcrew.tools.factors, quantcrew.tools.clustering, quantcrew.tools.anomaly\n"
        "import quantcrew.tools.strategy, quantcrew.tools.selection\n"
        "import quantcrew.tools.ensemble, quantcrew.tools.execution, quantcrew.backtest\n"
        "import quantcrew.crew.kickoff, quantcrew.crew.decision, quantcrew.crew.views, quantcrew.crew.budget\n"
        "import quantcrew.crew.decision_tool, quantcrew.crew.converter, quantcrew.crew.runs\n"
        "import quantcrew.crew.schedule, quantcrew.crew.scheduler, quantcrew.cli.schedule\n"
        "import quantcrew.backtest.walk_forward, quantcrew.backtest.report, quantcrew.cli.backtest\n"
        # the fallbacks run, not only load: they answer when the server cannot
        "from quantcrew.tools.fallbacks import ensemble_fallback, execution_fallback\n"
        "from quantcrew.data import load_sample\n"
        "_bars = load_sample('SP500').tail(200)\n"
        "ensemble_fallback(_bars); execution_fallback(_bars, 'up', 0.6)\n"
    ),
    "server app": "import quantcrew.ml_server.app\n",
}
"""Step name -> the code it runs; later steps load more (the server app, which loads the most, last)."""


@cache
def loaded_after() -> dict[str, frozenset[str]]:
    """Step name -> every module in ``sys.modules`` once that step has run (and all steps before it)."""
    code = "import json as _json, sys as _sys\n_loaded = {}\n"
    for name, step in STEPS.items():
        code += f"{step}_loaded[{name!r}] = sorted(_sys.modules)\n"
    code += "print(_json.dumps(_loaded))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: frozenset(modules) for name, modules in loaded.items()}
