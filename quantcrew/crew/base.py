"""``QuantCrew``: the full crew as a crewAI project class (``@CrewBase``), for ``kickoff()`` scripts and
``crewai``-style projects.

    from quantcrew.crew import QuantCrew

    output = QuantCrew(server_url="http://127.0.0.1:8765").crew().kickoff(inputs={"symbols": "SP500,NASDAQ"})
    output.pydantic          # the Decision: one target position per symbol

It is the crew ``quantcrew run`` kicks off, built the crewAI way: the agents and tasks come from
the same ``config/agents.yaml`` and ``config/tasks.yaml`` (crewAI loads them into
``agents_config`` / ``tasks_config``), each ``@agent`` is made by the same factory
(:mod:`quantcrew.agents.factories`) with the same tools, each ``@task`` has the same
``output_pydantic`` view, and the LLM is the same (the offline planner unless ``crew.llm`` names
another). So the same inputs on the same server give the same decision as :func:`quantcrew.crew.run`.

What ``run`` adds around a crew stays there: the runs store, the LLM budget, settling earlier
decisions' outcomes. The daily :class:`~quantcrew.crew.daily_flow.DailyFlow` adds them to this class.

Notes on crewAI's ``@CrewBase``:

- It collects ``@task`` / ``@agent`` / ``@before_kickoff`` / ``@after_kickoff`` methods from the
  class's own namespace only, so a subclass (``class MyDesk(QuantCrew)``) would lose them. Hence
  :meth:`crew` names its four tasks itself and attaches :meth:`prepare` and :meth:`finish` itself;
  a subclass's own decorated tasks and hooks are added after them.
- It memoizes what ``@agent`` / ``@task`` / ``@crew`` return in a process-wide cache keyed by the
  instance's ``id()``. Every tool of the crew holds :meth:`_keep` (bound to the instance), so a
  cached agent keeps its instance alive and no later instance can reuse its ``id()`` (the cache
  holds every instance for the life of the process, as it does for any ``@CrewBase`` class; a
  client made here is closed after the kickoff). One instance is one run: a second kickoff is
  refused; make a new instance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from crewai import Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task
from pydantic import BaseModel

from quantcrew.agents.factories import (
    AGENT_FACTORIES,
    make_meta_orchestrator,
    make_regime_analyst,
    make_risk_manager,
    make_strategy_agent,
)
from quantcrew.config.paths import AGENTS_YAML, TASKS_YAML
from quantcrew.config.settings import Settings, apply_crewai_environment, get_settings
from quantcrew.crew.converter import view_converter
from quantcrew.crew.crew import CREWS, PROCESSES, make_llm, required_inputs
from quantcrew.crew.decision import Decision, RiskLimits
from quantcrew.crew.kickoff import make_tools, normalise_inputs, unanswered, view_builder
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools.base import ToolResult
from quantcrew.tools.client import MLClient, make_client

__all__ = ["TASKS", "QuantCrew", "degraded_notes"]

SPEC = CREWS["full"]
TASKS: tuple[str, ...] = SPEC.tasks
"""The crew's tasks, in order (keys of config/tasks.yaml): regimes, risk, strategy, decision."""


def degraded_notes(results: Sequence[ToolResult]) -> list[str]:
    """Why these tool results are degraded: each fallback's reason (``tool[symbol]: reason``, as a decision names
    its degraded inputs), then each call the crew went without. The decision tool is degraded only by its
    inputs, named already."""
    notes = [f"{r.tool}[{r.arguments.get('symbol') or r.arguments.get('symbols') or ''}]: "
             f"{r.degraded_reason or 'a fallback answered'}" for r in results
             if r.degraded and r.tool != "portfolio_decision"]
    return list(dict.fromkeys(notes + unanswered(list(results))))


