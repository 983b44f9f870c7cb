"""The route tests' HTTP contract, run again unchanged through Ray Serve's proxy to two replicas on one home.

The route tests (``tests/ml_server/routes``) reach the server through a ``client`` fixture (the ensemble and
explain tests through their module's ``served``): an in-process TestClient on an app of their own. This module
collects every route test that can run against a live shared server and overrides those fixtures with an
``httpx.Client`` on the package's ``quantcrew-server --ray --replicas 2`` (``ray_server``, with its API key), so the
same test code checks the same answers over real HTTP, each request routed by Serve to either replica, on one home
that all of them fill. The rest are listed in :data:`EXCLUDED` with the reason they cannot run there; a check
below fails when a route test is neither run here nor listed, so a new route test or module is never silently left
out. Over the run, both replicas must have answered (the ``X-Quantcrew-Replica`` header names the one that did).

The tests run in their modules' order, as in their own files: the ensemble tests share one trained ensemble and
depend on their order there already (later tests add a canary and an RL policy for the symbol the earlier ones
predict), and here the explain tests, which come after them, deploy an ensemble for the same symbol.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import tests.ml_server.routes as routes_package
from tests.ml_server.replicas.conftest import REPLICA, RayServer

ROUTES_DIR = Path(routes_package.__file__).parent

# Each reason, then the route tests (as paths under tests/ml_server/routes, a module meaning all its tests) that
# cannot run against the one live server of this package. Every other route test runs here.
EXCLUDED: dict[str, tuple[str, ...]] = {
    "builds its own app(s) from per-test settings (a restart, a changed setting, its own home)": (
        "test_bandit.py::test_restart_sees_same_state",
        "test_bandit.py::test_reward_bound_follows_the_setting",
        "test_bandit.py::test_delete_removes_bandit_then_404_and_survives_restart",
        "test_bandit.py::test_corrupt_stored_state_is_409_not_500_until_reset",
        "test_ensemble.py::test_two_apps_in_one_process_keep_their_own_rebuilt_models",
        "test_jobs.py::test_server_shutdown_stops_running_job",
        "test_models.py::test_old_versions_are_deleted_after_each_save_but_deployed_ones_and_the_rollback_target_survive",
        "test_regime_causal.py::test_the_async_client_starts_the_job_and_waits_for_its_result",
        "test_rl.py::test_train_over_the_timestep_cap_is_422",
        "monitor/test_alerts.py",
    ),
    "writes the registry file of its own settings behind the server's back": (
        "test_bandit.py::test_corrupt_state_is_409_for_the_server_that_cached_it",
    ),
    "reads or drives the in-process app's state (client.app.state), which a remote server does not expose": (
        "test_anomaly.py::test_score_with_a_model_of_another_family_returns_404",
        "test_jobs.py::test_get_job_reports_progress_then_result",
        "test_jobs.py::test_list_jobs_filters_and_limits",
        "test_jobs.py::test_delete_running_job_returns_202_then_job_is_cancelled",
        "test_jobs.py::test_delete_queued_job_returns_200_cancelled",
        "test_jobs.py::test_delete_finished_job_returns_409",
        "test_jobs.py::test_failed_job_shows_error_body_over_http",
        "test_jobs.py::test_job_finishes_without_any_request_in_flight",
        "test_ensemble.py::test_a_gated_symbol_answers_409_model_gated_until_a_version_is_deployed_by_hand",
        "test_models.py::test_compare_scores_two_ensembles_on_the_same_bars_from_score_from",
        "test_regime.py::test_predict_tampered_artifact_returns_409",
        "test_risk.py::test_var_monte_carlo_draws_on_cpu_while_the_device_is_not_set",
        "test_rl.py::test_act_for_a_symbol_answers_with_the_version_deployed_for_it",
        "test_supervised.py::test_analyze_evaluates_and_predicts_without_storing",
        "test_supervised.py::test_predict_with_a_model_of_another_family_returns_404",
        "monitor/test_drift.py::test_recent_traffic_is_read_from_the_prediction_log",
        "monitor/test_drift.py::test_a_model_without_reference_is_a_409_that_says_so",
        "monitor/test_predictions.py",
        "test_extreme_inputs.py",
    ),
    "asserts the whole server holds nothing else (no job at all, an agent nobody trained): a fresh registry": (
        "test_regime_causal.py::test_bad_causal_requests_are_422_naming_the_field",
        "test_rl.py::test_act_for_an_agent_never_trained_is_404",
    ),
    "reads /metrics for what its own request counted: metrics are per replica, the scrape may reach the other": (
        "test_anomaly.py::test_detect_finds_shocks_with_dates_and_provenance",
        "test_cluster.py::test_fit_then_predict_gives_the_fit_labels",
        "test_decompose.py::test_fit_then_transform_uses_stored_model",
        "test_ensemble.py::test_batch_sizes_are_exported_as_a_prometheus_histogram",
        "monitor/test_drift.py::test_bars_of_the_same_regime_are_not_drift_and_a_stormier_regime_is",
    ),
    "patches the server's code in the test process (monkeypatch), where no replica runs": (
        "test_explain.py::test_shap_without_the_package_is_a_422_naming_method",
        "test_explain.py::test_work_over_the_cap_is_refused_naming_repeats",
        "test_regime.py::test_fallback_is_flagged_never_dressed_up",
    ),
    "checks a function of the server's code, no HTTP at all": (
        "test_docs.py::test_docs_page_escapes_text_from_the_document",
    ),
}

CLIENT_WARM = 50
"""Responses the run must have seen before it may expect both replicas among them (a run of a few tests, picked
with -k, may be answered by one)."""


def _route_modules() -> dict[str, ModuleType]:
    """Every route test module, by its path under the routes folder."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.walk_packages(routes_package.__path__, routes_package.__name__ + "."):
        if not info.ispkg and info.name.rsplit(".", 1)[-1].startswith("test_"):
            relative = info.name.removeprefix(routes_package.__name__ + ".").replace(".", "/") + ".py"
            found[relative] = importlib.import_module(info.name)
    return found


