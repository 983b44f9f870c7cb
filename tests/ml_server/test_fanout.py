"""A job's pieces in turn and as tasks of a real local Ray cluster: order, progress, errors, cancel, same models."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantcrew.config.settings import Settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.fanout import IN_TURN, RAY, TaskPool, Watch
from quantcrew.ml_server.jobs import JobCancelled
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest, EnsembleTrainResult
from quantcrew.ml_server.schemas.rl import RLTrainRequest, RLTrainResult
from quantcrew.ml_server.services.bars import bars_from_payload

FAN_OUT = TaskPool(fan_out=True, num_cpus=1.0)


def square(shared: int, item: int, watch: Watch) -> tuple[int, int, int]:
    """A piece: reports once, returns its result, the index it was given and the process that ran it."""
    watch.report(item)
    return shared + item * item, watch.index, os.getpid()


def refuse(_shared: None, item: int, _watch: Watch) -> None:
    if item == 2:
        raise InvalidInputError("piece 2 refused", details=[{"loc": ["item"], "msg": "two"}])
    time.sleep(0.05)


def sleep_long(_shared: None, _item: int, watch: Watch) -> None:
    """A piece that runs for a minute unless its watch says the job was cancelled (inert in a task)."""
    end = time.monotonic() + 60.0
    while time.monotonic() < end and not watch.cancelled():
        time.sleep(0.05)


def sleep_noting_pid(folder: Path, item: int, _watch: Watch) -> None:
    """A piece that notes the process running it, then sleeps for a minute in short naps (as a training loop steps)."""
    (folder / f"{item}.pid").write_text(str(os.getpid()))
    end = time.monotonic() + 60.0
    while time.monotonic() < end:
        time.sleep(0.05)


def sleep_through_interrupts(folder: Path, item: int, _watch: Watch) -> None:
    """A piece that notes its process, then sleeps for a minute whatever interrupts it."""
    (folder / f"{item}.pid").write_text(str(os.getpid()))
    end = time.monotonic() + 60.0
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            continue


def die_once(folder: Path, item: int, _watch: Watch) -> int:
    """A piece whose process dies the first time it runs (as the OOM killer would end it), then returns."""
    tried = folder / f"{item}.tried"
    if not tried.exists():
        tried.write_text("")
        os._exit(1)
    return item * 10


class _Ctx:
    job_id = "job-fanout"

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, **kw: Any) -> None:
        self.reports.append(kw)

    @property
    def cancelled(self) -> bool:
        return False


# -- in turn -----------------------------------------------------------------------------------


def test_settings_give_the_pool() -> None:
    pool = TaskPool.from_settings(Settings(ray={"fan_out": False, "task_num_cpus": 2}))
    assert pool == TaskPool(fan_out=False, num_cpus=2.0) and pool.threads == 2


def test_without_a_ray_cluster_pieces_run_in_turn_here() -> None:
    assert FAN_OUT.where(4) == IN_TURN  # no cluster in this process
    assert TaskPool().where(4) == IN_TURN


def test_in_turn_pieces_report_with_their_index_and_end_in_order() -> None:
    reported: list[tuple[int, int]] = []
    ended: list[int] = []
    results, where = FAN_OUT.map(square, 10, [1, 2, 3], cancelled=lambda: False,
                                 progress=lambda k, v: reported.append((k, v)),
                                 finished=lambda k, _r: ended.append(k))
    assert where == IN_TURN
    assert [r[:2] for r in results] == [(11, 0), (14, 1), (19, 2)] and {r[2] for r in results} == {os.getpid()}
    assert reported == [(0, 1), (1, 2), (2, 3)] and ended == [0, 1, 2]


def test_in_turn_a_cancelled_job_stops_before_the_next_piece() -> None:
    ended: list[int] = []
    with pytest.raises(JobCancelled):
        FAN_OUT.map(square, 0, [1, 2, 3], cancelled=lambda: len(ended) >= 1, finished=lambda k, _r: ended.append(k))
    assert ended == [0]


def test_in_turn_a_piece_watching_its_job_stops_when_the_job_is_cancelled() -> None:
    began = time.monotonic()
    with pytest.raises(JobCancelled):
        FAN_OUT.map(sleep_long, None, [0, 1], cancelled=lambda: time.monotonic() - began > 0.3)
    assert time.monotonic() - began < 5.0  # the first piece saw the cancel through its watch, the second never ran


# -- as Ray tasks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from tests.ml_server.replicas.conftest import cannot_run_ray

    reason = cannot_run_ray()
    if reason is not None:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture
def idle_cluster(ray_cluster: None) -> None:
    """The module's cluster with both its CPUs free: tasks an earlier test cancelled give theirs back late."""
    import ray

    deadline = time.monotonic() + 30.0
    while ray.available_resources().get("CPU", 0.0) < 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


