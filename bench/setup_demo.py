"""A fresh home, as a new user meets it: ``quantcrew setup`` then the demo's crew run, five times.

Prints four tables:

1. setup time per job (``quantcrew setup --symbols SP500,NASDAQ`` with its defaults, a real
   server on a loopback port, a fresh home); target: all of it under 10 minutes;
2. the gate results per model (measure, baseline, interval or p-value, passed);
3. five identical ``quantcrew run --symbols SP500,NASDAQ`` runs (what ``make demo`` runs after
   setup): wall time (median, p95; target under 5 s), and whether every decision is identical
   and ``degraded: false`` (gated inputs allowed, each named);
4. the bandit after setup: per regime the arm a live decision follows and its evidence, and the
   regret of the warm-started bandit over the replayed bars against the best single agent in
   hindsight.

Run: .venv/bin/python bench/setup_demo.py [--symbols SP500,NASDAQ] [--runs 5] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _table import pct, print_table

_CLI = [sys.executable, "-m", "quantcrew.cli"]


def _quantcrew(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run([*_CLI, *args], env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, done


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    if done.returncode not in (0, 1):
        raise SystemExit(f"quantcrew exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _gate_rows(jobs: list[dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []

    def add(symbol: str, model: str, gate: dict[str, Any] | None) -> None:
        if not gate:
            rows.append([symbol, model, "-", "-", "-", "-", "no verdict"])
            return
        deciding = [c for c in gate["checks"] if c["name"] != "brier"] or gate["checks"]
        first = deciding[0]
        value = "n/a" if first["value"] is None else f"{first['value']:.4f}"
        base = "n/a" if first["baseline_value"] is None else f"{first['baseline_value']:.4f}"
        extra = (f"CI [{gate['interval'][0]:+.3f}, {gate['interval'][1]:+.3f}]" if gate.get("interval")
                 else f"p={gate['p_value']:.3g}" if gate.get("p_value") is not None else "")
        failed = [c["name"] for c in gate["checks"] if not c["passed"]]
        rows.append([symbol, model, f"{first['measure']} {value}", f"{first['baseline']} {base}", extra,
                     "yes" if gate["passed"] else "no", ", ".join(failed) or "-"])

    for job in jobs:
        result = job.get("result") or {}
        if job["job"] == "rl":
            for p in result.get("policies", []):
                add(job["symbol"], f"rl {p['agent']}", p.get("gate"))
        elif job["job"] == "ensemble":
            add(job["symbol"], "ensemble", result.get("gate"))
            add(job["symbol"], "execution", result.get("execution_gate"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", default="SP500,NASDAQ")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--home", default=None, help="Home to use (default: a fresh temporary one).")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="qc-setup-bench-"))
    env = {**os.environ, "QUANTCREW_HOME": str(home), "COLUMNS": "200"}
    env.pop("QUANTCREW_CLIENT__URL", None)

    # a server of its own for the whole bench, as a user's home would have after `quantcrew server`
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "quantcrew.ml_server", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        decisions: list[str] = []
        setup_s, done = _quantcrew(["setup", "--symbols", args.symbols, "--json"], env)
        report = _json(done)
        print(f"\n1. quantcrew setup --symbols {args.symbols} (defaults, fresh home): {setup_s:.0f} s wall, "
              f"ok={report['ok']} (target < 600 s)")
        print_table(["symbol", "job", "status", "seconds", "detail"],
                    [[j["symbol"], j["job"], j["status"], f"{j['seconds']:.1f}", j["detail"][:110]]
                     for j in report["jobs"]])

        print("\n2. Gate results (out of sample, bars the model was not trained on)")
        print_table(["symbol", "model", "measure", "baseline", "interval / p", "passed", "failed checks"],
                    _gate_rows(report["jobs"]))

        walls: list[float] = []
        runs: list[float] = []
        last: dict[str, Any] = {}
        for _ in range(args.runs):
            seconds, done = _quantcrew(["run", "--symbols", args.symbols, "--json"], env)
            last = _json(done)
            walls.append(seconds)
            runs.append(float(last["duration_s"]))
            decision = last.get("decision") or {}
            decisions.append(json.dumps([{k: d[k] for k in ("symbol", "action", "target_position", "followed",
                                                             "why", "size")}
                                         for d in decision.get("decisions", [])], sort_keys=True))
        decision = last.get("decision") or {}
        print(f"\n3. quantcrew run --symbols {args.symbols}, {args.runs} identical runs after setup (warm server); "
              "run s = the crew run as the CLI reports it, wall s = the whole process (Python start, imports)")
        print_table(["runs", "run s median", "run s p95", "wall s median", "wall s p95", "identical decisions",
                     "degraded", "gated inputs"],
                    [[args.runs, statistics.median(runs), pct(runs, 95), statistics.median(walls), pct(walls, 95),
                      len(set(decisions)) == 1, decision.get("degraded"), len(decision.get("gated_inputs", []))]])
        for d in decision.get("decisions", []):
            print(f"   {d['symbol']}: {d['action']} {d['target_position']:+.2f} following {d['followed']}: {d['why']}")
        for line in decision.get("degraded_inputs", []):
            print(f"   DEGRADED {line}")
        for line in decision.get("gated_inputs", []):
            print(f"   gated {line}")
        print("\n4. The bandit after setup (warm-start replay)")
        rows = []
        for job in report["jobs"]:
            if job["job"] != "bandit" or not job.get("result"):
                continue
            r = job["result"]
            rows.append([job["symbol"], r.get("bars"), r.get("bandit_reward"), r.get("best_agent"),
                         r.get("best_agent_reward"), r.get("regret"), r.get("regret_per_bar")])
        print_table(["symbol", "bars", "bandit reward", "best agent", "its reward", "regret", "regret/bar"], rows)
        for job in report["jobs"]:
            for reg in (job.get("result") or {}).get("regimes", []) if job["job"] == "bandit" else []:
                print(f"   after {job['symbol']}: {reg['regime']} ({reg['bars']} bars) follows {reg['exploit_arm']} - "
                      f"{reg['reason']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    # what `make demo` does after setup: a `quantcrew run` that starts (and stops) its own server
    wall, done = _quantcrew(["run", "--symbols", args.symbols, "--json"], env)
    cold = _json(done)
    print("\n5. make demo's run after setup: `quantcrew run` starting its own server (cold: model code and models "
          "load with the first requests)")
    print_table(["run s", "wall s", "degraded", "same decision as the warm runs"],
                [[float(cold["duration_s"]), wall, (cold.get("decision") or {}).get("degraded"),
                  json.dumps([{k: d[k] for k in ("symbol", "action", "target_position", "followed", "why", "size")}
                              for d in (cold.get("decision") or {}).get("decisions", [])], sort_keys=True)
                  == decisions[-1]]])


if __name__ == "__main__":
    main()
