"""StrategySignalTool: what the specialised RL policies would do on a symbol now (ML server's rl family).

Each of the four agents (conservative, aggressive, balanced, contrarian) is a policy trained
on the server with its own reward. The tool asks, for the bars' symbol, the policy of each
selected agent deployed for that symbol (the one that passed its quality gate) for its action
at the last bar, and sums them up as a consensus. Transparent numpy rules
(:func:`quantcrew.tools.fallbacks.strategy_fallback`) answer instead in two cases, told apart:

* gated: the agent's policies for the symbol were judged and rejected by their gate; its rule
  answers by design (``gated: true``, the failed gate named). Not degraded.
* degraded: the agent has no trained policy for the symbol, or the server is down; the rule
  answers because the model asked for could not (``degraded: true``, and the command to fix it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.data.errors import DataError
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.schemas.rl import (
    ACTION_LABELS,
    RL_AGENTS,
    RL_ALGORITHMS,
    GatedPolicy,
    RLActRequest,
    RLActResponse,
)
from quantcrew.tools.arguments import ToolInputError, iso_date, parse_names
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import RL_ACT
from quantcrew.tools.errors import NotFound
from quantcrew.tools.fallbacks import strategy_fallback

__all__ = ["MIN_BARS", "StrategySignalInput", "StrategySignalTool", "consensus"]

MIN_BARS = 62  # the policies' features need a 60-bar window, plus the bar acted on and one return
_FLAT_BAND = 0.1  # a continuous target within +/- this is read as flat when labelling it
_SYMBOL_MAX = 64  # the wire's limit on a symbol name
# the rule that answers for each agent, in short (quantcrew.tools.rules describes each in full)
_RULE_NAMES: dict[str, str] = {
    "aggressive": "momentum rule",
    "balanced": "volatility-scaled momentum rule",
    "conservative": "volatility-filtered momentum rule",
    "contrarian": "mean-reversion rule",
}


def _train_hint(symbol: str) -> str:
    return f"run `quantcrew setup --symbols {symbol}`"


class StrategySignalInput(BaseModel):
    """What an agent says to ask the strategy policies for their signals."""

    symbol: str = Field(
        default="SP500",
        description="Market to trade: a bundled series (SP500, NASDAQ, VIX, CRUDE), a symbol with a CSV/Parquet "
                    "file in the data folder, or a file path.",
    )
    lookback: int = Field(
        default=300, ge=MIN_BARS, le=20_000,
        description=f"Number of most recent daily bars the policies see (at least {MIN_BARS}: their features "
                    "use a 60-bar window).",
    )
    end_date: str | None = Field(
        default=None, description="Signals as of this date (YYYY-MM-DD); empty means the latest bar.",
    )
    agents: str | list[str] = Field(
        default="all",
        description="'all', or comma-separated agents among conservative, aggressive, balanced, contrarian.",
    )
    algorithm: str | None = Field(
        default=None,
        description="Only policies trained with this algorithm: ppo, a2c or dqn; empty means each agent's "
                    "newest policy.",
    )
    position: float = Field(
        default=0.0, ge=-1.0, le=1.0,
        description="The position held now, from -1 (fully short) to 1 (fully long); 0 means flat.",
    )

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


@dataclass(frozen=True)
class _Prepared:
    bars: OHLCV
    agents: list[str]
    request: RLActRequest


@dataclass
class _Acted:
    """What the server said: the reply for the agents it has policies for, and those it has none for."""

    reply: RLActResponse | None
    missing: list[str] = field(default_factory=list)
    not_found: str | None = None  # the server's sentence when it named no agent


class StrategySignalTool(QuantTool):
    """Signals of the specialised RL trading policies on one symbol, with their consensus."""

    name: str = "strategy_signals"
    description: str = (
        "Ask the specialised trading policies trained on the ML server (conservative, aggressive, balanced, "
        "contrarian; PPO, A2C or DQN) what each would do on a symbol now, from bars up to the last one only. "
        "Returns each agent's action (short, flat or long) and target position with its probabilities or "
        "Q-values, the market regime the policies see, a consensus (mean target position and majority action), "
        "and the provenance (model ids, data hash, as-of date). An agent whose policy failed its quality gate is "
        "answered by its momentum / mean-reversion rule, marked gated (by design, not degraded); agents without "
        "a trained policy, or all of them when the server is down, get the rules too, marked degraded."
    )
    args_schema: type[BaseModel] = StrategySignalInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        agents = parse_agents(arguments.get("agents"))
        algorithm = _parse_algorithm(arguments.get("algorithm"))
        position = float(arguments.get("position") or 0.0)
        if not -1.0 <= position <= 1.0:
            raise ToolInputError(f"position must lie in [-1, 1] (-1 fully short, 1 fully long), got {position}")
        lookback = int(arguments.get("lookback") or 300)
        if lookback < MIN_BARS:
            raise ToolInputError(f"lookback must be at least {MIN_BARS} bars (the policies use 60-bar features)")
        data = self._settings().data
        bars = load_symbol(str(arguments.get("symbol") or "SP500"), data_dir=data.data_dir,
                           max_gap_days=data.max_gap_days)
        if arguments.get("end_date"):
            bars = bars.between(None, arguments["end_date"])
        bars = bars.tail(lookback) if len(bars) else bars
        if len(bars) < MIN_BARS:
            raise DataError(bars.symbol, f"only {len(bars)} bars up to the end date; the policies need {MIN_BARS}")
        symbol = bars.symbol.strip() if 0 < len(bars.symbol.strip()) <= _SYMBOL_MAX else None
        request = RLActRequest.model_validate({"data": to_payload_dict(bars), "agents": agents, "symbol": symbol,
                                               "algorithm": algorithm, "position": position})
        return _Prepared(bars, agents, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[_Acted]:
        acted = _Acted(None)
        request: RLActRequest | None = prepared.request
        while request is not None:
            try:
                acted.reply = yield from call(RL_ACT, request)
                return acted
            except NotFound as exc:  # ask again without the agent that has no policy
                request = _without_missing(request, exc, acted)
        return acted

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: _Acted) -> ToolResult:
        if reply.reply is None:
            return self._fallback(arguments, prepared, _missing_reason(reply, prepared.bars.symbol))
        server = reply.reply
        signals: list[dict[str, Any]] = [_server_signal(a.model_dump(mode="json")) for a in server.actions]
        gated = {g.agent: g for g in server.gated}
        ruled = list(gated) + reply.missing
        rules: dict[str, Any] | None = None
        if ruled:
            rules = strategy_fallback(prepared.bars, ruled)
            signals += [_gated_signal(s, gated[s["agent"]]) if s["agent"] in gated else s for s in rules["signals"]]
        order = {agent: i for i, agent in enumerate(prepared.agents)}
        signals.sort(key=lambda s: order.get(s["agent"], len(order)))
        as_of = server.as_of.date().isoformat() if server.as_of else "?"
        reason = _missing_reason(reply, prepared.bars.symbol) if reply.missing else None
        gated_reason = "; ".join(_gated_text(g) for g in server.gated) or None
        data: dict[str, Any] = {
            "symbol": prepared.bars.symbol, "as_of": as_of, "position_held": prepared.request.position,
            "regime": server.regime, "regime_probabilities": server.regime_probabilities,
            "regime_source": "the policies' regime model (filtered HMM)" if server.regime else None,
            "signals": signals, "consensus": consensus(signals),
            "provenance": {"method_used": server.method_used, "model_ids": [a.model_id for a in server.actions],
                           "data_hash": server.data_hash, "as_of": as_of, "fallback": server.fallback},
            "missing_policies": reply.missing, "degraded": reply.missing != [], "degraded_reason": reason,
            "gated_policies": [g.model_dump(mode="json") for g in server.gated], "gated": bool(gated),
            "gated_reason": gated_reason,
        }
        if rules is not None:
            data["rules_indicators"] = rules["indicators"]
        regime = (f"regime the policies see: {server.regime.upper()}"
                  + (f" (p={server.regime_probabilities[server.regime]:.2f})"
                     if server.regime_probabilities and server.regime in server.regime_probabilities else "")
                  if server.regime else "the policies observe no regime" if server.actions
                  else "no policy answered, so no regime from them")
        gated_tail = f"gated: true ({gated_reason}). " if gated_reason else ""
        tail = f"degraded: true ({reason}; those agents answered by rules)" if reason else "degraded: false"
        models = ", ".join(data["provenance"]["model_ids"]) or "none answered"
        summary = (
            f"{prepared.bars.symbol} strategy signals as of {as_of}, holding {prepared.request.position:+.2f} "
            f"({regime}): {_signals_text(signals)}. {_consensus_text(data['consensus'])}. "
            f"Provenance: models {models}; data {server.data_hash[:19]}. {gated_tail}{tail}"
        )
        return ToolResult(tool=self.name, ok=True, degraded=bool(reason), degraded_reason=reason,
                          gated=bool(gated), gated_reason=gated_reason, summary=summary, arguments=arguments,
                          data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        rules = strategy_fallback(prepared.bars, prepared.agents)
        signals = rules["signals"]
        data: dict[str, Any] = {
            "symbol": prepared.bars.symbol, "as_of": rules["as_of"], "position_held": prepared.request.position,
            "regime": rules["regime"], "regime_probabilities": None,
            "regime_source": "rule-based estimate (volatility / trend thresholds)",
            "signals": signals, "consensus": consensus(signals),
            "provenance": {"method_used": rules["method_used"], "model_ids": [], "data_hash": None,
                           "as_of": rules["as_of"], "fallback": True},
            "missing_policies": list(prepared.agents), "degraded": True, "degraded_reason": reason,
            "rules_indicators": rules["indicators"],
        }
        summary = (
            f"{prepared.bars.symbol} strategy signals as of {rules['as_of']} from RULES, not the RL policies "
            f"(rule-based regime estimate: {str(rules['regime']).upper()}): {_signals_text(signals)}. "
            f"{_consensus_text(data['consensus'])}. degraded: true ({reason}); treat these as simple "
            "momentum / mean-reversion baselines."
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=data)


def parse_agents(value: str | list[str] | None) -> list[str]:
    """``"all"``, ``"Aggressive, contrarian"`` or a list -> agent names in the canonical order.

    Raises:
        ToolInputError: an unknown name (the valid ones are listed) or a repeated one.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all", "*", "every", "any")):
        return list(RL_AGENTS)
    names = [n.lower() for n in parse_names(value, field="agents", max_items=len(RL_AGENTS))]
    if "all" in names:
        return list(RL_AGENTS)
    unknown = [n for n in names if n not in RL_AGENTS]
    if unknown:
        raise ToolInputError(f"agents: unknown {unknown}; choose 'all' or among {', '.join(RL_AGENTS)}")
    return [a for a in RL_AGENTS if a in names]


