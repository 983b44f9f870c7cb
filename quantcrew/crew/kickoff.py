"""``run(inputs, settings)``: one crew run, recorded in the runs store. The CLI and the
scheduler only call this."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from quantcrew.config.settings import Settings, apply_crewai_environment
from quantcrew.crew.budget import BudgetExceeded, RunBudget
from quantcrew.crew.converter import view_converter
from quantcrew.crew.crew import CREWS, CrewSpec, build_crew, make_llm, required_inputs
from quantcrew.crew.decision import Decision, RiskLimits
from quantcrew.crew.runs import RunsStore, RunStatus
from quantcrew.tools.base import ToolResult
from quantcrew.tools.client import MLClient, make_client

if TYPE_CHECKING:
    from quantcrew.crew.outcomes import SettleReport

__all__ = ["CrewRunError", "RunOutcome", "check_server", "make_tools", "normalise_inputs", "run",
           "settle_known_outcomes", "unanswered", "view_builder"]


class CrewRunError(RuntimeError):
    """A crew run failed; ``run_id`` points at its record in the runs store."""

    def __init__(self, message: str, *, run_id: str | None = None, status: RunStatus = "failed") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


@dataclass
class RunOutcome:
    """What a run produced: the crew's final text, every tool's structured result, the decision, and what
    settling earlier decisions' outcomes did before the crew ran (``settled``)."""

    run_id: str
    status: RunStatus
    """``succeeded``, or ``degraded`` when a model the crew asked for could not answer (see ``degraded``)."""
    output: str
    inputs: dict[str, Any]
    tool_results: list[ToolResult] = field(default_factory=list)
    decision: Decision | None = None
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    llm_calls: int = 0
    duration_s: float = 0.0
    settled: SettleReport | None = None
    degraded_notes: list[str] = field(default_factory=list)
    """Degraded beyond the tools: e.g. the bandit's rewards could not be sent (the server was down)."""

    @property
    def degraded(self) -> bool:
        """True when a model the crew asked for could not answer (see :mod:`quantcrew.crew.decision`)."""
        return any(r.degraded for r in self.tool_results) or bool(self.degraded_notes)

    @property
    def gated(self) -> bool:
        """True when a rule answered by design for a model that failed its quality gate (not degraded)."""
        return any(r.gated for r in self.tool_results)


def settle_known_outcomes(store: RunsStore, settings: Settings, client: MLClient | None, as_of: str | None
            ) -> tuple[SettleReport | None, list[str]]:
    """Settle earlier decisions whose outcome bars lie on or before ``as_of`` (None: in the data) and reward
    the bandit for them. Never raises: a failure becomes a degraded note."""
    from quantcrew.crew.outcomes import bandit_rewarder, bars_from_settings, settle

    try:
        report = settle(store, bars_from_settings(settings), as_of=as_of,
                        reward=bandit_rewarder(client) if client is not None else None)
    except Exception as exc:  # settling must never fail the run
        return None, [f"outcomes: settling earlier decisions failed: {type(exc).__name__}: {exc}"]
    notes = []
    if report.server_error is not None and report.pending:
        notes.append(f"outcomes: {report.pending} bandit reward(s) left pending, the ML server could not take "
                     f"them ({report.server_error}); the next run or `quantcrew outcomes` sends them")
    if report.monitor_error is not None:
        notes.append(f"outcomes: {report.unposted} outcome(s) not posted to the server's monitor "
                     f"({report.monitor_error}); the next run or `quantcrew outcomes` posts them")
    elif report.server_error is not None and not report.pending:
        notes.append(f"outcomes: the ML server could not take them ({report.server_error})")
    return report, notes