def _route_tests(modules: dict[str, ModuleType]) -> dict[str, Callable[..., Any]]:
    """Every test function of the route modules, by its id (``path::name``)."""
    return {f"{path}::{name}": fn for path, module in modules.items() for name, fn in vars(module).items()
            if name.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == module.__name__}


def _excluded(test_id: str) -> str | None:
    """Why a route test does not run here (None when it does)."""
    path = test_id.split("::", 1)[0]
    return next((reason for reason, ids in EXCLUDED.items() if test_id in ids or path in ids), None)


def _alias(test_id: str) -> str:
    """The name a route test runs under here: ``test_<module>__<test>``, e.g. ``test_cluster__bad_inputs...``."""
    path, name = test_id.split("::")
    module = path.removesuffix(".py").replace("/", "_").replace("test_", "")
    return f"test_{module}__{name.removeprefix('test_')}"


ROUTE_MODULES = _route_modules()
ROUTE_TESTS = _route_tests(ROUTE_MODULES)
CONTRACT = {_alias(test_id): fn for test_id, fn in ROUTE_TESTS.items() if _excluded(test_id) is None}
globals().update(CONTRACT)  # pytest collects them from this module, under their aliases

ENSEMBLE, EXPLAIN = ROUTE_MODULES["test_ensemble.py"], ROUTE_MODULES["test_explain.py"]

# The route modules' own fixtures that the tests here ask for, made over Ray: the drift tests' model is theirs as
# it is (fitted through ``client`` below).
calm_model = ROUTE_MODULES["monitor/test_drift.py"].calm_model
# ``bars`` and ``served`` are each several modules' fixtures by one name: here each has a name of its own, and the
# shared name gives the one of the requesting test's module.
rl_bars = pytest.fixture(scope="module", name="rl_bars")(inspect.unwrap(ROUTE_MODULES["test_rl.py"].bars))
causal_bars = pytest.fixture(scope="module", name="causal_bars")(
    inspect.unwrap(ROUTE_MODULES["test_regime_causal.py"].bars))
ensemble_bars = pytest.fixture(scope="module", name="ensemble_bars")(inspect.unwrap(ENSEMBLE.bars))
BY_MODULE: dict[str, dict[str, str]] = {
    "bars": {"test_rl.py": "rl_bars", "test_regime_causal.py": "causal_bars", "test_ensemble.py": "ensemble_bars"},
    "served": {"test_ensemble.py": "ensemble_served", "test_explain.py": "explain_served"},
}


def _of_module(name: str, request: pytest.FixtureRequest) -> Any:
    """The value of fixture ``name`` as the requesting test's own route module defines it."""
    module = next(path for path, m in ROUTE_MODULES.items() if m.__name__ == request.function.__module__)
    return request.getfixturevalue(BY_MODULE[name][module])


@pytest.fixture
def bars(request: pytest.FixtureRequest) -> Any:
    """The ``bars`` of the requesting test's route module."""
    return _of_module("bars", request)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Any:
    """The ``served`` of the requesting test's route module."""
    return _of_module("served", request)


@pytest.fixture(scope="module")
def answered() -> Counter[str]:
    """How many responses each replica gave over the module's run ('' for a response that named none)."""
    return Counter()