def test_in_a_ray_cluster_pieces_run_as_tasks_in_order(idle_cluster: None) -> None:
    ended: list[int] = []
    results, where = FAN_OUT.map(square, 10, [1, 2, 3, 4], cancelled=lambda: False,
                                 finished=lambda k, _r: ended.append(k))
    assert where == RAY
    assert [r[:2] for r in results] == [(11, 0), (14, 1), (19, 2), (26, 3)]
    assert os.getpid() not in {r[2] for r in results}  # each ran in a Ray worker
    assert sorted(ended) == [0, 1, 2, 3]


def test_one_piece_or_too_few_free_cpus_run_in_turn(ray_cluster: None) -> None:
    assert FAN_OUT.where(1) == IN_TURN
    assert TaskPool(fan_out=True, num_cpus=64.0).where(4) == IN_TURN  # the cluster has 2: a task would wait for ever
    assert FAN_OUT.where(4, device="cuda:0") == IN_TURN
    assert TaskPool(fan_out=False).where(4) == IN_TURN


def test_a_task_error_is_raised_as_itself(idle_cluster: None) -> None:
    with pytest.raises(InvalidInputError, match="piece 2 refused") as caught:
        FAN_OUT.map(refuse, None, [0, 1, 2, 3], cancelled=lambda: False)
    assert caught.value.details == [{"loc": ["item"], "msg": "two"}]


def test_a_cancelled_job_cancels_its_tasks(idle_cluster: None) -> None:
    import ray

    assert FAN_OUT.where(2) == RAY
    began = time.monotonic()
    with pytest.raises(JobCancelled):
        FAN_OUT.map(sleep_long, None, [0, 1], cancelled=lambda: time.monotonic() - began > 1.0)
    assert time.monotonic() - began < 10.0  # the tasks' watches are inert: only the cancel stopped them
    deadline = time.monotonic() + 20.0
    while ray.available_resources().get("CPU", 0.0) < 2.0:  # the cancelled tasks give their CPUs back
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)


