"""The ML server's endpoints as a table: one row per endpoint, read by both clients.

A row names the endpoint (the client method of the same name), its HTTP method and path, the
request model it takes and how to parse its reply, and how the client may call it: only an
idempotent endpoint is retried after a retryable fault (``REGIME_FIT`` creates a registry
version and never is), and a probe (``HEALTH``, ``READY``) makes one attempt past the breaker.
Tools name the rows in their calls (:class:`quantcrew.tools.calls.Call`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import TypeAdapter

from quantcrew.ml_server.schemas.alerts import (
    AlertAckRequest,
    AlertEvaluateRequest,
    AlertEvaluation,
    AlertInfo,
    AlertList,
    AlertResolveRequest,
    MonitorEventAccepted,
    MonitorEventRequest,
)
from quantcrew.ml_server.schemas.anomaly import (
    AnomalyFitRequest,
    AnomalyFitResponse,
    AnomalyRequest,
    AnomalyResponse,
    AnomalyScoreRequest,
)
from quantcrew.ml_server.schemas.bandit import (
    BanditCreateRequest,
    BanditDecision,
    BanditDeleted,
    BanditInfo,
    BanditList,
    BanditReplayRequest,
    BanditResetRequest,
    BanditRewardRequest,
    BanditRewardResponse,
    BanditSelectRequest,
    BanditSimulateRequest,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.cluster import (
    ClusterFitRequest,
    ClusterFitResponse,
    ClusterPredictRequest,
    ClusterPredictResponse,
    ClusterRequest,
    ClusterResponse,
)
from quantcrew.ml_server.schemas.common import HealthResponse, ModelInfo, ReadyResponse, WireModel
from quantcrew.ml_server.schemas.decompose import (
    DecomposeFitRequest,
    DecomposeFitResponse,
    DecomposeRequest,
    DecomposeResponse,
    DecomposeTransformRequest,
    DecomposeTransformResponse,
)
from quantcrew.ml_server.schemas.drift import DriftReport, DriftRequest
from quantcrew.ml_server.schemas.ensemble import (
    DeploymentInfo,
    DeploymentList,
    DeploymentRequest,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    EnsembleTrainRequest,
    ShadowLog,
)
from quantcrew.ml_server.schemas.execution import ExecutionRequest, ExecutionResponse
from quantcrew.ml_server.schemas.explain import (
    ExplainGlobalRequest,
    ExplainGlobalResponse,
    ExplainLocalRequest,
    ExplainLocalResponse,
)
from quantcrew.ml_server.schemas.jobs import JobInfo, JobList
from quantcrew.ml_server.schemas.lineage import (
    CleanupRequest,
    CleanupResponse,
    CompareRequest,
    CompareResponse,
    DeploymentEvent,
    LineageResponse,
    PromoteRequest,
    RollbackRequest,
    RollbackResponse,
    StageChange,
    StageRequest,
)
from quantcrew.ml_server.schemas.monitor import ModelQuality, OutcomeBatch, OutcomeList, OutcomesAccepted
from quantcrew.ml_server.schemas.regime import (
    RegimeCausalRequest,
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
)
from quantcrew.ml_server.schemas.risk import CovarianceRequest, CovarianceResponse, VarRequest, VarResponse
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest, VarBacktestResponse
from quantcrew.ml_server.schemas.rl import (
    RLActRequest,
    RLActResponse,
    RLEvaluateRequest,
    RLEvaluateResponse,
    RLTrainRequest,
)
from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedFitResponse,
    SupervisedPredictRequest,
    SupervisedPredictResponse,
)

__all__ = [
    "Endpoint", "MONITOR_MODEL_QUALITY", "MONITOR_OUTCOMES", "MONITOR_OUTCOMES_LIST",
    "MONITOR_DRIFT", "MONITOR_DRIFT_REPORT",
    "ALERT_ACK", "ALERT_GET", "ALERT_RESOLVE", "ALERTS_EVALUATE", "ALERTS_LIST", "MONITOR_EVENT",
    "ANOMALY_DETECT", "ANOMALY_FIT", "ANOMALY_SCORE", "BANDIT_CREATE", "BANDIT_DELETE", "BANDIT_LIST",
    "BANDIT_REPLAY", "BANDIT_RESET", "BANDIT_REWARD", "BANDIT_SELECT", "BANDIT_SIMULATE", "BANDIT_STATE", "CANCEL_JOB",
    "CLUSTER_ANALYZE", "CLUSTER_FIT", "CLUSTER_PREDICT", "DECOMPOSE_ANALYZE", "DECOMPOSE_FIT", "DECOMPOSE_TRANSFORM",
    "ENSEMBLE_DEPLOY", "ENSEMBLE_DEPLOYMENTS", "ENSEMBLE_PREDICT", "ENSEMBLE_SHADOW_LOG", "ENSEMBLE_TRAIN",
    "EXECUTION_PLAN", "EXPLAIN_GLOBAL", "EXPLAIN_LOCAL",
    "GET_JOB", "GET_MODEL", "HEALTH", "LIST_JOBS", "LIST_MODELS", "READY", "REGIME_CAUSAL",
    "REGIME_FIT", "REGIME_LABEL", "REGIME_PREDICT", "RISK_BACKTEST", "RISK_COVARIANCE", "RISK_VAR", "RL_ACT",
    "RL_EVALUATE", "RL_TRAIN", "SUPERVISED_ANALYZE", "SUPERVISED_FIT", "SUPERVISED_PREDICT",
    "MODELS_CLEANUP", "MODELS_COMPARE", "MODELS_EVENTS", "MODELS_LINEAGE", "MODELS_PROMOTE", "MODELS_ROLLBACK",
    "MODELS_STAGE",
]

_T = TypeVar("_T")
_Req = TypeVar("_Req", bound=WireModel)


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[_Req, _T]):
    """One row of the endpoint table.

    Attributes:
        name: The client method's name, e.g. ``"regime_label"``.
        method: HTTP method.
        path: Path under the server's base URL; may hold an ``{id}`` placeholder (a model, job or bandit id).
        request_type: The request model sent as the JSON body, or None for no body.
        parse: The response type's JSON validator.
        idempotent: May be retried after a retryable fault.
        probe: One attempt, no breaker.
        doc: The client method's docstring.
    """

    name: str
    method: str
    path: str
    request_type: type[_Req] | None
    parse: Callable[[bytes], _T]
    idempotent: bool
    probe: bool = False
    doc: str = ""


_MODEL_LIST: TypeAdapter[list[ModelInfo]] = TypeAdapter(list[ModelInfo])

HEALTH: Endpoint[WireModel, HealthResponse] = Endpoint(
    "health", "GET", "/health", None, HealthResponse.model_validate_json, True, probe=True
)
READY: Endpoint[WireModel, ReadyResponse] = Endpoint(
    "ready", "GET", "/ready", None, ReadyResponse.model_validate_json, True, probe=True
)
LIST_MODELS: Endpoint[WireModel, list[ModelInfo]] = Endpoint(
    "list_models", "GET", "/v1/models", None, _MODEL_LIST.validate_json, True
)
GET_MODEL: Endpoint[WireModel, ModelInfo] = Endpoint(
    "get_model", "GET", "/v1/models/{id}", None, ModelInfo.model_validate_json, True
)


def _post(name: str, path: str, request_type: type[_Req], response_type: type[_T], doc: str, *,
          idempotent: bool = True) -> Endpoint[_Req, _T]:
    parse: Callable[[bytes], _T] = response_type.model_validate_json  # type: ignore[attr-defined]
    return Endpoint(name, "POST", path, request_type, parse, idempotent, doc=doc)


REGIME_LABEL = _post("regime_label", "/v1/regime/label", RegimeLabelRequest, RegimeLabelResponse,
                     "Fit an HMM on the bars and label each one (stateless; retried).")
REGIME_FIT = _post("regime_fit", "/v1/regime/fit", RegimeFitRequest, RegimeFitResponse,
                   "Fit an HMM and store it as a new registry version (never retried).", idempotent=False)
REGIME_PREDICT = _post("regime_predict", "/v1/regime/predict", RegimePredictRequest, RegimeLabelResponse,
                       "Label bars with a stored model (retried).")
REGIME_CAUSAL = _post("regime_causal", "/v1/regime/causal", RegimeCausalRequest, JobInfo,
                      "Start labelling every bar from a model fitted on earlier bars only (walk-forward refits); "
                      "returns the job, whose result is a RegimeCausalResult (never retried: each call starts a "
                      "job).", idempotent=False)
RISK_COVARIANCE = _post("risk_covariance", "/v1/risk/covariance", CovarianceRequest, CovarianceResponse,
                        "Sample, Ledoit-Wolf, OAS or constant-correlation covariance of returns (stateless).")
RISK_VAR = _post("risk_var", "/v1/risk/var", VarRequest, VarResponse,
                 "Portfolio VaR and CVaR by the requested methods (stateless; retried).")
RISK_BACKTEST = _post("risk_backtest", "/v1/risk/backtest", VarBacktestRequest, VarBacktestResponse,
                      "Rolling out-of-sample VaR with Kupiec and Christoffersen tests (stateless; retried).")
DECOMPOSE_ANALYZE = _post("decompose_analyze", "/v1/decompose/analyze", DecomposeRequest, DecomposeResponse,
                          "PCA / FastICA / NMF of a returns matrix (stateless; retried).")
DECOMPOSE_FIT = _post("decompose_fit", "/v1/decompose/fit", DecomposeFitRequest, DecomposeFitResponse,
                      "Fit a decomposition and store it (never retried).", idempotent=False)
DECOMPOSE_TRANSFORM = _post("decompose_transform", "/v1/decompose/transform", DecomposeTransformRequest,
                            DecomposeTransformResponse, "Factor scores of new rows from a stored decomposition.")
CLUSTER_ANALYZE = _post("cluster_analyze", "/v1/cluster/analyze", ClusterRequest, ClusterResponse,
                        "KMeans / DBSCAN / Gaussian-mixture clusters of rows or assets (stateless; retried).")
CLUSTER_FIT = _post("cluster_fit", "/v1/cluster/fit", ClusterFitRequest, ClusterFitResponse,
                    "Fit a clustering of rows and store it (never retried).", idempotent=False)
CLUSTER_PREDICT = _post("cluster_predict", "/v1/cluster/predict", ClusterPredictRequest, ClusterPredictResponse,
                        "Cluster labels of new rows from a stored model.")
ANOMALY_DETECT = _post("anomaly_detect", "/v1/anomaly/detect", AnomalyRequest, AnomalyResponse,
                       "IsolationForest anomaly scores of OHLCV bars (stateless; retried).")
ANOMALY_FIT = _post("anomaly_fit", "/v1/anomaly/fit", AnomalyFitRequest, AnomalyFitResponse,
                    "Fit an anomaly model on bars and store it (never retried).", idempotent=False)
ANOMALY_SCORE = _post("anomaly_score", "/v1/anomaly/score", AnomalyScoreRequest, AnomalyResponse,
                      "Score new bars with a stored anomaly model.")
SUPERVISED_ANALYZE = _post("supervised_analyze", "/v1/supervised/analyze", SupervisedAnalyzeRequest,
                           SupervisedFitResponse, "Fit, evaluate on a chronological holdout and predict (stateless).")
SUPERVISED_FIT = _post("supervised_fit", "/v1/supervised/fit", SupervisedFitRequest, SupervisedFitResponse,
                       "Fit a supervised model and store it (never retried).", idempotent=False)
SUPERVISED_PREDICT = _post("supervised_predict", "/v1/supervised/predict", SupervisedPredictRequest,
                           SupervisedPredictResponse, "Predictions of a stored supervised model.")
RL_TRAIN = _post("rl_train", "/v1/rl/train", RLTrainRequest, JobInfo,
                 "Start training specialized agents; returns the job (never retried).", idempotent=False)
RL_ACT = _post("rl_act", "/v1/rl/act", RLActRequest, RLActResponse,
               "Each selected policy's action at the last bar.")
RL_EVALUATE = _post("rl_evaluate", "/v1/rl/evaluate", RLEvaluateRequest, RLEvaluateResponse,
                    "Out-of-sample backtest of stored policies beside buy-and-hold and flat.")
BANDIT_CREATE = _post("bandit_create", "/v1/bandit", BanditCreateRequest, BanditInfo,
                      "Create a bandit (one per regime inside); never retried.", idempotent=False)
BANDIT_SELECT = _post("bandit_select", "/v1/bandit/select", BanditSelectRequest, BanditDecision,
                      "Choose an arm for a regime; records a decision (never retried).", idempotent=False)
BANDIT_REWARD = _post("bandit_reward", "/v1/bandit/reward", BanditRewardRequest, BanditRewardResponse,
                      "Record the reward of a past decision (never retried).", idempotent=False)
BANDIT_REPLAY = _post("bandit_replay", "/v1/bandit/replay", BanditReplayRequest, JobInfo,
                      "Start a warm-start replay of stored RL policies into a bandit; returns the job (never "
                      "retried: a span is replayed once, a second time is a 409).", idempotent=False)
BANDIT_SIMULATE = _post("bandit_simulate", "/v1/bandit/simulate", BanditSimulateRequest, BanditSimulateResponse,
                        "Simulate a policy on arms whose means are known; reports regret.")
ENSEMBLE_TRAIN = _post("ensemble_train", "/v1/ensemble/train", EnsembleTrainRequest, JobInfo,
                       "Start walk-forward training of the ensemble (and execution network); returns the job "
                       "(never retried).", idempotent=False)
ENSEMBLE_PREDICT = _post("ensemble_predict", "/v1/ensemble/predict", EnsemblePredictRequest,
                         EnsemblePredictResponse,
                         "Signal, calibrated confidence and uncertainty metrics from the deployed ensemble.")
ENSEMBLE_DEPLOY = _post("ensemble_deploy", "/v1/ensemble/deployments", DeploymentRequest, DeploymentInfo,
                        "Set a stored ensemble version's stage: shadow, canary, gradual or full (never retried).",
                        idempotent=False)
EXECUTION_PLAN = _post("execution_plan", "/v1/execution/plan", ExecutionRequest, ExecutionResponse,
                       "Order size and timing with MC-dropout intervals, per decision.")
EXPLAIN_GLOBAL = _post("explain_global", "/v1/explain/global", ExplainGlobalRequest, ExplainGlobalResponse,
                       "Permutation importance (or SHAP) of a stored model's output over recent rows, and a shallow "
                       "surrogate tree with its fidelity (ensemble, supervised, rl).")
EXPLAIN_LOCAL = _post("explain_local", "/v1/explain/local", ExplainLocalRequest, ExplainLocalResponse,
                      "What each feature's value did to one prediction of a stored model (perturbation or SHAP).")
ENSEMBLE_DEPLOYMENTS: Endpoint[WireModel, DeploymentList] = Endpoint(
    "ensemble_deployments", "GET", "/v1/ensemble/deployments", None, DeploymentList.model_validate_json, True
)
ENSEMBLE_SHADOW_LOG: Endpoint[WireModel, ShadowLog] = Endpoint(
    "ensemble_shadow_log", "GET", "/v1/ensemble/deployments/{id}/shadow", None, ShadowLog.model_validate_json, True
)
GET_JOB: Endpoint[WireModel, JobInfo] = Endpoint(
    "get_job", "GET", "/v1/jobs/{id}", None, JobInfo.model_validate_json, True
)
LIST_JOBS: Endpoint[WireModel, JobList] = Endpoint(
    "list_jobs", "GET", "/v1/jobs", None, JobList.model_validate_json, True
)
CANCEL_JOB: Endpoint[WireModel, JobInfo] = Endpoint(
    "cancel_job", "DELETE", "/v1/jobs/{id}", None, JobInfo.model_validate_json, False
)
BANDIT_STATE: Endpoint[WireModel, BanditState] = Endpoint(
    "bandit_state", "GET", "/v1/bandit/{id}", None, BanditState.model_validate_json, True
)
BANDIT_LIST: Endpoint[WireModel, BanditList] = Endpoint(
    "bandit_list", "GET", "/v1/bandit", None, BanditList.model_validate_json, True
)
BANDIT_DELETE: Endpoint[WireModel, BanditDeleted] = Endpoint(
    "bandit_delete", "DELETE", "/v1/bandit/{id}", None, BanditDeleted.model_validate_json, False
)
# A POST with an id in its path: a hand-written method of each client, not a bound request method.
BANDIT_RESET: Endpoint[BanditResetRequest, BanditState] = Endpoint(
    "bandit_reset", "POST", "/v1/bandit/{id}/reset", BanditResetRequest, BanditState.model_validate_json, False
)
# alerts (the monitor family)
ALERTS_LIST: Endpoint[WireModel, AlertList] = Endpoint(
    "alerts_list", "GET", "/v1/monitor/alerts", None, AlertList.model_validate_json, True
)
ALERT_GET: Endpoint[WireModel, AlertInfo] = Endpoint(
    "alert_get", "GET", "/v1/monitor/alerts/{id}", None, AlertInfo.model_validate_json, True
)
# POSTs with an id in their path: hand-written methods of each client. Acknowledging or resolving twice
# changes nothing the second time, so both are retried.
ALERT_ACK: Endpoint[AlertAckRequest, AlertInfo] = Endpoint(
    "alert_ack", "POST", "/v1/monitor/alerts/{id}/ack", AlertAckRequest, AlertInfo.model_validate_json, True
)
ALERT_RESOLVE: Endpoint[AlertResolveRequest, AlertInfo] = Endpoint(
    "alert_resolve", "POST", "/v1/monitor/alerts/{id}/resolve", AlertResolveRequest, AlertInfo.model_validate_json,
    True
)
ALERTS_EVALUATE = _post("alerts_evaluate", "/v1/monitor/alerts/evaluate", AlertEvaluateRequest, AlertEvaluation,
                        "Evaluate the server's alert rules now (all, or those named); returns what changed.")
MONITOR_EVENT = _post("monitor_event", "/v1/monitor/events", MonitorEventRequest, MonitorEventAccepted,
                      "Report a client event (a circuit breaker opening) to the server's alerts; an event_id "
                      "makes a resend count once (retried).")
# outcomes and live quality (the monitor family)
MONITOR_OUTCOMES = _post("monitor_outcomes", "/v1/monitor/outcomes", OutcomeBatch, OutcomesAccepted,
                         "Post what happened after decisions (idempotent per outcome_id: a resend counts as known; "
                         "retried).")
MONITOR_OUTCOMES_LIST: Endpoint[WireModel, OutcomeList] = Endpoint(
    "monitor_outcomes_list", "GET", "/v1/monitor/outcomes", None, OutcomeList.model_validate_json, True
)
MONITOR_MODEL_QUALITY: Endpoint[WireModel, ModelQuality] = Endpoint(
    "monitor_model_quality", "GET", "/v1/monitor/models/{id}", None, ModelQuality.model_validate_json, True
)
# drift against each model's training reference (the monitor family)
MONITOR_DRIFT = _post("monitor_drift", "/v1/monitor/drift", DriftRequest, DriftReport,
                      "Drift of a stored model on bars sent (its features from them, its outputs where cheap) against "
                      "its training reference, with the bars' data-quality score (retried: nothing is created).")
MONITOR_DRIFT_REPORT: Endpoint[WireModel, DriftReport] = Endpoint(
    "monitor_drift_report", "GET", "/v1/monitor/drift/{id}", None, DriftReport.model_validate_json, True
)
# model lifecycle (every stateful family): lineage, stages, promotion, rollback, retention, comparison.
# Listed in __all__ (the table's rows) once both clients have their methods (models_lineage, models_events,
# models_stage, models_promote, models_rollback by hand; models_compare, models_cleanup as _Post rows).
_EVENT_LIST: TypeAdapter[list[DeploymentEvent]] = TypeAdapter(list[DeploymentEvent])
MODELS_LINEAGE: Endpoint[WireModel, LineageResponse] = Endpoint(
    "models_lineage", "GET", "/v1/models/{id}/lineage", None, LineageResponse.model_validate_json, True
)
MODELS_EVENTS: Endpoint[WireModel, list[DeploymentEvent]] = Endpoint(
    "models_events", "GET", "/v1/models/events", None, _EVENT_LIST.validate_json, True
)
# POSTs with an id (a model id, or a deployment name) in their path: `client.models_promote(name, request)`.
# Setting a stage twice ends in the same state (retried); a promotion or a rollback retried would take a
# second step (never retried).
MODELS_STAGE: Endpoint[StageRequest, StageChange] = Endpoint(
    "models_stage", "POST", "/v1/models/{id}/stage", StageRequest, StageChange.model_validate_json, True
)
MODELS_PROMOTE: Endpoint[PromoteRequest, StageChange] = Endpoint(
    "models_promote", "POST", "/v1/models/{id}/promote", PromoteRequest, StageChange.model_validate_json, False
)
MODELS_ROLLBACK: Endpoint[RollbackRequest, RollbackResponse] = Endpoint(
    "models_rollback", "POST", "/v1/models/{id}/rollback", RollbackRequest, RollbackResponse.model_validate_json,
    False
)
MODELS_COMPARE = _post("models_compare", "/v1/models/compare", CompareRequest, CompareResponse,
                       "Champion against challenger on the same rows: per-row losses and a paired test (retried).")
MODELS_CLEANUP = _post("models_cleanup", "/v1/models/cleanup", CleanupRequest, CleanupResponse,
                       "Apply the retention policy now (dry_run: report only); deleting twice deletes nothing more "
                       "(retried).")
