"""``DailyFlow``: the daily pipeline as a crewAI Flow, regime -> risk -> strategy -> decision -> outcomes, its
state persisted after every step.

    from quantcrew.crew import DailyFlow

    state = DailyFlow(settings).kickoff(inputs={"symbols": "SP500,NASDAQ"})
    state.status, state.decision, state.degraded_reasons

Each step is one task of :class:`~quantcrew.crew.base.QuantCrew` run by its agent (the same YAML,
tools, LLM and decision pipeline as ``quantcrew run``), so the flow decides as the crew does:

1. ``regime``: the regime analyst's ``market_regimes`` (a RegimeView). The flow starts here: one
   run in the runs store for the whole flow (every tool call is recorded in it), one cheap
   question to the ML server (a refused key stops the flow as ``auth_failed``; a server that does
   not answer makes the flow degraded, as every model answer will be a fallback rule's);
2. ``risk``: the risk manager's ``portfolio_risk`` (a RiskView);
3. ``strategy``: the strategy agent's ``strategy_review`` (a StrategyView);
4. ``decision``: earlier decisions whose outcome bar is now known (on or before ``as_of``) are
   settled first and the bandit rewarded for them, as ``quantcrew run`` does before its crew, so
   the choice of agent learns from every known outcome; then the meta-orchestrator's
   ``portfolio_decision`` (the Decision);
5. ``outcomes``: the decision is stored in the runs store, where the next run, the next flow or
   ``quantcrew outcomes`` settles it once the bar after it is known; its outcome ids (as the
   monitor will know them) go into the state. It runs after a failed step too: it closes the run
   with the flow's status.

**Degraded is said loudly**: a step whose models could not all answer is ``degraded`` with the
reasons, the flow's ``status`` is ``degraded`` (never ``succeeded``) with every reason in
``degraded_reasons``, the runs store has the same, and a warning is logged. A step that fails (an
error, the LLM budget, a refused key) marks the flow ``failed`` / ``budget_exceeded`` /
``auth_failed``; the steps after it are ``skipped`` and the outcomes step closes the run with that
status. Ctrl-C leaves the flow and its run ``interrupted``.

**Persistence and resuming**: crewAI's ``@persist`` saves the state after every step in
``<home>/flows.db`` (:class:`HomeFlowPersistence`, crewAI's ``SQLiteFlowPersistence``).
:func:`load_state` reads a flow's latest state by its id; ``kickoff(inputs={"id": flow_id})``
resumes it (crewAI restores the state): the steps that finished keep their answers (their tool
results are read back from the runs store), the others run; a finished flow kicked off again
returns its state as it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crewai.flow.flow import Flow, listen, start
from crewai.flow.persistence import FlowPersistence, SQLiteFlowPersistence, persist
from pydantic import BaseModel, PrivateAttr

from quantcrew.config.settings import Settings, apply_crewai_environment, get_settings
from quantcrew.crew.base import QuantCrew, degraded_notes
from quantcrew.crew.budget import BudgetExceeded, RunBudget
from quantcrew.crew.decision import RiskLimits
from quantcrew.crew.flow_state import FAILED_STATUSES, DailyState, StepName, StepRecord, StepStatus
from quantcrew.crew.kickoff import check_server, settle_known_outcomes
from quantcrew.crew.outcomes import outcome_wire
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.views import RegimeView, RiskView, StrategyView
from quantcrew.tools.base import ToolResult
from quantcrew.tools.client import MLClient, make_client

__all__ = ["FLOWS_DB", "DailyFlow", "HomeFlowPersistence", "flows_db", "load_state"]

logger = logging.getLogger(__name__)

FLOWS_DB = "flows.db"
"""The flows' SQLite file, in the quantcrew home."""


def flows_db(settings: Settings) -> Path:
    """Where the daily flows' states are kept: ``<home>/flows.db``."""
    return settings.home / FLOWS_DB


