"""The agent side stays light: no ML framework is imported by tools, agents, crew, data or config."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "sklearn", "hmmlearn", "stable_baselines3", "gymnasium", "scipy", "arch")


def test_agent_side_imports_no_ml_framework() -> None:
    code = (
        "import sys\n"
        "import quantcrew.tools, quantcrew.agents, quantcrew.crew, quantcrew.data, quantcrew.config\n"
        "import quantcrew.cli, quantcrew.crew.planner_llm, quantcrew.tools.regime, quantcrew.tools.risk\n"
        "import quantcrew.tools.factors, quantcrew.tools.clustering, quantcrew.tools.anomaly\n"
        "import quantcrew.tools.strategy, quantcrew.tools.selection\n"
        "import quantcrew.tools.ensemble, quantcrew.tools.execution, quantcrew.backtest\n"
        "import quantcrew.crew.kickoff, quantcrew.crew.decision, quantcrew.crew.views, quantcrew.crew.budget\n"
        "import quantcrew.crew.decision_tool, quantcrew.crew.converter, quantcrew.crew.runs\n"
        "import quantcrew.crew.schedule, quantcrew.crew.scheduler, quantcrew.cli.schedule\n"
        "import quantcrew.backtest.walk_forward, quantcrew.backtest.report, quantcrew.cli.backtest\n"
        "from quantcrew.tools.fallbacks import ensemble_fallback, execution_fallback\n"
        "from quantcrew.data import load_sample as _ls\n"
        "_r = ensemble_fallback(_ls('SP500').tail(200)); execution_fallback(_ls('SP500').tail(200), 'up', 0.6)\n"
        "from quantcrew.data import load_sample\n"
        "load_sample('SP500')\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"agent side imported: {proc.stdout.strip()}"


def test_schemas_import_without_fastapi_or_ml() -> None:
    code = (
        "import sys\n"
        "import quantcrew.ml_server.schemas.common, quantcrew.ml_server.schemas.regime\n"
        "import quantcrew.ml_server.schemas.risk, quantcrew.ml_server.schemas.risk_backtest\n"
        "import quantcrew.ml_server.schemas.decompose, quantcrew.ml_server.schemas.cluster\n"
        "import quantcrew.ml_server.schemas.anomaly, quantcrew.ml_server.schemas.supervised\n"
        "import quantcrew.ml_server.schemas.ensemble, quantcrew.ml_server.schemas.execution\n"
        f"print(','.join(m for m in {HEAVY + ('fastapi', 'starlette')!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_importing_the_server_app_does_not_load_torch() -> None:
    # Devices and models are resolved in the lifespan, never at import.
    code = "import sys\nimport quantcrew.ml_server.app\nprint('torch' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_decision_and_schedule_modules_do_not_import_crewai() -> None:
    # the scheduler's store and the decision pipeline are used where crewai's seconds of import would hurt
    code = ("import sys\nimport quantcrew.crew.decision, quantcrew.crew.schedule, quantcrew.crew.runs\n"
            "print('crewai' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