def _pids(folder: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 20.0
    while len(list(folder.glob("*.pid"))) < count:
        assert time.monotonic() < deadline, "the tasks never started"
        time.sleep(0.05)
    return [int(f.read_text()) for f in sorted(folder.glob("*.pid"))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _CancelOnceStarted:
    """A job's cancel flag that turns on once ``count`` pieces have noted their process; when it did."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count = folder, count
        self.at: float | None = None

    def __call__(self) -> bool:
        if self.at is None and len(list(self.folder.glob("*.pid"))) >= self.count:
            self.at = time.monotonic()
        return self.at is not None

    def seconds_since(self) -> float:
        assert self.at is not None
        return time.monotonic() - self.at


def test_a_cancel_stops_a_running_task_without_killing_its_worker(idle_cluster: None, tmp_path: Path) -> None:
    cancel = _CancelOnceStarted(tmp_path, 2)
    with pytest.raises(JobCancelled):
        FAN_OUT.map(sleep_noting_pid, tmp_path, [0, 1], cancelled=cancel)
    assert cancel.seconds_since() < 10.0  # from the cancel: the tasks stopped, not the piece's minute
    pids = _pids(tmp_path, 2)
    time.sleep(1.0)  # a forced cancel would have killed them by now
    assert all(_alive(pid) for pid in pids), pids


def test_a_task_that_ignores_the_cancel_is_killed_with_its_worker(idle_cluster: None, tmp_path: Path) -> None:
    import ray

    cancel = _CancelOnceStarted(tmp_path, 2)
    with pytest.raises(JobCancelled):
        FAN_OUT.map(sleep_through_interrupts, tmp_path, [0, 1], cancelled=cancel)
    assert cancel.seconds_since() < 15.0  # the grace, then the kill; not the piece's minute
    pids = _pids(tmp_path, 2)
    deadline = time.monotonic() + 20.0
    while any(_alive(pid) for pid in pids) or ray.available_resources().get("CPU", 0.0) < 2.0:
        assert time.monotonic() < deadline, (pids, ray.available_resources())
        time.sleep(0.2)


def test_a_task_lost_with_its_worker_runs_again_once(idle_cluster: None, tmp_path: Path) -> None:
    results, where = FAN_OUT.map(die_once, tmp_path, [1, 2], cancelled=lambda: False)
    assert where == RAY
    assert results == [10, 20]
    assert sorted(f.name for f in tmp_path.glob("*.tried")) == ["1.tried", "2.tried"]


def _payload() -> OHLCVPayload:
    return OHLCVPayload(**to_payload_dict(generate_regime_market(700, seed=3).bars))


def _rl(pool: TaskPool, registry: ModelRegistry) -> RLTrainResult:
    from quantcrew.ml_server.services.rl import market
    from quantcrew.ml_server.services.rl import training as rl_training

    req = RLTrainRequest(data=_payload(), agents=["aggressive"], algorithm="a2c", timesteps=256,
                         regime_features=False, n_envs=2, seed=7, seeds=3, grid={"reward_scale": [1.0]})
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, market.split_index(bars, req.train_end, req.train_fraction), pool=pool)
    return RLTrainResult.model_validate(rl_training.train_agents(plan, registry, _Ctx()))


def test_rl_runs_as_tasks_give_the_same_policies_as_in_turn(idle_cluster: None, tmp_path: Path) -> None:
    here = ModelRegistry(tmp_path / "a" / "registry.db", tmp_path / "a" / "artifacts")
    tasks = ModelRegistry(tmp_path / "b" / "registry.db", tmp_path / "b" / "artifacts")
    in_turn, fanned = _rl(TaskPool(), here), _rl(FAN_OUT, tasks)
    a, b = in_turn.policies[0], fanned.policies[0]
    assert len(b.runs) == 3
    assert [r.validation_score for r in a.runs] == [r.validation_score for r in b.runs]
    assert [r.chosen for r in a.runs] == [r.chosen for r in b.runs]
    assert a.sha256 == b.sha256  # the chosen policy, rebuilt from the weights a task sent back: byte-identical
    assert here.get(a.model_id).metadata["search"]["trained_on"] == IN_TURN
    assert tasks.get(b.model_id).metadata["search"]["trained_on"] == RAY


def _ensemble(pool: TaskPool, registry: ModelRegistry, tmp_path: Path) -> tuple[EnsembleTrainResult, _Ctx]:
    from quantcrew.ml_server.services.deployment import DeploymentStore
    from quantcrew.ml_server.services.ensemble import training

    req = EnsembleTrainRequest(data=_payload(), symbol="SYN", architectures=["lstm"], members=1, hidden=8, epochs=3,
                               folds=3, window=10, seed=5, execution=False)
    plan = training.prepare_plan(req, bars_from_payload(req.data), device="cpu", compute_threads=1, pool=pool)
    ctx = _Ctx()
    deployments = DeploymentStore(registry.db_path)
    return EnsembleTrainResult.model_validate(training.train_ensemble(plan, registry, deployments, ctx)), ctx


def test_ensemble_folds_as_tasks_give_the_same_figures_as_in_turn(idle_cluster: None, tmp_path: Path) -> None:
    here = ModelRegistry(tmp_path / "a" / "registry.db", tmp_path / "a" / "artifacts")
    tasks = ModelRegistry(tmp_path / "b" / "registry.db", tmp_path / "b" / "artifacts")
    (a, _), (b, ctx) = _ensemble(TaskPool(), here, tmp_path), _ensemble(FAN_OUT, tasks, tmp_path)
    assert len(b.folds) == 3
    for fa, fb in zip(a.folds, b.folds, strict=True):
        assert (fa.n_train, fa.n_test) == (fb.n_train, fb.n_test)
        assert fa.ensemble.nll == pytest.approx(fb.ensemble.nll, rel=1e-5)
    assert a.out_of_sample[0].nll == pytest.approx(b.out_of_sample[0].nll, rel=1e-5)
    assert here.get(a.model.model_id).metadata["folds_trained_on"] == IN_TURN
    assert tasks.get(b.model.model_id).metadata["folds_trained_on"] == RAY
    done = [r["done"] for r in ctx.reports]
    assert done == sorted(done) and done[-1] == ctx.reports[-1]["total"]  # progress only moves forward