class HomeFlowPersistence(FlowPersistence):
    """crewAI's ``SQLiteFlowPersistence`` in ``<home>/flows.db``, opened on first use.

    ``home`` None: the process settings' home, looked up when first used (the class decorator of
    :class:`DailyFlow` runs at import, before any settings exist, and must not create a file).
    """

    persistence_type: str = "HomeFlowPersistence"
    home: str | None = None
    _sqlite: SQLiteFlowPersistence | None = PrivateAttr(default=None)

    @property
    def sqlite(self) -> SQLiteFlowPersistence:
        """The SQLite store (its file and folder are created now if need be)."""
        if self._sqlite is None:
            home = Path(self.home) if self.home is not None else get_settings().home
            home.mkdir(parents=True, exist_ok=True)
            self._sqlite = SQLiteFlowPersistence(str(home / FLOWS_DB))
        return self._sqlite

    def init_db(self) -> None:
        """Create the file and its tables."""
        _ = self.sqlite

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any] | BaseModel) -> None:
        """Append the state after ``method_name``."""
        self.sqlite.save_state(flow_uuid, method_name, state_data)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        """The flow's latest state, or None."""
        return self.sqlite.load_state(flow_uuid)

    def save_pending_feedback(self, flow_uuid: str, context: Any, state_data: dict[str, Any] | BaseModel) -> None:
        """As ``SQLiteFlowPersistence`` (the daily flow asks for no human feedback)."""
        self.sqlite.save_pending_feedback(flow_uuid, context, state_data)

    def load_pending_feedback(self, flow_uuid: str) -> tuple[dict[str, Any], Any] | None:
        """As ``SQLiteFlowPersistence``."""
        return self.sqlite.load_pending_feedback(flow_uuid)

    def clear_pending_feedback(self, flow_uuid: str) -> None:
        """As ``SQLiteFlowPersistence``."""
        self.sqlite.clear_pending_feedback(flow_uuid)


def load_state(settings: Settings, flow_id: str) -> DailyState | None:
    """The latest persisted state of the flow ``flow_id`` in ``<home>/flows.db``, or None."""
    if not flows_db(settings).exists():
        return None
    stored = HomeFlowPersistence(home=str(settings.home)).load_state(flow_id)
    return DailyState.model_validate(stored) if stored is not None else None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _stored_results(store: RunsStore, run_id: str) -> list[ToolResult]:
    """The tool results a run recorded (a resumed flow's earlier steps)."""
    run = store.get_run(run_id)
    if run is None:
        return []
    return [ToolResult(tool=c["tool"], ok=c["ok"], degraded=c["degraded"], degraded_reason=c.get("degraded_reason"),
                       gated=c["gated"], gated_reason=c.get("gated_reason"), summary=c.get("summary") or "",
                       arguments=c["arguments"], data=c["data"], elapsed_ms=c.get("elapsed_ms") or 0.0)
            for c in run["tool_calls"]]