@contextmanager
def _contract_http(ray_server: RayServer, answered: Counter[str]) -> Iterator[httpx.Client]:
    """HTTP on Serve's proxy with the API key, counting in ``answered`` which replica gave each response."""

    def count(response: httpx.Response) -> None:
        answered[response.headers.get(REPLICA, "")] += 1

    with ray_server.client() as http:
        http.follow_redirects = True  # as a TestClient does
        http.event_hooks = {"request": [], "response": [count]}
        yield http


def _bandits(http: httpx.Client) -> set[str]:
    resp = http.get("/v1/bandit")
    assert resp.status_code == 200, resp.text
    return {b["name"] for b in resp.json()["bandits"]}


@pytest.fixture
def client(ray_server: RayServer, answered: Counter[str]) -> Iterator[httpx.Client]:
    """The route tests' ``client``, on Ray.

    The bandits a test creates are deleted after it, through the API: the bandit tests name theirs ``meta``, as
    they may on the fresh app each of them gets in-process.
    """
    with _contract_http(ray_server, answered) as http:
        before = _bandits(http)
        yield http
        for name in sorted(_bandits(http) - before):
            deleted = http.delete(f"/v1/bandit/{name}")
            assert deleted.status_code == 200, deleted.text


@pytest.fixture(scope="module")
def ensemble_served(ray_server: RayServer, answered: Counter[str],
                    ensemble_bars: dict[str, Any]) -> Iterator[tuple[httpx.Client, Any]]:
    """The ensemble tests' ``served`` on Ray: their client, and their ensemble trained through it as theirs is."""
    with _contract_http(ray_server, answered) as http:
        yield http, ENSEMBLE._train(http, {"data": ensemble_bars, **ENSEMBLE.TINY})  # noqa: SLF001


@pytest.fixture(scope="module")
def rejected(ensemble_served: tuple[httpx.Client, Any]) -> Any:
    """The ensemble tests' ``rejected`` (their function), trained through their ``served`` on Ray."""
    return inspect.unwrap(ENSEMBLE.rejected)(ensemble_served)


@pytest.fixture(scope="module")
def explain_served(ray_server: RayServer, answered: Counter[str]) -> Iterator[Any]:
    """The explain tests' ``served`` on Ray: their client and their models, fitted through it."""
    with _contract_http(ray_server, answered) as http:
        yield EXPLAIN.fit_served(http)


def _reaches_ray(test_id: str, fn: Callable[..., Any]) -> bool:
    """Whether a route test asks for a fixture that this module serves from Ray."""
    asks = inspect.signature(fn).parameters
    return "client" in asks or ("served" in asks and test_id.split("::")[0] in BY_MODULE["served"])


def test_every_route_test_runs_here_or_is_excluded_with_its_reason() -> None:
    on_disk = {p.relative_to(ROUTES_DIR).as_posix() for p in ROUTES_DIR.rglob("test_*.py")}
    assert on_disk == set(ROUTE_MODULES), "a route test module was not imported here"
    listed = [test_id for ids in EXCLUDED.values() for test_id in ids]
    unknown = [t for t in listed if t not in ROUTE_TESTS and t not in ROUTE_MODULES]
    assert not unknown, f"excluded but no such route test or module: {unknown}"
    assert len(listed) == len(set(listed)), "a route test is excluded twice"
    assert all(reason.strip() for reason in EXCLUDED), "every exclusion gives its reason"
    off_ray = [t for t, fn in ROUTE_TESTS.items() if _excluded(t) is None and not _reaches_ray(t, fn)]
    assert not off_ray, f"these would not reach Ray: exclude them with a reason: {off_ray}"
    assert len(CONTRACT) == sum(_excluded(t) is None for t in ROUTE_TESTS), "two route tests share a name here"
    per_replica = [name for name, fn in CONTRACT.items() if '"/metrics"' in inspect.getsource(fn)]
    assert not per_replica, f"these read the answering replica's metrics: exclude them with a reason: {per_replica}"
    patching = [name for name, fn in CONTRACT.items() if "monkeypatch" in inspect.signature(fn).parameters]
    assert not patching, f"these patch code in this process, not in a replica: exclude them: {patching}"


def test_both_replicas_answered_the_contract_run(answered: Counter[str]) -> None:
    """Last in the module: the route tests above were answered by both replicas, each answer naming its replica."""
    if sum(answered.values()) < CLIENT_WARM:
        pytest.skip(f"only {sum(answered.values())} responses in this run: too few to expect both replicas")
    assert "" not in answered, f"{answered['']} responses named no replica"
    assert len(answered) >= 2, f"every response came from one replica: {dict(answered)}"
