"""Client failover between two ML servers: the primary is SIGKILLed mid-run, how long until the second answers?

Two real uvicorn servers (``python -m quantcrew.ml_server``) on loopback ports, each on its own home,
the same bandit created on both. One client made from settings with ``client.urls = [primary, secondary]``
(default breaker settings: ``breaker_reset_s`` 30 s, so it stays on the secondary for the run) calls in a
loop, alternating a stateless VaR (idempotent: it may be made again elsewhere) and a bandit select
(records a decision: it must never be made twice). A thread SIGKILLs the primary at a random moment; the
loop runs on for ``--after`` seconds. Then the killed server is restarted on its port and home (its
store is read back) and becomes the secondary of the next repetition, so the roles alternate.

Per repetition:

* failover ms: from the kill to the end of the first call answered by the secondary (whatever was in
  flight at the kill included: it is the client-visible stall). Median and p95 over repetitions.
* exit ms: from the kill until the process was gone (reaped); the kernel closes its sockets as it exits,
  and only then does the client see the connection reset. Part of the failover time that no client can save.
* 1st call ms / report ms: that first call split in two: the call itself (the failed attempt on the primary,
  the failover, the answer of the secondary) and the report of the primary's breaker opening, which the
  client sends to the secondary right after (``POST /v1/monitor/events``; ``--no-report`` leaves it out).
* gap ms: the longest time between two successful calls around the kill.
* lost: idempotent calls that raised (must be 0: the one in flight is made again on the secondary).
* refused in flight: selects that were in flight at the kill and raised (not replayed: they may have
  been recorded by the dying server). Not lost silently: the caller got an error naming the server.
* duplicated: decisions recorded on the two servers beyond the selects that returned or raised
  (must be 0: a select sent to both would count twice).

Run: ``.venv/bin/python bench/failover.py [--repeats 7] [--after 1.0] [--seed 0]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from _table import pct, print_table

from quantcrew.config.settings import ClientSettings
from quantcrew.crew.server_process import free_port
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest, BanditSelectRequest
from quantcrew.ml_server.schemas.risk import VarRequest
from quantcrew.tools.client import MLClient, make_client
from quantcrew.tools.errors import Conflict, MLClientError

SERVER_ENV = {"QUANTCREW_SERVER__PRELOAD": "false", "QUANTCREW_SERVER__DEVICE": "cpu"}
COLUMNS = {"failover_ms": "failover ms", "exit_ms": "exit ms", "first_call_ms": "1st call ms",
           "report_ms": "report ms", "gap_ms": "gap ms", "calls": "calls", "after_kill": "on 2nd after kill",
           "lost": "lost", "refused": "refused in flight", "duplicated": "duplicated", "missing": "missing"}


class Server:
    """A server process on a fixed port and home, killed for real."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
        env.update(SERVER_ENV, QUANTCREW_HOME=str(self.home))
        with open(self.home / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quantcrew.ml_server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> Server:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server at {self.url} not ready after {timeout_s:g} s")

    def kill(self) -> tuple[float, float]:
        """SIGKILL; the moments it was sent and the process was gone (perf_counter)."""
        assert self.proc is not None
        at = time.perf_counter()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return at, time.perf_counter()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@dataclass
class Call:
    kind: str  # "var" or "select"
    started: float
    ended: float
    url: str | None  # who answered; None when it raised
    error: str | None = None
    call_ms: float = 0.0  # the call itself (attempts and failover), without the breaker report sent after it


@dataclass
class Repetition:
    calls: list[Call] = field(default_factory=list)
    killed_at: float = 0.0
    gone_at: float = 0.0  # the killed process reaped: its sockets are closed by then
    recorded: int = 0  # decisions the two servers gained


def _var_request() -> VarRequest:
    values = np.random.default_rng(0).normal(0.0, 0.01, (250, 4)).round(6).tolist()
    return VarRequest.model_validate({"data": {"columns": ["a", "b", "c", "d"], "values": values},
                                      "methods": ["historical", "parametric_normal"]})


def _decisions(url: str) -> int:
    with MLClient(httpx.Client(base_url=url, timeout=30.0)) as one:
        return one.bandit_state("desk").bandit.decisions


def _prepare(server: Server) -> None:
    """The bandit, and one call of each kind so that neither server pays its first-use imports in the run."""
    with MLClient(httpx.Client(base_url=server.url, timeout=60.0)) as one:
        with contextlib.suppress(Conflict):  # a restarted server kept it
            one.bandit_create(BanditCreateRequest(name="desk", policy="ucb1", arms=["a", "b"], regimes=["bull"]))
        one.risk_var(_var_request())
        one.bandit_select(BanditSelectRequest(bandit="desk", regime="bull"))


def _run_once(primary: Server, secondary: Server, rng: random.Random, after_s: float, report: bool) -> Repetition:
    rep = Repetition()
    before = _decisions(primary.url) + _decisions(secondary.url)
    client = make_client(ClientSettings(urls=[primary.url, secondary.url]))
    client.report_trips = report
    request, select = _var_request(), BanditSelectRequest(bandit="desk", regime="bull")
    kill_after = rng.uniform(0.3, 0.8)

    def kill() -> None:
        rep.killed_at, rep.gone_at = primary.kill()

    killer = threading.Timer(kill_after, kill)
    killer.start()
    try:
        n = 0
        while rep.killed_at == 0.0 or time.perf_counter() < rep.killed_at + after_s:
            kind = "var" if n % 2 == 0 else "select"
            n += 1
            started = time.perf_counter()
            try:
                if kind == "var":
                    client.risk_var(request)
                else:
                    client.bandit_select(select)
            except MLClientError as exc:
                rep.calls.append(Call(kind, started, time.perf_counter(), None, f"{type(exc).__name__}: {exc}"))
                continue
            assert client.last_call is not None
            rep.calls.append(Call(kind, started, time.perf_counter(), client.last_call.url, None,
                                  client.last_call.elapsed_ms))
    finally:
        killer.join()
        client.close()
    primary.spawn().wait_ready()  # back on its port and home: the decisions it recorded are read from its store
    rep.recorded = _decisions(primary.url) + _decisions(secondary.url) - before
    return rep


def _figures(rep: Repetition, secondary: str) -> dict[str, float | int]:
    first = next(c for c in rep.calls if c.url == secondary and c.ended > rep.killed_at)
    ok_ends = [c.ended for c in rep.calls if c.url is not None]
    gaps = [b - a for a, b in zip(ok_ends, ok_ends[1:], strict=False)]
    selects_ok = sum(1 for c in rep.calls if c.kind == "select" and c.url is not None)
    selects_failed = sum(1 for c in rep.calls if c.kind == "select" and c.url is None)
    return {
        "failover_ms": (first.ended - rep.killed_at) * 1000.0,
        "exit_ms": (rep.gone_at - rep.killed_at) * 1000.0,
        "first_call_ms": first.call_ms,
        "report_ms": (first.ended - first.started) * 1000.0 - first.call_ms,
        "gap_ms": max(gaps) * 1000.0,
        "calls": len(rep.calls),
        "after_kill": sum(1 for c in rep.calls if c.started > rep.killed_at and c.url == secondary),
        "lost": sum(1 for c in rep.calls if c.kind == "var" and c.url is None),
        "refused": selects_failed,
        "duplicated": max(0, rep.recorded - selects_ok - selects_failed),
        "missing": max(0, selects_ok - rep.recorded),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--after", type=float, default=1.0, help="seconds the loop runs on after the kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true",
                        help="do not report the breaker's opening to the secondary (it is sent inside the first "
                             "call that succeeds there)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        servers = [Server(Path(tmp) / name) for name in ("one", "two")]
        for server in servers:
            server.home.mkdir()
            server.spawn()
        try:
            for server in servers:
                server.wait_ready()
                _prepare(server)
            rows, figures = [], []
            for i in range(args.repeats):
                primary, secondary = servers[i % 2], servers[(i + 1) % 2]
                rep = _run_once(primary, secondary, rng, args.after, not args.no_report)
                f = _figures(rep, secondary.url)
                figures.append(f)
                in_flight = [c.error for c in rep.calls if c.error]
                rows.append([i + 1, *(f[k] for k in COLUMNS)])
                for error in in_flight:
                    print(f"  repetition {i + 1}: {error[:300]}", file=sys.stderr)
        finally:
            for server in servers:
                server.stop()
    print(f"Failover: 2 servers on loopback, primary SIGKILLed 0.3-0.8 s into the run, {args.repeats} repetitions, "
          f"breaker report {'off' if args.no_report else 'on'} ({os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f})")
    print_table(["rep", *COLUMNS.values()], rows)
    print()
    print_table(["", "median", "p95", "max"], [
        [name, statistics.median(v), pct(v, 95), max(v)]
        for name, v in (("failover ms", [f["failover_ms"] for f in figures]),
                        ("exit ms", [f["exit_ms"] for f in figures]),
                        ("1st call ms", [f["first_call_ms"] for f in figures]),
                        ("report ms", [f["report_ms"] for f in figures]),
                        ("gap ms", [f["gap_ms"] for f in figures]))
    ])
    print(f"\nlost {sum(int(f['lost']) for f in figures)}, duplicated {sum(int(f['duplicated']) for f in figures)}, "
          f"missing {sum(int(f['missing']) for f in figures)}, selects refused in flight (raised, not replayed) "
          f"{sum(int(f['refused']) for f in figures)}")


if __name__ == "__main__":
    main()
