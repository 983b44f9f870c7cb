"""Import time and peak RSS: the agent side versus the server's ML stack (fresh processes).

Run: .venv/bin/python bench/import_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from _table import print_table

PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
{imports}
elapsed = time.perf_counter() - t0
heavy = [m for m in ("torch", "sklearn", "hmmlearn", "stable_baselines3", "gymnasium") if m in sys.modules]
print(json.dumps({{"s": elapsed, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "heavy": heavy}}))
"""

CASES = {
    "bare python (baseline)": "pass",
    "agent side (tools+agents+crew)": "import quantcrew.tools, quantcrew.agents, quantcrew.crew",
    "one tool (RegimeDetectionTool)": "from quantcrew.tools import RegimeDetectionTool",
    "ML client only": "import quantcrew.tools.client",
    "crewai alone": "import crewai",
    "server ML stack": "import torch, sklearn, hmmlearn.hmm, stable_baselines3, gymnasium, quantcrew.ml_server.app",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    base_rss = None
    for name, imports in CASES.items():
        times, rss, heavy = [], [], []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True,
                                 text=True, check=True).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            times.append(rec["s"])
            rss.append(rec["rss_mb"])
            heavy = rec["heavy"]
        med_rss = statistics.median(rss)
        base_rss = base_rss or med_rss
        rows.append([name, statistics.median(times), max(times), med_rss, med_rss - base_rss,
                     ",".join(heavy) or "-"])
    print(f"import cost, {args.repeat} fresh processes each (seconds, MiB)")
    print_table(["case", "median_s", "max_s", "peak_rss_mb", "rss_over_bare_mb", "heavy_modules"], rows)
    agent, server = rows[1], rows[-1]
    print(f"\nserver stack / agent side: time x{server[1] / agent[1]:.2f}, peak RSS x{server[3] / agent[3]:.2f}")


if __name__ == "__main__":
    main()
