"""What importing each group of our modules loads, measured once in fresh interpreters.

The light-import tests of several packages read it. The agent-side groups are imported in one
child, in the order of :data:`STEPS`, lightest first, and after each step every module loaded so
far is recorded: a step's record is a superset of what its own imports load in a fresh
interpreter, so a check that something is absent is never weaker than one run in a process of
its own. One child instead of one per test: the agent-side groups load CrewAI, seconds each time.
The server app, which loads the most, is imported in a second child of its own (:data:`SERVER_STEPS`).

Both children start as soon as this module is imported (when pytest collects a test module that
reads it) and run beside the collection and the tests before the first reader, on the core the
test process leaves free; :func:`loaded_after` waits for them.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from functools import cache

__all__ = ["SERVER_STEPS", "STEPS", "loaded_after"]

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
}
"""Step name -> the code it runs, in one child; later steps load more."""

SERVER_STEPS: dict[str, str] = {"server app": "import quantcrew.ml_server.app\n"}
"""Step name -> the code it runs, in a child of its own (the server app, from a fresh interpreter)."""


_CWD = tempfile.TemporaryDirectory(prefix="light-imports-")  # no stray .env or package shadows ours


def _spawn(steps: dict[str, str]) -> subprocess.Popen[str]:
    code = "import json as _json, sys as _sys\n_loaded = {}\n"
    for name, step in steps.items():
        code += f"{step}_loaded[{name!r}] = sorted(_sys.modules)\n"
    code += "print(_json.dumps(_loaded))\n"
    # started at collection, before the tests' clean environment: it is cleaned here the same way
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=_CWD.name)


_CHILDREN = [_spawn(STEPS), _spawn(SERVER_STEPS)]


@atexit.register
def _stop_unread() -> None:
    """A session that never read the records (its tests deselected) leaves no child behind."""
    for child in _CHILDREN:
        if child.poll() is None:
            child.kill()
            child.communicate()
    _CWD.cleanup()


@cache
def loaded_after() -> dict[str, frozenset[str]]:
    """Step name -> every module in ``sys.modules`` once that step has run (and all steps of its child before it)."""
    loaded: dict[str, list[str]] = {}
    for child in _CHILDREN:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        loaded.update(json.loads(out.strip().splitlines()[-1]))
    return {name: frozenset(modules) for name, modules in loaded.items()}