@persist(HomeFlowPersistence())
class DailyFlow(Flow[DailyState]):
    """The daily pipeline; see the module docstring. ``kickoff`` returns the final :class:`DailyState`.

    Args:
        settings: The settings tree (default: the process's).
        server_url: The ML server; wins over ``settings.client.url``.
        client: An ML client to share instead of one made from the settings (not closed here).
        llm: A CrewAI LLM instead of the one ``crew.llm`` names (default: the offline planner).
        limits: Risk limits of the decision; default ``settings.limits``.
        budget: LLM-call and wall-time limits of one kickoff; default from ``settings.crew``.
        persistence: Where the state goes; default :class:`HomeFlowPersistence` in the settings' home.
        **kwargs: Other ``Flow`` fields.
    """

    _skip_auto_memory: bool = PrivateAttr(default=True)  # crewAI's own flows skip it too: no memory store
    _settings: Settings = PrivateAttr()
    _client: MLClient | None = PrivateAttr(default=None)
    _owned: MLClient | None = PrivateAttr(default=None)
    _llm: Any = PrivateAttr(default=None)
    _limits: RiskLimits | None = PrivateAttr(default=None)
    _budget: RunBudget = PrivateAttr()
    _budget_given: bool = PrivateAttr(default=False)
    _crew: QuantCrew | None = PrivateAttr(default=None)
    _store: RunsStore | None = PrivateAttr(default=None)
    _began: bool = PrivateAttr(default=False)
    _counted: bool = PrivateAttr(default=False)
    _started: float = PrivateAttr(default=0.0)

    def __init__(self, settings: Settings | None = None, *, server_url: str | None = None,
                 client: MLClient | None = None, llm: Any = None, limits: RiskLimits | None = None,
                 budget: RunBudget | None = None, persistence: FlowPersistence | None = None,
                 **kwargs: Any) -> None:
        settings = settings if settings is not None else get_settings()
        if server_url is not None:
            settings = settings.model_copy(deep=True)
            settings.client.url = server_url
        apply_crewai_environment(settings)  # before crewAI's Flow reads its tracing switch
        kwargs.setdefault("suppress_flow_events", not settings.crew.verbose)  # no console panels unless verbose
        super().__init__(persistence=persistence or HomeFlowPersistence(home=str(settings.home)), **kwargs)
        self._settings = settings
        self._client = client
        self._llm = llm
        self._limits = limits
        self._budget_given = budget is not None
        self._budget = budget or self._new_budget()

    async def kickoff_async(self, *args: Any, **kwargs: Any) -> Any:
        """crewAI's kickoff (``kickoff`` calls it), held to the LLM budget; the ML client made here is closed
        at the end."""
        self._began = self._counted = False
        if not self._budget_given:
            self._budget = self._new_budget()
        try:
            with self._budget.enforce():
                return await super().kickoff_async(*args, **kwargs)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self._interrupted()
            raise
        finally:
            self._close()

    def _daily(self) -> DailyState:
        """The state (crewAI types it loosely)."""
        state: DailyState = self.state
        return state

    # -- the steps ---------------------------------------------------------------------------------

    @start()
    def regime(self) -> StepStatus:
        """Each symbol's regime."""
        return self._step("regime", lambda crew: self._task(crew, "market_regimes", RegimeView))

    @listen(regime)
    def risk(self, _previous: Any) -> StepStatus:
        """The portfolio's VaR and anomalies."""
        return self._step("risk", lambda crew: self._task(crew, "portfolio_risk", RiskView))

    @listen(risk)
    def strategy(self, _previous: Any) -> StepStatus:
        """The ensemble's and the policies' signals, with the execution plan."""
        return self._step("strategy", lambda crew: self._task(crew, "strategy_review", StrategyView))

    @listen(strategy)
    def decision(self, _previous: Any) -> StepStatus:
        """Settle what is due (the bandit learns), then decide."""
        return self._step("decision", self._decide)

    @listen(decision)
    def outcomes(self, _previous: Any) -> DailyState:
        """Store the decision for settling, list its outcome ids, close the run with the flow's status."""
        state = self._daily()
        if not self._began and state.last("outcomes") is not None:
            return state  # a finished flow kicked off again: nothing ran, nothing to close
        started, t0 = _now(), time.perf_counter()
        error: str | None = None
        try:
            self._close_run()
        except Exception as exc:  # the run record could not be closed: say so, never a silent success
            error = f"outcomes: {type(exc).__name__}: {exc}"
            state.error = state.error or error
            if state.status not in FAILED_STATUSES:
                state.status = "failed"
        status: StepStatus = "failed" if error else "degraded" if state.status == "degraded" else "done"
        state.steps.append(StepRecord(step="outcomes", status=status, started_at=started,
                                      duration_s=time.perf_counter() - t0, error=error))
        if state.status == "degraded":
            logger.warning("daily flow %s finished DEGRADED: %s", state.id, "; ".join(state.degraded_reasons))
        elif state.status != "succeeded":
            logger.error("daily flow %s %s: %s", state.id, state.status.upper(), state.error)
        return state

    # -- one step ----------------------------------------------------------------------------------

    def _step(self, name: StepName, work: Callable[[QuantCrew], list[str]]) -> StepStatus:
        """Run ``work(crew)`` as step ``name`` unless it finished in an earlier kickoff or an earlier step failed;
        record how it went."""
        state = self._daily()
        if state.completed(name):
            return "done"
        if state.status in FAILED_STATUSES and self._began:
            state.steps.append(StepRecord(step=name, status="skipped"))
            return "skipped"
        started, t0 = _now(), time.perf_counter()
        status: StepStatus = "done"
        notes: list[str] = []
        error: str | None = None
        crew: QuantCrew | None = None
        before = 0
        try:
            crew = self._begin()
            before = len(crew.results)
            if state.status not in FAILED_STATUSES:
                notes = work(crew)
                status = "degraded" if notes else "done"
        except BudgetExceeded as exc:
            status, error = "failed", str(exc)
            state.status = "budget_exceeded"
        except Exception as exc:  # a step's failure of any kind is recorded, and stops the steps after it
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            state.status = "failed"
        if state.status in FAILED_STATUSES and error is None:  # _begin refused to start (the key was refused)
            status, error = "failed", state.error
        if error is not None:
            state.error = f"{name}: {error}"
        calls = len(crew.results) - before if crew is not None else 0
        state.steps.append(StepRecord(step=name, status=status, started_at=started, duration_s=time.perf_counter() - t0,
                                      tool_calls=calls, notes=notes, error=error))
        self._degrade(notes)
        return status

    def _task(self, crew: QuantCrew, task: str, view: type[BaseModel]) -> list[str]:
        """Kick off one task of the crew; its view goes into the state; its degraded notes are returned."""
        before = len(crew.results)
        crew.task_crew(task).kickoff(inputs=crew.inputs)
        built = crew.view(view)
        if isinstance(built, RegimeView):
            self._daily().regime = built
        elif isinstance(built, RiskView):
            self._daily().risk = built
        elif isinstance(built, StrategyView):
            self._daily().strategy = built
        return degraded_notes(crew.results[before:])

    def _decide(self, crew: QuantCrew) -> list[str]:
        state = self._daily()
        settled, notes = settle_known_outcomes(self._runs(), self._settings, self._ml_client(), state.as_of)
        if settled is not None:
            state.settled = settled.model_dump(mode="json", exclude={"outcomes"})
            state.settled_outcome_ids = [outcome_wire(row)["outcome_id"] for row in settled.outcomes]
        before = len(crew.results)
        crew.task_crew("portfolio_decision").kickoff(inputs=crew.inputs)
        state.decision = crew.ensure_decision()
        if state.decision is None:
            raise RuntimeError("the decision pipeline gave no decision")
        return list(dict.fromkeys(notes + degraded_notes(crew.results[before:])))

    # -- the run around the steps ------------------------------------------------------------------

    def _begin(self) -> QuantCrew:
        """Once per kickoff, before the first step that runs: the crew, the run of the runs store (a new one, or
        the resumed flow's with its recorded tool results), the server's answer to one cheap question."""
        if self._crew is not None and self._began:
            return self._crew
        state = self._daily()
        first = not self._began
        self._began = True
        self._started = time.perf_counter()
        if first and state.status in FAILED_STATUSES:  # a resumed flow: its failed step runs again
            state.status, state.error = "running", None
        state.status = "running" if state.status == "pending" else state.status
        client = self._ml_client()
        store = self._runs()
        crew = QuantCrew(self._settings, client=client, llm=self._llm, limits=self._limits,
                         on_tool_result=self._record)
        crew.prepare(state.crew_inputs())
        if state.run_id is not None:
            crew.seed(_stored_results(store, state.run_id))
        else:
            state.run_id = store.start_run(kind="flow", inputs={**crew.inputs, "flow_id": state.id},
                                           llm=str(getattr(crew.llm, "model", type(crew.llm).__name__)),
                                           server_url=self._settings.client.url, budget=self._budget.describe())
        self._crew = crew
        refused, notes = check_server(client, self._settings.client.url)
        if refused is not None:
            state.status, state.error = "auth_failed", refused
        self._degrade(notes)
        return crew

    def _record(self, result: ToolResult) -> None:
        run_id = self._daily().run_id
        if run_id is not None:
            self._runs().record_tool_call(run_id, result)

    def _degrade(self, notes: list[str]) -> None:
        state = self._daily()
        if notes:
            state.degraded = True
            state.degraded_reasons = list(dict.fromkeys(state.degraded_reasons + notes))

    def _close_run(self) -> None:
        """The flow's final status, its decision's outcome ids, and the run closed with both."""
        state = self._daily()
        crew = self._crew
        results = crew.results if crew is not None else []
        unauthorized = [r for r in results if r.failure == "unauthorized"]
        if unauthorized and state.status not in FAILED_STATUSES:
            state.status, state.error = "auth_failed", f"the ML server refused the API key: {unauthorized[0].summary}"
        if state.status not in FAILED_STATUSES:
            if state.decision is None:
                state.status, state.error = "failed", state.error or "the flow ended without a decision"
            elif state.decision.degraded:
                self._degrade(list(state.decision.degraded_inputs))  # named as the steps named them: no repeats
        if state.status not in FAILED_STATUSES:
            state.status = "degraded" if state.degraded else "succeeded"
        if state.decision is not None and state.run_id is not None:
            # the ids the monitor will know this decision's outcomes by (quantcrew.crew.outcomes.outcome_wire)
            state.outcome_ids = [f"{d.decision_id or state.run_id}:{d.symbol}" for d in state.decision.decisions]
        self._count()
        if state.run_id is None:
            return
        self._runs().finish_run(
            state.run_id, status=state.status, output=state.summary(), error=state.error,
            decision=state.decision.model_dump(mode="json") if state.decision is not None else None,
            degraded=state.degraded, gated=any(r.gated for r in results), llm_calls=state.llm_calls,
            duration_s=state.duration_s, settled=state.settled, notes=state.degraded_reasons)

    def _count(self) -> None:
        """Add this kickoff's LLM calls and wall time to the flow's (once per kickoff)."""
        if self._began and not self._counted:
            self._counted = True
            state = self._daily()
            state.llm_calls += self._budget.llm_calls
            state.duration_s += time.perf_counter() - self._started

    def _interrupted(self) -> None:
        """Ctrl-C: the flow and its run say ``interrupted`` (resuming the flow runs what was left), never
        ``running`` for ever. Best effort: an error here must not hide the interruption."""
        state = self._daily()
        try:
            state.status, state.error = "interrupted", "interrupted by the user"
            self._count()
            if state.run_id is not None:
                self._runs().finish_run(state.run_id, status="interrupted", error=state.error,
                                        llm_calls=state.llm_calls, duration_s=state.duration_s,
                                        notes=state.degraded_reasons)
            if self.persistence is not None:
                self.persistence.save_state(state.id, "interrupted", state)
        except Exception:  # noqa: BLE001 - logged; the interruption goes on
            logger.exception("daily flow %s: could not record the interruption", state.id)

    def _ml_client(self) -> MLClient | None:
        if self._client is None and self._owned is None and self._settings.client.url is not None:
            self._owned = make_client(self._settings.client)  # one client (one pool, one breaker) for every step
        return self._client if self._client is not None else self._owned

    def _runs(self) -> RunsStore:
        if self._store is None:
            self._store = RunsStore(self._settings.runs_db)
        return self._store

    def _new_budget(self) -> RunBudget:
        return RunBudget(self._settings.crew.max_llm_calls, self._settings.crew.max_seconds)

    def _close(self) -> None:
        crew, self._crew = self._crew, None
        if crew is not None:
            crew.close()
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()
        store, self._store = self._store, None
        if store is not None:
            store.close()