def _parse_algorithm(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    if text in ("", "any", "all", "none", "newest", "latest"):
        return None
    if text not in RL_ALGORITHMS:
        raise ToolInputError(f"algorithm: unknown '{value}'; choose ppo, a2c or dqn, or leave it empty")
    return text


def _without_missing(request: RLActRequest, exc: NotFound, acted: _Acted) -> RLActRequest | None:
    """The same request without the agent the server has no policy for; None when none is left."""
    asked = list(request.agents or [])
    agent = exc.details.get("agent") if isinstance(exc.details, dict) else None
    if agent not in asked:  # a 404 that names no agent we asked for: no policy can answer
        acted.missing += asked
        acted.not_found = exc.message
        return None
    acted.missing.append(str(agent))
    rest = [a for a in asked if a != agent]
    return request.model_copy(update={"agents": rest}) if rest else None


def _missing_reason(acted: _Acted, symbol: str) -> str:
    if acted.not_found is not None:
        return f"no trained policy: {acted.not_found}: {_train_hint(symbol)}"
    which = ", ".join(acted.missing)
    return (f"no trained policy for agent{'s' if len(acted.missing) > 1 else ''} {which} on {symbol}: "
            f"{_train_hint(symbol)}")


def _gated_text(g: GatedPolicy) -> str:
    """``"balanced: RL policy rl-... failed its gate (Sharpe ...); volatility-scaled momentum rule answered"``."""
    rule = _RULE_NAMES.get(g.agent, "rule")
    if g.gate is None:
        return f"{g.agent}: RL policy {g.model_id} has no gate verdict (trained before quality gates); {rule} answered"
    if g.gate.passed:
        return f"{g.agent}: RL policy {g.model_id} {g.reason}; {rule} answered"
    why = g.reason.removeprefix("failed its gate: ")
    return f"{g.agent}: RL policy {g.model_id} failed its gate ({why}); {rule} answered"


def _gated_signal(signal: dict[str, Any], g: GatedPolicy) -> dict[str, Any]:
    return {**signal, "gated": True, "gated_model_id": g.model_id,
            "gate": g.gate.summary if g.gate is not None else g.reason}


def _server_signal(action: dict[str, Any]) -> dict[str, Any]:
    target = float(action["target_position"])
    label = action["action_label"]
    if label not in ACTION_LABELS:  # a continuous policy's weight
        label = "long" if target > _FLAT_BAND else "short" if target < -_FLAT_BAND else "flat"
    return {**action, "source": "rl_policy", "action_label": label}


def consensus(signals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean target position and the majority action of ``signals`` (``"split"`` on a tie for most votes)."""
    if not signals:
        return {"mean_target_position": 0.0, "majority": "none", "votes": {}, "n_agents": 0}
    votes = Counter(str(s["action_label"]) for s in signals)
    ranked = votes.most_common()
    majority = ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else "split"
    mean = sum(float(s["target_position"]) for s in signals) / len(signals)
    return {"mean_target_position": mean, "majority": majority, "votes": dict(ranked), "n_agents": len(signals)}


def _signals_text(signals: list[dict[str, Any]]) -> str:
    parts = []
    for s in signals:
        detail = ""
        if s.get("probabilities"):
            detail = ", p " + "/".join(f"{k} {v:.2f}" for k, v in s["probabilities"].items())
        elif s.get("q_values"):
            detail = ", Q " + "/".join(f"{k} {v:.3f}" for k, v in s["q_values"].items())
        elif s.get("action_std") is not None:
            detail = f", sd {s['action_std']:.2f}"
        source = (f"{s['algorithm']} policy {s['model_id']}" if s["source"] == "rl_policy"
                  else f"rule, policy {s['gated_model_id']} gated" if s.get("gated") else "rule")
        parts.append(f"{s['agent']} {s['action_label'].upper()} (target {s['target_position']:+.2f}{detail}; "
                     f"{source})")
    return "; ".join(parts)


def _consensus_text(c: dict[str, Any]) -> str:
    votes = ", ".join(f"{k} {v}" for k, v in c["votes"].items())
    return (f"Consensus of {c['n_agents']}: mean target {c['mean_target_position']:+.2f}, majority "
            f"{c['majority']} ({votes})")
