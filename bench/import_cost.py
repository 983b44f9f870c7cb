"""Import time and peak RSS: the agent side versus the server's ML stack (fresh processes); then the
server's start-up: ``python -m quantcrew.ml_server`` to its first 200 on ``/ready`` (device ``auto`` and
``cpu``), and how long a second server on a home in use takes to refuse.

Run: .venv/bin/python bench/import_cost.py [--repeat 5] [--only imports|server]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _table import print_table

from quantcrew.config.server_lock import hold_home
from quantcrew.crew.server_process import free_port

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


def import_table(repeat: int) -> None:
    rows = []
    base_rss = None
    for name, imports in CASES.items():
        times, rss, heavy = [], [], []
        for _ in range(repeat):
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
    print(f"import cost, {repeat} fresh processes each (seconds, MiB)")
    print_table(["case", "median_s", "max_s", "peak_rss_mb", "rss_over_bare_mb", "heavy_modules"], rows)
    agent, server = rows[1], rows[-1]
    print(f"\nserver stack / agent side: time x{server[1] / agent[1]:.2f}, peak RSS x{server[3] / agent[3]:.2f}")


def _server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    return {**env, "QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__PRELOAD": "false", **extra}


def _start_to_ready(device: str) -> tuple[float, str]:
    """Seconds from spawning the server to its first 200 on /ready, and the device it reports."""
    home = Path(tempfile.mkdtemp(prefix="qc-bench-home-"))
    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "quantcrew.ml_server", "--port", str(port), "--log-level",
                             "warning"], env=_server_env(home, QUANTCREW_SERVER__DEVICE=device),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with code {proc.returncode}")
                try:
                    reply = http.get("/ready")
                    if reply.status_code == 200:
                        return time.perf_counter() - began, str(reply.json()["device"])
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)


def _refusal() -> float:
    """Seconds a second server takes to exit 2 on a home another server holds."""
    home = Path(tempfile.mkdtemp(prefix="qc-bench-home-"))
    with hold_home(home, "http://127.0.0.1:9"):
        began = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "quantcrew.ml_server", "--port", str(free_port())],
                              env=_server_env(home), capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - began
    if proc.returncode != 2 or "in use by another ML server" not in proc.stderr:
        raise RuntimeError(f"expected a refusal, got code {proc.returncode}: {proc.stderr[-500:]}")
    return elapsed


def server_table(repeat: int) -> None:
    rows: list[list[object]] = []
    for device in ("auto", "cpu"):
        runs = [_start_to_ready(device) for _ in range(repeat)]
        times = [t for t, _ in runs]
        rows.append([f"start to /ready, device {device}", statistics.median(times), min(times), max(times),
                     runs[0][1]])
    times = [_refusal() for _ in range(repeat)]
    rows.append(["second server on a home in use: exit 2", statistics.median(times), min(times), max(times), "-"])
    print(f"server start-up, {repeat} fresh processes each (seconds; preload off, as in the tests)")
    print_table(["case", "median_s", "min_s", "max_s", "device"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["imports", "server"])
    args = parser.parse_args()
    if args.only != "server":
        import_table(args.repeat)
    if args.only != "imports":
        if args.only is None:
            print()
        server_table(args.repeat)


if __name__ == "__main__":
    main()
