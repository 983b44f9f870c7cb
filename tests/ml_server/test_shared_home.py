"""Several real server processes on one home (``--shared-home``): the registry, bandits, jobs and the home's lock.

Two uvicorn servers share a home (module fixture: they boot together, so they also open the fresh registry file
together); a model fitted on one is predicted on the other, a bandit rewarded through both keeps exact counts, and
concurrent writers through both lose nothing; a job running on one survives a third replica starting beside it,
is read and cancelled through that one, and a job left by a killed replica is marked interrupted by the others.
(The start-up of a replica after a crash is covered with real processes in tests/ml_server/jobs/test_manager.py.)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantcrew.config.server_lock import running_server, running_servers
from quantcrew.crew.server_process import LocalServer, free_port
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.jobs import INTERRUPTED_MESSAGE
from quantcrew.ml_server.schemas.bandit import BanditState
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.shared_home import SHARED_TABLES
from tests.support.servers import CHILD_SERVER_ENV

SHARED_ENV = {**CHILD_SERVER_ENV, "QUANTCREW_SERVER__SHARED_HOME": "true"}
_PAYS = {"conservative": 0.2, "aggressive": 0.3, "balanced": 0.9, "contrarian": 0.1}


def _server(home: Path, name: str) -> LocalServer:
    """A shared-home server on ``home``, from an environment without the shell's settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    return LocalServer(env={"QUANTCREW_HOME": str(home), **SHARED_ENV}, base_env=base, cwd=home.parent,
                       log_path=home.parent / f"{name}.log", ready_timeout_s=90)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalServer, LocalServer]]:
    home = tmp_path_factory.mktemp("shared") / "home"
    a, b = _server(home, "a"), _server(home, "b")
    a.start(meanwhile=b.start)  # both boot at once, on a registry file neither has created yet
    try:
        yield home, a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(300, seed=3).bars)


def _open_every_store(home: Path, barrier: Any, results: Any) -> None:
    """In a child process: open every store of the server on ``home``'s registry at the barrier, then close them."""
    from quantcrew.ml_server.jobs import JobManager
    from quantcrew.ml_server.registry import ModelRegistry
    from quantcrew.ml_server.services.bandit.store import BanditStore
    from quantcrew.ml_server.services.deployment import DeploymentStore
    from quantcrew.ml_server.services.monitor.alert_store import AlertStore
    from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore
    from quantcrew.ml_server.services.monitor.predictions import PredictionLog
    from quantcrew.ml_server.services.monitor.reference import ReferenceStore

    db = home / "registry.db"
    try:
        barrier.wait(30)
        registry, jobs, log = ModelRegistry(db, home / "artifacts"), JobManager(db, shared=True), PredictionLog(db)
        stores: list[Any] = [BanditStore(db), DeploymentStore(db), OutcomeStore(db), ReferenceStore(db), AlertStore(db)]
        results.put(registry.count())
        for store in stores:
            store.close()
        registry.close()
        jobs.shutdown()
        log.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails naming it
        results.put(f"{type(exc).__name__}: {exc}")


