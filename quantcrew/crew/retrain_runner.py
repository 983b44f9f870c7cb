"""Training schedules' firings over HTTP: the server calls of :mod:`quantcrew.crew.retraining`, and the runner.

:class:`HttpRetrainServer` implements :class:`~quantcrew.crew.retraining.RetrainServer` with the ML
client; :func:`run_policy` runs one firing for every symbol of a policy (``quantcrew retrain``);
:func:`retrain_runner` is the scheduler's run function for schedules of kind ``retrain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from quantcrew.crew.retraining import RetrainPolicy, RetrainReport, RetrainStore, retrain_symbol
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.crew.schedule import Schedule
    from quantcrew.tools.client import MLClient

__all__ = ["HttpRetrainServer", "RetrainFiring", "RetrainFailed", "retrain_runner", "run_policy"]


class RetrainFailed(RuntimeError):
    """Every symbol of a firing failed (the scheduler records the firing ``failed`` with this message)."""


@dataclass
class RetrainFiring:
    """One firing of a training schedule: a report per symbol.

    ``status``: ``succeeded`` (every symbol checked), ``degraded`` (some failed), ``failed`` (all did).
    ``run_id`` is None: a training firing makes no crew run (the scheduler reads both fields).
    """

    reports: list[RetrainReport] = field(default_factory=list)
    run_id: str | None = None

    @property
    def status(self) -> Literal["succeeded", "degraded", "failed"]:
        failed = sum(r.failed for r in self.reports)
        if failed == 0:
            return "succeeded"
        return "failed" if failed == len(self.reports) else "degraded"

    def summary(self) -> str:
        return "; ".join(f"{r.symbol}: {r.outcome}" + (f" ({r.events[-1].detail.get('error')})" if r.failed else "")
                         for r in self.reports)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "symbols": {
            r.symbol: {"name": r.name, "outcome": r.outcome, "events": [e.__dict__ for e in r.events]}
            for r in self.reports}}


class HttpRetrainServer:
    """The server side of a firing, over :class:`~quantcrew.tools.client.MLClient`.

    Args:
        client: An open client.
        job_timeout_s: Longest a training job is waited for.
    """

    def __init__(self, client: MLClient, *, job_timeout_s: float = 3600.0) -> None:
        self.client = client
        self.job_timeout_s = job_timeout_s
        self._own_gates: dict[str, dict[str, Any]] = {}  # a challenger's own quality gate, from its training job
        self._deployed: dict[str, bool] = {}  # False: it failed that gate and the server did not deploy it
        self._verdicts: dict[str, Any] = {}  # the champion-vs-challenger verdict, recorded with the promotion

    def champion(self, name: str) -> tuple[str | None, dict[str, Any]]:
        full = [d for d in self.client.ensemble_deployments().deployments if d.name == name and d.stage == "full"]
        return (full[0].model_id, {}) if full else (None, {})

    def drift(self, model_id: str, bars: OHLCV) -> tuple[bool, dict[str, Any]]:
        from quantcrew.ml_server.schemas.drift import DriftRequest

        report = self.client.monitor_drift(DriftRequest.model_validate({"model_id": model_id,
                                                                        "data": to_payload_dict(bars)}))
        summary = {"drifted": report.drifted, "judged": report.judged, "samples": report.n,
                   "psi_max": report.psi_max, "ks_pvalue_min": report.ks_pvalue_min,
                   "drifted_features": report.drifted_features, "rule": report.rule}
        return bool(report.drifted and report.judged), summary

    def quality(self, model_id: str, metric: str) -> tuple[float | None, int, bool]:
        report = self.client.monitor_model_quality(model_id)
        windows = sorted(report.windows, key=lambda w: w.size, reverse=True)  # the widest window judges
        for window in windows[:1]:
            for m in window.metrics:
                if m.metric == metric:
                    return m.value, m.n, m.judged
        return None, 0, False

    def train(self, symbol: str, name: str, bars: OHLCV, *, trigger: str, fields: Mapping[str, Any]) -> str:
        request = EnsembleTrainRequest.model_validate({**fields, "data": to_payload_dict(bars), "symbol": symbol,
                                                       "name": name, "stage": "shadow", "trigger": trigger})
        job = self.client.wait_for_job(self.client.ensemble_train(request).job_id, timeout_s=self.job_timeout_s)
        if job.status != "succeeded" or job.result is None:
            raise RuntimeError(f"training job {job.job_id} {job.status}: {job.error or 'no result'}")
        model: dict[str, Any] = job.result["model"]
        self._own_gates[model["model_id"]] = dict(job.result.get("gate") or {})
        self._deployed[model["model_id"]] = job.result.get("deployment") is not None
        return str(model["model_id"])

    def compare(self, champion_id: str, challenger_id: str, bars: OHLCV, holdout: int) -> dict[str, Any]:
        from quantcrew.ml_server.schemas.lineage import CompareRequest

        if not self._deployed.get(challenger_id, True):
            gate = self._own_gates.get(challenger_id, {})
            return {"passed": False, "reason": f"failed its own quality gate: {gate.get('summary', '')}"}
        # the ensemble reads warm-up bars before the first one it scores: the whole span goes, scored from the holdout
        reply = self.client.models_compare(CompareRequest.model_validate({
            "champion_id": champion_id, "challenger_id": challenger_id, "data": to_payload_dict(bars),
            "score_from": to_payload_dict(bars.tail(holdout))["timestamps"][0]}))
        self._verdicts[challenger_id] = reply.verdict
        return reply.model_dump(mode="json")

    def own_gate(self, model_id: str) -> dict[str, Any]:
        gate = self._own_gates.get(model_id) or dict(self.client.get_model(model_id).metadata.get("gate") or {})
        passed = bool(gate.get("passed")) and self._deployed.get(model_id, True)
        return {"passed": passed, "reason": str(gate.get("summary") or gate.get("reason") or "no gate verdict")}

    def promote(self, name: str, model_id: str, reason: str) -> None:
        from quantcrew.ml_server.schemas.lineage import PromoteRequest

        for stage in ("canary", "full"):
            self.client.models_promote(name, PromoteRequest(model_id=model_id, to_stage=stage, reason=reason,
                                                            gate=self._verdicts.get(model_id), actor="retrain"))

    def retire(self, model_id: str, reason: str) -> None:
        from quantcrew.ml_server.schemas.lineage import StageRequest

        self.client.models_stage(model_id, StageRequest(stage="retired", reason=reason))

    def rollback(self, name: str, reason: str) -> str | None:
        from quantcrew.ml_server.schemas.lineage import RollbackRequest

        return self.client.models_rollback(name, RollbackRequest(reason=reason)).model_id


def run_policy(settings: Settings, policy: RetrainPolicy, *, schedule_id: str | None = None,
               client: MLClient | None = None) -> RetrainFiring:
    """One firing of ``policy``: :func:`~quantcrew.crew.retraining.retrain_symbol` for each of its symbols.

    Raises:
        quantcrew.data.DataError: a symbol's bars cannot be loaded (before anything is sent).
    """
    from quantcrew.data import load_symbol
    from quantcrew.tools.client import make_client

    bars = {s: load_symbol(s, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
            for s in policy.symbols}
    own = client is None
    http = client if client is not None else make_client(settings.client)
    store = RetrainStore(settings.runs_db)
    try:
        server = HttpRetrainServer(http)
        return RetrainFiring([retrain_symbol(server, store, policy, s, bars[s], schedule_id=schedule_id)
                              for s in policy.symbols])
    finally:
        store.close()
        if own:
            http.close()


def retrain_runner(settings: Settings, schedule: Schedule) -> RetrainFiring:
    """The scheduler's firing of a ``retrain`` schedule.

    Raises:
        RetrainFailed: every symbol failed (recorded ``failed`` with the reasons).
    """
    firing = run_policy(settings, RetrainPolicy.from_inputs(schedule.inputs), schedule_id=schedule.schedule_id)
    if firing.status == "failed":
        raise RetrainFailed(firing.summary())
    return firing
