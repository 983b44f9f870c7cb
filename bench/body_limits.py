"""/health latency while a real server refuses a flood of 14.9 MiB bodies (with and without the API key).

Each flood body is a risk request whose table has 3.9 million one-value rows (``[1],[1],...``):
under the byte limit, far over the row limit. With the key it is refused (413) once the
counted rows pass the limit; without it, it is refused (401) from the headers. Meanwhile
/health is polled; its latency is compared with a quiet period before the flood. The server's
resident memory is read before and after (and its peak).

The server runs with ``protect_ops=false`` only so that the readiness wait of the launcher,
which sends no key, sees /ready.

Run: .venv/bin/python bench/body_limits.py [--seconds 20] [--threads 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
from _table import pct, print_table

from quantcrew.config.server_lock import running_server
from quantcrew.crew.server_process import LocalServer

KEY = "bench-key"
TARGET_P99_MS = 50.0


def _body(rows: int) -> bytes:
    return b'{"data":{"columns":["a"],"values":[' + b",".join([b"[1]"] * rows) + b"]}}"


def _rss_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _poll_health(url: str, seconds: float, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30.0) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            http.get("/health").raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
            time.sleep(0.02)


def _flood(url: str, rows: int, with_key: bool, stop: Event, out: Queue[tuple[bool, int, float]]) -> None:
    """One flooding process (its own GIL: the client's work does not slow the /health poller)."""
    body = _body(rows)
    headers = {"content-type": "application/json"}
    if with_key:
        headers["authorization"] = f"Bearer {KEY}"
    with httpx.Client(base_url=url, timeout=60.0) as http:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = http.post("/v1/risk/var", content=body, headers=headers).status_code
            except httpx.TransportError:
                status = 0  # connection closed before the reply was read
            out.put((with_key, status, (time.perf_counter() - start) * 1000))


def _with_key(mode: str, i: int) -> bool:
    return mode == "with" or (mode == "both" and i % 2 == 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the quiet and of the flood period")
    parser.add_argument("--threads", type=int, default=3, help="flooding processes (alternately with / without key)")
    parser.add_argument("--key", choices=["both", "with", "without"], default="both",
                        help="flood with the key (refused 413), without it (401), or alternately")
    parser.add_argument("--rows", type=int, default=3_900_000, help="one-value rows per flood body")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="qc-bench-"))
    env = {"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__API_KEY": KEY, "QUANTCREW_SERVER__PROTECT_OPS": "false",
           "QUANTCREW_SERVER__DEVICE": "cpu", "QUANTCREW_SERVER__PRELOAD": "false"}
    with LocalServer(env=env) as server:
        running = running_server(home)
        assert running is not None
        pid = running.pid
        rss_before = _rss_mib(pid)
        quiet: list[float] = []
        _poll_health(server.url, args.seconds, quiet)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        results: Queue[tuple[bool, int, float]] = context.Queue()
        flooders = [context.Process(target=_flood, args=(server.url, args.rows, _with_key(args.key, i), stop, results))
                    for i in range(args.threads)]
        for proc in flooders:
            proc.start()
        time.sleep(3.0)  # the flooders build their bodies and put the first ones on the wire
        loaded: list[float] = []
        _poll_health(server.url, args.seconds, loaded)
        stop.set()
        for proc in flooders:
            proc.join(60)
        rss_after = _rss_mib(pid)
        refusals: dict[bool, list[tuple[int, float]]] = {True: [], False: []}
        while not results.empty():
            with_key, status, took = results.get()
            refusals[with_key].append((status, took))

    print(f"flood body: {len(_body(args.rows)) / 2**20:.1f} MiB, {args.rows:,} one-value rows; "
          f"{args.threads} flooding processes; {args.seconds:.0f} s per period\n")
    rows: list[list[object]] = []
    for name, values in (("/health, quiet", quiet), ("/health, during flood", loaded)):
        rows.append([name, len(values), "200", pct(values, 50), pct(values, 95), pct(values, 99), max(values)])
    for with_key, label in ((True, "refused, with key"), (False, "refused, no key")):
        done = refusals[with_key]
        statuses = "/".join(sorted({str(s) for s, _ in done})) or "-"
        ms = [m for _, m in done] or [float("nan")]
        rows.append([label, len(done), statuses, pct(ms, 50), pct(ms, 95), pct(ms, 99), max(ms)])
    print_table(["requests", "n", "status", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    print()
    print_table(["server memory", "MiB"], [["RSS before", rss_before["VmRSS"]], ["RSS after", rss_after["VmRSS"]],
                                          ["peak RSS (whole run)", rss_after["VmHWM"]]])
    p99 = pct(loaded, 99)
    print(f"\n/health p99 during the flood: {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms): "
          f"{'met' if p99 < TARGET_P99_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