def check_server(client: MLClient | None, url: str | None) -> tuple[str | None, list[str]]:
    """Ask the server one cheap question before the crew starts: is our key accepted, does it answer?

    Returns:
        A refusal (the key was refused: the run must not go on) or None, and degraded notes (the
        server did not answer: every model answer will be a fallback rule's, and the run says so).
    """
    from quantcrew.tools.errors import MLClientError, Unauthorized

    if client is None:
        return None, []
    try:
        client.list_models()
    except Unauthorized as exc:
        return (f"the ML server at {url} refused the API key ({exc}); set QUANTCREW_CLIENT__API_KEY (client.api_key) "
                "to the server's key"), []
    except MLClientError as exc:
        if exc.server_fault:
            return None, [f"the ML server at {url} did not answer before the run ({type(exc).__name__}: {exc}); "
                          "the tools answer from their fallback rules"]
    return None, []


def _unreachable_llm(settings: Settings) -> str | None:
    """Why the LLM's ``crew.llm_base_url`` cannot be reached (a TCP connect, 3 s), or None.

    The LLM client retries a refused connection for tens of seconds and then names neither the
    URL nor the setting; one connect before the crew starts does both at once.
    """
    import socket
    from urllib.parse import urlsplit

    url = settings.crew.llm_base_url
    if settings.crew.llm == "planner" or not url:
        return None
    parts = urlsplit(url if "//" in url else f"//{url}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"crew.llm_base_url {url!r} has no valid port"
    if not parts.hostname:
        return f"crew.llm_base_url {url!r} names no host"
    try:
        socket.create_connection((parts.hostname, port), timeout=3.0).close()
    except OSError as exc:
        return f"the LLM server at {url} (crew.llm_base_url, --llm-base-url) did not answer: {exc}"
    return None


def unanswered(results: list[ToolResult]) -> list[str]:
    """A note per tool call that could not answer and was not answered later for the same symbols.

    An LLM may call a tool with a bad argument and call it again correctly: only the calls the
    crew went without count. The key is the tool and its ``symbol``/``symbols`` argument.
    """
    def key(r: ToolResult) -> tuple[str, str]:
        return r.tool, str(r.arguments.get("symbols") or r.arguments.get("symbol") or "")

    answered = {key(r) for r in results if r.ok}
    notes: dict[tuple[str, str], str] = {}
    for r in results:
        if not r.ok and key(r) not in answered:
            notes[key(r)] = f"{r.tool} could not answer ({r.failure or 'failed'}): {r.summary}"
    return list(notes.values())


def normalise_inputs(kind: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The crew's defaults under ``inputs`` (None values dropped), ``symbol`` and ``symbols`` both
    present, and equal ``weights`` for the full crew when none are given."""
    if kind not in CREWS:
        raise CrewRunError(f"no crew '{kind}'; defined: {sorted(CREWS)}")
    given = {k: v for k, v in inputs.items() if v is not None}
    if "symbol" in given and "symbols" not in given:
        given["symbols"] = given["symbol"]
    full = {**CREWS[kind].defaults, **given}
    names = [s.strip() for s in str(full.get("symbols", full.get("symbol", ""))).split(",") if s.strip()]
    if names:
        full.setdefault("symbol", names[0])
        full["symbols"] = ",".join(names)
    if kind == "full" and "weights" not in full and names:
        full["weights"] = ",".join(f"{1.0 / len(names):.6g}" for _ in names)
    return full


def view_builder(results: list[ToolResult], decision: Callable[[], Decision | None], symbols: list[str]
                  ) -> Callable[[type[BaseModel]], BaseModel | None]:
    from quantcrew.crew.views import RegimeView, RiskView, StrategyView, regime_view, risk_view, strategy_view

    def build(model: type[BaseModel]) -> BaseModel | None:
        if model is RegimeView:
            return regime_view(results, symbols)
        if model is RiskView:
            return risk_view(results)
        if model is StrategyView:
            return strategy_view(results, symbols)
        if model is Decision:
            return decision()
        return None

    return build


def make_tools(spec: CrewSpec, settings: Settings, client: MLClient | None, keep: Callable[[ToolResult], None],
                results: list[ToolResult], limits: RiskLimits) -> tuple[dict[str, list[Any]], Any]:
    tools: dict[str, list[Any]] = spec.make_agent_tools(settings, client=client, on_result=keep)
    decision_tool = None
    if "portfolio_decision" in spec.tasks:
        from quantcrew.crew.decision_tool import PortfolioDecisionTool
        from quantcrew.tools.execution import ExecutionPlanTool
        from quantcrew.tools.selection import AgentSelectionTool

        decision_tool = PortfolioDecisionTool(
            collected=lambda: results, limits=limits, on_result=keep,
            selection=AgentSelectionTool(settings=settings, client=client, on_result=keep),
            execution=ExecutionPlanTool(settings=settings, client=client, on_result=keep))
        tools.setdefault("meta_orchestrator", []).append(decision_tool)
    return tools, decision_tool


def run(inputs: dict[str, Any], settings: Settings, *, kind: str = "full", llm: Any = None,
        client: MLClient | None = None, on_tool_result: Callable[[ToolResult], None] | None = None,
        process: str | None = None, budget: RunBudget | None = None,
        limits: RiskLimits | None = None) -> RunOutcome:
    """Kick off one crew once and record it.

    Args:
        inputs: Kickoff inputs (``symbols``, ``lookback``...); the crew's defaults fill the rest.
        settings: The settings tree (``client.url`` must point at a running ML server, or
            the tools answer from their fallbacks and say so).
        kind: Which crew (a key of ``quantcrew.crew.crew.CREWS``): ``full`` (the four agents and
            the decision), ``regime``, ``risk``, ``strategy`` or ``meta``.
        llm: A CrewAI LLM to use instead of the one the settings name.
        client: An ML client to use instead of one built from settings.
        on_tool_result: Called with each tool result as it arrives (progress display).
        process: ``sequential`` or ``hierarchical``; default ``settings.crew.process``.
        budget: LLM-call and wall-time limits; default from ``settings.crew``.
        limits: Risk limits of the decision; default ``settings.limits``.

    Raises:
        CrewRunError: the crew could not be built, failed, or ran out of budget (``status``
            says which); the cause is chained and the run is recorded.
    """
    apply_crewai_environment(settings)
    spec_inputs = normalise_inputs(kind, inputs)
    spec = CREWS[kind]
    missing = required_inputs(*spec.tasks) - set(spec_inputs)
    if missing:
        raise CrewRunError(f"missing kickoff inputs: {sorted(missing)}")
    budget = budget or RunBudget(settings.crew.max_llm_calls, settings.crew.max_seconds)
    limits = limits or RiskLimits.model_validate(settings.limits.model_dump())
    results: list[ToolResult] = []
    store = RunsStore(settings.runs_db)

    def keep(result: ToolResult) -> None:
        results.append(result)
        store.record_tool_call(run_id, result)
        if on_tool_result is not None:
            on_tool_result(result)

    owned: MLClient | None = None
    if client is None and settings.client.url is not None:
        # one client (one connection pool, one breaker) for every tool of the crew
        client = owned = make_client(settings.client)
    refused, degraded_notes = check_server(client, settings.client.url)
    settled: SettleReport | None = None
    if refused is None:
        # outcomes close the loop: earlier decisions are settled (and the bandit rewarded) before this one is
        # made, using only outcome bars on or before this run's as-of date
        settled, notes = settle_known_outcomes(store, settings, client, spec_inputs.get("end_date"))
        degraded_notes += notes
    tools, decision_tool = make_tools(spec, settings, client, keep, results, limits)

    def ensure_decision() -> Decision | None:
        """The pipeline's decision; run here if the LLM never called the tool (or a manager answered)."""
        if decision_tool is None:
            return None
        if decision_tool.decision is None:
            decision_tool.run(symbols=spec_inputs["symbols"], drawdown=float(spec_inputs.get("drawdown", 0.0)),
                              lookback=int(spec_inputs.get("lookback", 750)), end_date=spec_inputs.get("end_date"))
        decision: Decision | None = decision_tool.decision
        return decision

    structurer = view_builder(results, ensure_decision,
                               [s.strip() for s in str(spec_inputs.get("symbols", "")).split(",") if s.strip()])
    process = process or settings.crew.process
    tool_plan = dict(spec.tool_plan)
    if process == "hierarchical" and "portfolio_decision" in spec.tasks:
        # the delegated meta-orchestrator worker gets a task without a name: plan by its role
        tool_plan[spec.delegation()["portfolio_decision"]] = ["portfolio_decision"]
    chosen_llm = llm if llm is not None else make_llm(settings, spec_inputs, tool_plan=tool_plan,
                                                      structurer=structurer, delegation=spec.delegation())
    llm_name = str(getattr(chosen_llm, "model", type(chosen_llm).__name__))
    run_id = store.start_run(kind=kind, inputs=spec_inputs, llm=llm_name, server_url=settings.client.url,
                             budget=budget.describe())
    started = time.perf_counter()

    def close(status: RunStatus, **fields: Any) -> None:
        store.finish_run(run_id, status=status, llm_calls=budget.llm_calls,
                         duration_s=time.perf_counter() - started,
                         degraded=any(r.degraded for r in results) or bool(degraded_notes),
                         gated=any(r.gated for r in results),
                         settled=settled.model_dump(mode="json", exclude={"outcomes"}) if settled else None,
                         notes=degraded_notes, **fields)
        store.close()

    llm_down = _unreachable_llm(settings) if llm is None else None
    if llm_down is not None:
        close("failed", error=llm_down)
        if owned is not None:
            owned.close()
        raise CrewRunError(f"crew run {run_id} not started: {llm_down}", run_id=run_id)
    if refused is not None:
        close("auth_failed", error=refused)
        if owned is not None:
            owned.close()
        raise CrewRunError(f"crew run {run_id} not started: {refused}", run_id=run_id, status="auth_failed")
    try:
        with budget.enforce():
            crew = build_crew(kind, settings, tools=tools, llm=chosen_llm, process=process,
                              converter_cls=view_converter(structurer))
            output = crew.kickoff(inputs=spec_inputs)
            ensure_decision()
    except KeyboardInterrupt:
        close("interrupted", error="interrupted by the user")
        raise
    except BudgetExceeded as exc:
        close("budget_exceeded", error=str(exc))
        raise CrewRunError(f"crew run {run_id} stopped: {exc}", run_id=run_id, status="budget_exceeded") from exc
    except Exception as exc:  # a crew failure of any kind is recorded, then re-raised with its cause
        where = f" (LLM {llm_name} at {settings.crew.llm_base_url})" if settings.crew.llm_base_url else ""
        close("failed", error=f"{type(exc).__name__}: {exc}{where}")
        raise CrewRunError(f"crew run {run_id} failed: {type(exc).__name__}: {exc}{where}", run_id=run_id) from exc
    finally:
        if owned is not None:
            owned.close()
    decision = decision_tool.decision if decision_tool is not None else None
    views = {str(t.name): t.pydantic.model_dump(mode="json")
             for t in getattr(output, "tasks_output", []) if getattr(t, "pydantic", None) is not None}
    text = str(getattr(output, "raw", output))
    stored = decision.model_dump(mode="json") if decision is not None else None
    unauthorized = [r for r in results if r.failure == "unauthorized"]
    if unauthorized:
        error = f"the ML server refused the API key: {unauthorized[0].summary}"
        close("auth_failed", output=text, decision=stored, error=error)
        raise CrewRunError(f"crew run {run_id}: {error}", run_id=run_id, status="auth_failed")
    degraded_notes += unanswered(results)
    status: RunStatus = "degraded" if degraded_notes or any(r.degraded for r in results) else "succeeded"
    close(status, output=text, decision=stored)
    return RunOutcome(run_id=run_id, status=status, output=text, inputs=spec_inputs, tool_results=results,
                      decision=decision, views=views, llm_calls=budget.llm_calls,
                      duration_s=time.perf_counter() - started, settled=settled, degraded_notes=degraded_notes)
