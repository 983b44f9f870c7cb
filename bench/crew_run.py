"""Wall time of one full four-agent crew run (two symbols, offline planner, warm server).

The baseline, measured in the same run, is the same tool calls made directly (no crew, no
planner): the ratio is what CrewAI's executor, the planner and the runs store add.

Run: .venv/bin/python bench/crew_run.py [--runs 10] [--symbols SP500,NASDAQ]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _table import print_table, summary

from quantcrew.config.settings import load_settings
from quantcrew.crew.kickoff import run
from quantcrew.crew.server_process import LocalServer


def _direct(settings, symbols: str, lookback: int) -> None:  # type: ignore[no-untyped-def]
    """The crew's tool calls, made in sequence by hand (the baseline)."""
    from quantcrew.tools import (
        AgentSelectionTool,
        AnomalyDetectionTool,
        EnsembleSignalTool,
        ExecutionPlanTool,
        RegimeDetectionTool,
        RiskMetricsTool,
        StrategySignalTool,
        make_client,
    )

    client = make_client(settings.client)
    kw = {"settings": settings, "client": client}
    names = symbols.split(",")
    for name in names:
        RegimeDetectionTool(**kw).run(symbol=name, lookback=lookback)
    RiskMetricsTool(**kw).run(symbols=symbols, lookback=lookback)
    AnomalyDetectionTool(**kw).run(symbols=symbols, lookback=lookback)
    for name in names:
        EnsembleSignalTool(**kw).run(symbol=name, lookback=lookback)
        StrategySignalTool(**kw).run(symbol=name, lookback=lookback)
        ExecutionPlanTool(**kw).run(symbol=name, lookback=lookback)
        AgentSelectionTool(**kw).run(symbol=name, regime="bull")
        ExecutionPlanTool(**kw).run(symbol=name, lookback=lookback, signal="up", confidence=0.9)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--symbols", default="SP500,NASDAQ")
    parser.add_argument("--lookback", type=int, default=750)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="qc-crew-bench-"))
    with LocalServer(env={"QUANTCREW_HOME": str(home)}, log_path=home / "server.log") as server:
        settings = load_settings(home=home)
        settings.client.url = server.url
        run({"symbols": args.symbols, "lookback": args.lookback}, settings)  # warm: imports, first fits, bandit
        _direct(settings, args.symbols, args.lookback)
        crew_s, direct_s, calls = [], [], 0
        for _ in range(args.runs):
            t = time.perf_counter()
            outcome = run({"symbols": args.symbols, "lookback": args.lookback}, settings)
            crew_s.append(time.perf_counter() - t)
            calls = outcome.llm_calls
            t = time.perf_counter()
            _direct(settings, args.symbols, args.lookback)
            direct_s.append(time.perf_counter() - t)
    c, d = summary(crew_s), summary(direct_s)
    print(f"full crew, {args.symbols}, lookback {args.lookback}, {args.runs} runs, {calls} planner LLM calls per run")
    print_table(["path", "median s", "p95 s", "p99 s"], [
        ["full crew run (kickoff.run)", c["median"], c["p95"], c["p99"]],
        ["same tool calls, no crew (baseline)", d["median"], d["p95"], d["p99"]],
        ["ratio crew / baseline", c["median"] / d["median"], c["p95"] / d["p95"], c["p99"] / d["p99"]],
    ])


if __name__ == "__main__":
    main()
