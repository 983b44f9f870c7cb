"""Which REST routes are MCP tools, by name: one tool per public fit, inference, bandit, job and registry verb.

Each entry names the route (method and path) whose handler the tool calls; the tool's input is that route's
request schema (its JSON body, or its path and query parameters), its result that route's reply. Operator
actions stay REST-only: deployment stages, promotion and rollback, retention, deleting or resetting a
bandit, acknowledging alerts. Those change what every client is served and belong to a person, not to an
agent that was handed a tool list.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOG", "MCP_PATH", "ToolEntry"]

MCP_PATH = "/mcp"
"""Where the app serves the tools over streamable HTTP."""


@dataclass(frozen=True)
class ToolEntry:
    """One MCP tool: its name and the REST route it is.

    Attributes:
        name: The tool's name (``<family>_<verb>``).
        method: The route's HTTP method.
        path: The route's full path template, ``/v1`` included.
        read_only: The call changes no state a client sees (MCP's ``readOnlyHint``); answers that are only
            written to the prediction log count as read-only.
        destructive: The call may undo earlier work (MCP's ``destructiveHint``): cancelling a job.
    """

    name: str
    method: str
    path: str
    read_only: bool = False
    destructive: bool = False


def _get(name: str, path: str) -> ToolEntry:
    return ToolEntry(name, "GET", path, read_only=True)


def _ask(name: str, path: str) -> ToolEntry:
    """A POST that answers from the request or a stored model and keeps nothing."""
    return ToolEntry(name, "POST", path, read_only=True)


def _do(name: str, path: str) -> ToolEntry:
    """A POST that stores something: a model version, a job, a bandit's state, an outcome."""
    return ToolEntry(name, "POST", path)


CATALOG: tuple[ToolEntry, ...] = (
    _ask("regime_label", "/v1/regime/label"),
    _do("regime_fit", "/v1/regime/fit"),
    _ask("regime_predict", "/v1/regime/predict"),
    _do("regime_causal", "/v1/regime/causal"),
    _ask("risk_covariance", "/v1/risk/covariance"),
    _ask("risk_var", "/v1/risk/var"),
    _ask("risk_backtest", "/v1/risk/backtest"),
    _ask("decompose_analyze", "/v1/decompose/analyze"),
    _do("decompose_fit", "/v1/decompose/fit"),
    _ask("decompose_transform", "/v1/decompose/transform"),
    _ask("cluster_analyze", "/v1/cluster/analyze"),
    _do("cluster_fit", "/v1/cluster/fit"),
    _ask("cluster_predict", "/v1/cluster/predict"),
    _ask("anomaly_detect", "/v1/anomaly/detect"),
    _do("anomaly_fit", "/v1/anomaly/fit"),
    _ask("anomaly_score", "/v1/anomaly/score"),
    _ask("supervised_analyze", "/v1/supervised/analyze"),
    _do("supervised_fit", "/v1/supervised/fit"),
    _ask("supervised_predict", "/v1/supervised/predict"),
    _do("rl_train", "/v1/rl/train"),
    _ask("rl_act", "/v1/rl/act"),
    _ask("rl_evaluate", "/v1/rl/evaluate"),
    _do("bandit_create", "/v1/bandit"),
    _get("bandit_list", "/v1/bandit"),
    _do("bandit_select", "/v1/bandit/select"),
    _do("bandit_reward", "/v1/bandit/reward"),
    _do("bandit_replay", "/v1/bandit/replay"),
    _ask("bandit_simulate", "/v1/bandit/simulate"),
    _get("bandit_state", "/v1/bandit/{bandit}"),
    _do("ensemble_train", "/v1/ensemble/train"),
    _ask("ensemble_predict", "/v1/ensemble/predict"),
    _get("ensemble_deployments", "/v1/ensemble/deployments"),
    _ask("execution_plan", "/v1/execution/plan"),
    _ask("explain_global", "/v1/explain/global"),
    _ask("explain_local", "/v1/explain/local"),
    _do("monitor_outcomes", "/v1/monitor/outcomes"),
    _ask("monitor_drift", "/v1/monitor/drift"),
    _get("monitor_quality", "/v1/monitor/models/{model_id}"),
    _get("monitor_alerts", "/v1/monitor/alerts"),
    _get("models_list", "/v1/models"),
    _get("models_get", "/v1/models/{model_id}"),
    _get("models_lineage", "/v1/models/{model_id}/lineage"),
    _ask("models_compare", "/v1/models/compare"),
    _get("jobs_list", "/v1/jobs"),
    _get("jobs_get", "/v1/jobs/{job_id}"),
    ToolEntry("jobs_cancel", "DELETE", "/v1/jobs/{job_id}", destructive=True),
)
"""Every tool, in the order ``tools/list`` gives them (the order of the families on the REST side)."""