@CrewBase
class QuantCrew:
    """The regime analyst, risk manager, strategy agent and meta-orchestrator; one decision per symbol.

    Args:
        settings: The settings tree (default: the process's, from the environment).
        server_url: The ML server; wins over ``settings.client.url``. With neither (and no
            ``client``) the tools answer from their fallback rules and say so (degraded).
        client: An ML client to share instead of one made from the settings (not closed here).
        llm: A CrewAI LLM instead of the one ``crew.llm`` names (default: the offline planner).
        symbols: Default ``symbols`` input (comma-separated or a list); kickoff inputs win.
        process: ``sequential`` (default ``crew.process``) or ``hierarchical`` (the
            meta-orchestrator manages and delegates each task to the agent the YAML names).
        limits: Risk limits of the decision; default ``settings.limits``.
        on_tool_result: Called with each tool's structured result as it arrives.
    """

    agents_config = str(AGENTS_YAML)  # absolute: crewAI joins it to the class's folder, which keeps it as is
    tasks_config = str(TASKS_YAML)
    agents: list[BaseAgent]
    tasks: list[Task]

    def __init__(self, settings: Settings | None = None, *, server_url: str | None = None,
                 client: MLClient | None = None, llm: Any = None, symbols: str | Sequence[str] | None = None,
                 process: str | None = None, limits: RiskLimits | None = None,
                 on_tool_result: Callable[[ToolResult], None] | None = None) -> None:
        settings = settings if settings is not None else get_settings()
        if server_url is not None:
            settings = settings.model_copy(deep=True)
            settings.client.url = server_url
        process = process or settings.crew.process
        if process not in PROCESSES:
            raise ValueError(f"process must be one of {list(PROCESSES)}, got {process!r}")
        apply_crewai_environment(settings)
        self.settings = settings
        self.process = process
        self.symbols = ",".join(symbols) if symbols is not None and not isinstance(symbols, str) else symbols
        self.limits = limits or RiskLimits.model_validate(settings.limits.model_dump())
        self.results: list[ToolResult] = []
        """Every tool's structured result of this run, in order."""
        self.inputs: dict[str, Any] = {}
        """The kickoff inputs after :meth:`prepare` (the crew's defaults filled in)."""
        self._on_tool_result = on_tool_result
        self._owned: MLClient | None = None
        if client is None and settings.client.url is not None:
            # one client (one connection pool, one breaker) for every tool of the crew
            client = self._owned = make_client(settings.client)
        self.client = client
        self._kicked_off = False
        self._tools, self._decision_tool = make_tools(SPEC, settings, client, self._keep, self.results, self.limits)
        self._symbols: list[str] = []  # filled by prepare(); the view builder reads this very list
        self._structurer = view_builder(self.results, self.ensure_decision, self._symbols)
        tool_plan = dict(SPEC.tool_plan)
        if process == "hierarchical":
            # the delegated meta-orchestrator worker gets a task without a name: plan by its role
            tool_plan[SPEC.delegation()["portfolio_decision"]] = ["portfolio_decision"]
        self.llm: Any = llm if llm is not None else make_llm(settings, {}, tool_plan=tool_plan,
                                                            structurer=self._structurer,
                                                            delegation=SPEC.delegation())

    # -- the crewAI project: agents, tasks, crew ---------------------------------------------------

    @agent
    def regime_analyst(self) -> BaseAgent:
        """The regime analyst with the regime tool."""
        return make_regime_analyst(self.settings, tools=self._tools["regime_analyst"], llm=self.llm)

    @agent
    def risk_manager(self) -> BaseAgent:
        """The risk manager with the risk and anomaly tools."""
        return make_risk_manager(self.settings, tools=self._tools["risk_manager"], llm=self.llm)

    @agent
    def strategy_agent(self) -> BaseAgent:
        """The strategy agent with the ensemble, policy, execution and explanation tools."""
        return make_strategy_agent(self.settings, tools=self._tools["strategy_agent"], llm=self.llm)

    @agent
    def meta_orchestrator(self) -> BaseAgent:
        """The meta-orchestrator with the agent-selection tool and the decision pipeline."""
        return make_meta_orchestrator(self.settings, tools=self._tools["meta_orchestrator"], llm=self.llm)

    @task
    def market_regimes(self) -> Task:
        """Each symbol's regime (a RegimeView)."""
        return self._yaml_task("market_regimes")

    @task
    def portfolio_risk(self) -> Task:
        """The portfolio's VaR and anomalies (a RiskView)."""
        return self._yaml_task("portfolio_risk")

    @task
    def strategy_review(self) -> Task:
        """The ensemble's and the policies' signals with the execution plan (a StrategyView)."""
        return self._yaml_task("strategy_review")

    @task
    def portfolio_decision(self) -> Task:
        """The decision pipeline's Decision."""
        return self._yaml_task("portfolio_decision")

    @crew
    def crew(self) -> Crew:
        """The four tasks in order, sequential or managed by the meta-orchestrator; the inputs are
        completed before kickoff (:meth:`prepare`) and the pipeline's decision is made sure of after it
        (:meth:`finish`)."""
        ours = [self.task_for(key) for key in TASKS]
        tasks = ours + [t for t in getattr(self, "tasks", []) if all(t is not o for o in ours)]
        agents = self._agents_of(tasks)
        if self.process == "hierarchical":
            manager = AGENT_FACTORIES["meta_orchestrator"](self.settings, tools=[], llm=self.llm)
            manager.allow_delegation = True
            built = Crew(agents=agents, tasks=tasks, process=Process.hierarchical, manager_agent=manager,
                         verbose=self.settings.crew.verbose, memory=False)
        else:
            built = Crew(agents=agents, tasks=tasks, process=Process.sequential, verbose=self.settings.crew.verbose,
                         memory=False)
        # appended as crewAI appends its decorated hooks (given to the constructor, bound methods draw a warning)
        built.before_kickoff_callbacks.append(self.prepare)
        built.after_kickoff_callbacks.append(self.finish)
        return built

    def task_crew(self, key: str) -> Crew:
        """A crew of one task of :data:`TASKS` and its agent (the daily flow runs one per step).

        Call :meth:`prepare` with the inputs first; kick it off with :attr:`inputs`.
        """
        if key not in TASKS:
            raise KeyError(f"no task {key!r} in the crew; its tasks: {list(TASKS)}")
        one = self.task_for(key)
        return Crew(agents=self._agents_of([one]), tasks=[one], process=Process.sequential,
                    verbose=self.settings.crew.verbose, memory=False)

    def task_for(self, key: str) -> Task:
        """The (memoized) task ``key``, built by its ``@task`` method."""
        built: Task = getattr(self, key)()
        return built

    # -- kickoff hooks ---------------------------------------------------------------------------

    def prepare(self, inputs: dict[str, Any] | None) -> dict[str, Any]:
        """Complete the kickoff inputs with the crew's defaults and hand them to the planner.

        ``symbols`` defaults to the constructor's, ``weights`` to equal weights; ``symbol`` is the
        first symbol. Run by the crew before kickoff.

        Raises:
            ValueError: an input the tasks need is missing.
            RuntimeError: this instance has run already (one instance is one run).
        """
        if self._kicked_off:
            raise RuntimeError("this QuantCrew has run already: its tool results and decision belong to that run; "
                               "make a new QuantCrew for the next kickoff")
        given = dict(inputs or {})
        if self.symbols and not given.get("symbols") and not given.get("symbol"):
            given["symbols"] = self.symbols
        full = normalise_inputs("full", given)
        missing = required_inputs(*TASKS) - set(full)
        if missing:
            raise ValueError(f"missing kickoff inputs: {sorted(missing)}")
        self._kicked_off = True
        self.inputs = full
        self._symbols[:] = [s.strip() for s in str(full.get("symbols", "")).split(",") if s.strip()]
        if isinstance(self.llm, PlannerLLM):
            self.llm.inputs = dict(full)  # the planner fills each tool's arguments from these
        return full

    def finish(self, output: Any) -> Any:
        """After kickoff: the pipeline's decision is made (if the LLM never called its tool) and is the
        crew's structured output whatever an LLM wrote; a client made here is closed."""
        decision = self.ensure_decision()
        if decision is not None and isinstance(getattr(output, "pydantic", None), Decision) \
                and output.pydantic != decision:
            output.pydantic = decision
        self.close()
        return output

    def ensure_decision(self) -> Decision | None:
        """The pipeline's decision, run now on the tool results so far if nobody called its tool."""
        if self._decision_tool is None or not self.inputs:
            return None
        if self._decision_tool.decision is None:
            self._decision_tool.run(symbols=self.inputs["symbols"], drawdown=float(self.inputs.get("drawdown", 0.0)),
                                    lookback=int(self.inputs.get("lookback", 750)),
                                    end_date=self.inputs.get("end_date"))
        decision: Decision | None = self._decision_tool.decision
        return decision

    # -- what the run found ------------------------------------------------------------------------

    @property
    def decision(self) -> Decision | None:
        """The decision of the run (None before the decision task or :meth:`ensure_decision`)."""
        decision: Decision | None = self._decision_tool.decision if self._decision_tool is not None else None
        return decision

    @property
    def degraded_notes(self) -> list[str]:
        """Why the run is degraded: each model that could not answer, each tool call the crew went without."""
        return degraded_notes(self.results)

    @property
    def degraded(self) -> bool:
        """True when a model the crew asked for could not answer (see :mod:`quantcrew.crew.decision`)."""
        return bool(self.degraded_notes)

    def view(self, model: type[BaseModel]) -> BaseModel | None:
        """A task's view (RegimeView, RiskView, StrategyView or Decision) built from the tool results."""
        return self._structurer(model)

    def seed(self, results: Sequence[ToolResult]) -> None:
        """Take tool results of the same run made earlier (a resumed flow): views and the decision read them."""
        self.results.extend(results)

    def close(self) -> None:
        """Close the ML client made here (a client passed in is the caller's)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    # -- internals -------------------------------------------------------------------------------

    def _keep(self, result: ToolResult) -> None:
        self.results.append(result)
        if self._on_tool_result is not None:
            self._on_tool_result(result)

    def _yaml_task(self, key: str) -> Task:
        """The task as config/tasks.yaml says (its agent already resolved by crewAI), with its view."""
        has_view = key in SPEC.outputs
        config = dict(cast(dict[str, dict[str, Any]], self.tasks_config)[key])  # crewAI loaded the YAML into it
        return Task(name=key, description=config["description"], expected_output=config["expected_output"],
                    agent=config["agent"], output_pydantic=SPEC.outputs.get(key),
                    converter_cls=view_converter(self._structurer) if has_view else None)

    @staticmethod
    def _agents_of(tasks: Sequence[Task]) -> list[BaseAgent]:
        found: list[BaseAgent] = []
        for t in tasks:
            if t.agent is not None and all(t.agent is not a for a in found):
                found.append(t.agent)
        return found