def test_replicas_opening_a_fresh_registry_at_the_same_instant_all_start(tmp_path: Path) -> None:
    # replicas of one deployment start together (Ray starts them at once): none may fail to create the tables
    context = multiprocessing.get_context("fork")  # the modules are imported already: the children start at once
    barrier, results = context.Barrier(4), context.Queue()
    children = [context.Process(target=_open_every_store, args=(tmp_path, barrier, results)) for _ in range(4)]
    for child in children:
        child.start()
    try:
        assert [results.get(timeout=60) for _ in children] == [0, 0, 0, 0]
    finally:
        for child in children:
            child.join(30)


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def test_both_replicas_hold_the_home_and_an_exclusive_server_is_refused(
        pair: tuple[Path, LocalServer, LocalServer]) -> None:
    home, a, b = pair
    held = running_servers(home)
    assert {s.url for s in held} == {a.url, b.url} and all(s.shared for s in held)
    found = running_server(home)
    assert found is not None and found.url in {a.url, b.url}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    refused = subprocess.run([sys.executable, "-m", "quantcrew.ml_server", "--port", str(free_port())],
                             env={**env, "QUANTCREW_HOME": str(home)}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "shared by 2 ML server replica(s)" in refused.stderr and "--shared-home" in refused.stderr
    assert a.url in refused.stderr and b.url in refused.stderr
    assert len(running_servers(home)) == 2  # the refused one left nothing behind


def test_every_table_the_replicas_share_is_listed_with_its_store(pair: tuple[Path, LocalServer, LocalServer]) -> None:
    # a store added without a thought for shared mode (and for a server-class database) fails here
    home, _, _ = pair
    conn = sqlite3.connect(home / "registry.db")
    try:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    finally:
        conn.close()
    listed = [table for tables_of in SHARED_TABLES.values() for table in tables_of]
    assert len(listed) == len(set(listed)) and {t for t in tables if not t.startswith("sqlite_")} == set(listed)


def test_a_model_fitted_on_one_replica_is_listed_and_predicted_on_the_other(
        pair: tuple[Path, LocalServer, LocalServer], bars: dict[str, Any]) -> None:
    _, a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as on_a, httpx.Client(base_url=b.url, timeout=60) as on_b:
        before = {m["model_id"] for m in _ok(on_b.get("/v1/models"))}  # B has read the table already
        with ThreadPoolExecutor(max_workers=1) as pool:  # B loads the family's libraries while A fits
            warm = pool.submit(on_b.post, "/v1/regime/label", json={"data": bars, "n_states": 2, "n_restarts": 1})
            fitted = _ok(on_a.post("/v1/regime/fit", json={"data": bars, "name": "shared-spx", "n_states": 2,
                                                            "n_restarts": 1}))
            _ok(warm.result())
        listed = {m["model_id"] for m in _ok(on_b.get("/v1/models"))}
        assert listed - before == {fitted["model_id"]}
        body = {"model_id": fitted["model_id"], "data": bars}
        on_b_pred, on_a_pred = _ok(on_b.post("/v1/regime/predict", json=body)), _ok(on_a.post("/v1/regime/predict",
                                                                                           json=body))
        assert on_b_pred["model_id"] == fitted["model_id"]
        assert on_b_pred["model_version"] == fitted["model_version"]
        assert (on_b_pred["labels"], on_b_pred["current_probability"]) == (on_a_pred["labels"],
                                                                          on_a_pred["current_probability"])
        # a second version fitted on B: A sees it as the newest of the name
        again = _ok(on_b.post("/v1/regime/fit", json={"data": bars, "name": "shared-spx", "n_states": 2,
                                                       "n_restarts": 1}))
        assert again["model_version"] == fitted["model_version"] + 1
        versions = [m for m in _ok(on_a.get("/v1/models")) if m["name"] == "shared-spx"]
        assert max(versions, key=lambda m: m["version"])["model_id"] == again["model_id"]


def _select_and_reward(client: httpx.Client, bandit: str, regime: str) -> str:
    decision = _ok(client.post("/v1/bandit/select", json={"bandit": bandit, "regime": regime}))
    _ok(client.post("/v1/bandit/reward", json={"decision_id": decision["decision_id"],
                                               "reward": _PAYS[decision["arm"]]}))
    return str(decision["arm"])


def _state(client: httpx.Client, bandit: str) -> BanditState:
    return BanditState.model_validate(_ok(client.get(f"/v1/bandit/{bandit}")))


def _check_counts(state: BanditState, regime: str, arms: Counter[str]) -> None:
    """The regime counts exactly the decisions and rewards made, arm by arm, and none is left pending."""
    regimes = {r.regime: r for r in state.regimes}
    assert regimes[regime].decisions == regimes[regime].pulls == sum(arms.values()) and regimes[regime].pending == 0
    assert {e.arm: e.raw_pulls for e in regimes[regime].explanation if e.raw_pulls} == dict(arms)


def test_a_bandit_rewarded_alternately_through_both_keeps_exact_counts(
        pair: tuple[Path, LocalServer, LocalServer]) -> None:
    _, a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as on_a, httpx.Client(base_url=b.url, timeout=60) as on_b:
        _ok(on_a.post("/v1/bandit", json={"name": "alternate", "policy": "ucb1"}), 201)
        arms = Counter(_select_and_reward((on_a, on_b)[i % 2], "alternate", "bull") for i in range(30))
        on_a_state, on_b_state = _state(on_a, "alternate"), _state(on_b, "alternate")
        for state in (on_a_state, on_b_state):
            _check_counts(state, "bull", arms)
            assert state.pulls == 30
        assert on_a_state.data_hash == on_b_state.data_hash  # the same stored state, read by each
        means = {e.arm: e.estimate for e in on_a_state.regimes[0].explanation if e.raw_pulls}
        assert means == pytest.approx({arm: _PAYS[arm] for arm in arms})  # every reward counted once


def test_concurrent_writers_through_both_replicas_lose_nothing(pair: tuple[Path, LocalServer, LocalServer]) -> None:
    _, a, b = pair
    with httpx.Client(base_url=a.url, timeout=60) as on_a, httpx.Client(base_url=b.url, timeout=60) as on_b:
        _ok(on_a.post("/v1/bandit", json={"name": "contended", "regimes": ["bull", "bear"]}), 201)

        def work(i: int) -> tuple[str, str]:
            regime = ("bull", "bear")[i % 2]
            return regime, _select_and_reward((on_a, on_b)[(i // 2) % 2], "contended", regime)

        with ThreadPoolExecutor(max_workers=8) as pool:  # 8 requests in flight, over both processes
            done = list(pool.map(work, range(64)))
        state = _state(on_b, "contended")
        for regime in ("bull", "bear"):
            _check_counts(state, regime, Counter(arm for r, arm in done if r == regime))
        assert state.pulls == 64 and _state(on_a, "contended").data_hash == state.data_hash


# -- jobs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_bars() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(1200, seed=5).bars)


def _long_job(client: httpx.Client, data: dict[str, Any]) -> str:
    """Start a causal labelling job with a thousand refits: it runs until stopped."""
    job = _ok(client.post("/v1/regime/causal", json={"data": data, "min_train": 200, "refit_every": 1,
                                                       "n_states": 2, "n_restarts": 1}), 202)
    return str(job["job_id"])


def _job(client: httpx.Client, job_id: str) -> JobInfo:
    return JobInfo.model_validate(_ok(client.get(f"/v1/jobs/{job_id}")))


def _until(check: Callable[[], JobInfo], ok: Callable[[JobInfo], bool], timeout_s: float = 30.0) -> JobInfo:
    deadline = time.monotonic() + timeout_s
    while True:
        info = check()
        if ok(info):
            return info
        assert time.monotonic() < deadline, f"job still {info.status} ({info.progress})"
        time.sleep(0.1)


def test_a_replica_starting_leaves_running_jobs_alone_and_a_killed_ones_job_is_interrupted(
        pair: tuple[Path, LocalServer, LocalServer], long_bars: dict[str, Any]) -> None:
    home, a, b = pair
    c = _server(home, "c")
    try:
        with httpx.Client(base_url=a.url, timeout=60) as on_a, httpx.Client(base_url=b.url, timeout=60) as on_b:
            # one worker: the second waits queued
            first, waiting = _long_job(on_a, long_bars), _long_job(on_a, long_bars)
            # a third replica starting (while the first job gets going) must not take A's jobs for a dead server's
            c.start(meanwhile=lambda: _until(lambda: _job(on_a, first), lambda j: j.status == "running"))
            with httpx.Client(base_url=c.url, timeout=60) as on_c:
                seen = _until(lambda: _job(on_c, first), lambda j: j.progress.done >= 2)
                assert seen.status == "running" and seen.kind == "regime_causal" and seen.error is None
                assert _job(on_c, waiting).status == "queued"
                # C cancels A's jobs: the queued one at once, the running one at its next check
                dropped = JobInfo.model_validate(_ok(on_c.delete(f"/v1/jobs/{waiting}")))
                assert dropped.status == "cancelled" and dropped.cancel_requested
                asked = JobInfo.model_validate(_ok(on_c.delete(f"/v1/jobs/{first}"), 202))
                assert asked.status == "running" and asked.cancel_requested
                stopped = _until(lambda: _job(on_a, first), lambda j: j.status == "cancelled", timeout_s=15)
                assert stopped.cancel_requested and stopped.error is None
                never = _job(on_a, waiting)
                assert never.status == "cancelled" and never.started_at is None  # A never started it
                orphan = _long_job(on_c, long_bars)
                _until(lambda: _job(on_b, orphan), lambda j: j.status == "running")
            proc = c._proc  # noqa: SLF001 - a crash, not a stop: the process is killed outright
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert {s.url for s in running_servers(home)} == {a.url, b.url}  # the kernel dropped C's locks
            # A and B see C's job lose its owner (a dead PID on this host) within their heartbeat round
            left = _until(lambda: _job(on_b, orphan), lambda j: j.status != "running", timeout_s=20)
            assert left.status == "interrupted" and left.error is not None
            assert left.error.message == INTERRUPTED_MESSAGE and left.finished_at is not None
            assert _job(on_a, first).status == "cancelled"  # what had finished stays as it was
    finally:
        c.stop()
