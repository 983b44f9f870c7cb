"""ExplainSignalTool: why the deployed ensemble says what it says about a symbol.

It asks the ML server's explain family about the ensemble deployed for the symbol, on the
symbol's recent bars: the ``local`` explanation of the latest signal (each engineered feature's
value and what it did to ``p_up - p_down`` against its median), and on request the ``global``
one (which features move the output most over the recent bars, and a depth-3 tree that mimics
the model, with its fidelity on held-out bars). There is no local stand-in for an explanation:
with the server down, no trained ensemble, or a gated one, the tool says it could not explain
and why. That is not a degraded decision input (the signal itself comes from ``ensemble_signal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.schemas.explain import (
    ExplainGlobalRequest,
    ExplainGlobalResponse,
    ExplainLocalRequest,
    ExplainLocalResponse,
)
from quantcrew.tools.arguments import ToolInputError, iso_date
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import EXPLAIN_GLOBAL, EXPLAIN_LOCAL
from quantcrew.tools.ensemble import ENSEMBLE_MIN_BARS, gated_from, load_recent, train_hint
from quantcrew.tools.errors import Conflict, NotFound

__all__ = ["ExplainSignalInput", "ExplainSignalTool"]

SCOPES = ("local", "global", "both")
_TOP = 5  # features named in the summary


class ExplainSignalInput(BaseModel):
    """What an agent says to ask why the ensemble gives its signal."""

    symbol: str = Field(
        default="SP500",
        description="Market: a bundled series (SP500, NASDAQ, VIX, CRUDE), a symbol with a CSV/Parquet file in the "
                    "data folder, or a file path.",
    )
    lookback: int = Field(default=300, ge=ENSEMBLE_MIN_BARS + 20, le=20_000,
                          description="Most recent daily bars sent (the explanation reads the bars with a full "
                                      "window among them).")
    end_date: str | None = Field(default=None, description="Explain the signal as of this date (YYYY-MM-DD); "
                                                           "empty: latest.")
    scope: str = Field(
        default="local",
        description="'local' (why the latest signal: each feature's effect on it), 'global' (which features move "
                    "the model most over the recent bars, and a small tree that mimics it), or 'both'.",
    )

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


@dataclass(frozen=True)
class _Prepared:
    bars: OHLCV
    scope: str
    local: ExplainLocalRequest
    global_: ExplainGlobalRequest


@dataclass(frozen=True)
class _Replies:
    local: ExplainLocalResponse | None
    global_: ExplainGlobalResponse | None


def _signed(v: float) -> str:
    return f"{v:+.3f}"


def _local_text(symbol: str, reply: ExplainLocalResponse) -> str:
    top = reply.features[:_TOP]
    effects = "; ".join(f"{e.name}={e.value:.4g} ({_signed(e.effect)})" for e in top)
    return (f"{symbol} ensemble signal at {reply.row}: {str(reply.label).upper()} with {reply.output} = "
            f"{reply.prediction:+.3f}. What moved it (feature=value, effect on {reply.output} of the value against "
            f"its recent median; positive pushes toward up): {effects}.")


def _global_text(reply: ExplainGlobalResponse) -> str:
    top = ", ".join(f"{f.name} {f.importance:.3f}+-{f.std:.3f}" for f in reply.features[:_TOP])
    tree = reply.surrogate
    metric = "R^2" if tree.fidelity_metric == "r2" else "agreement"
    trust = "its rules describe the model well" if tree.fidelity >= 0.7 else (
        "its rules are only a rough sketch of the model")
    leaf = max(tree.rules, key=lambda r: r.samples)
    rule = " and ".join(leaf.conditions) or "always"
    answer = f"{leaf.output:+.3f}" if leaf.output is not None else str(leaf.label)
    return (f"Over the last {reply.rows} bars, the features that move {reply.output} most (mean absolute change "
            f"when shuffled): {top}. A depth-{tree.depth} tree mimics the model with {metric} {tree.fidelity:.2f} on "
            f"the last {tree.n_holdout} bars ({trust}); its most common rule: if {rule} then {answer} "
            f"({leaf.samples} bars).")


class ExplainSignalTool(QuantTool):
    """Why the deployed ensemble gives its signal: local feature effects, and global importance with a surrogate."""

    name: str = "explain_signal"
    description: str = (
        "Explain why the ML server's deployed LSTM + Transformer ensemble gives its signal on a symbol. scope "
        "'local' (default): the latest signal, with each engineered feature's value and how much it pushed "
        "p_up - p_down against its recent median (positive: toward up). scope 'global': which features move the "
        "model's output most over the recent bars (permutation importance) and a small decision tree that mimics "
        "the model, with its fidelity on held-out bars (trust its rules only when the fidelity is high). 'both' "
        "gives both. Use it to check that a signal rests on sensible features before relying on it. Without a "
        "server or a trained, deployed ensemble it says it could not explain (no explanation is invented)."
    )
    args_schema: type[BaseModel] = ExplainSignalInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        scope = str(arguments.get("scope") or "local").strip().lower()
        if scope not in SCOPES:
            raise ToolInputError(f"scope must be one of {', '.join(SCOPES)}, got {arguments.get('scope')!r}")
        bars = load_recent(self, arguments, minimum=ENSEMBLE_MIN_BARS + 20)
        payload = to_payload_dict(bars)
        local = ExplainLocalRequest.model_validate({"symbol": bars.symbol, "data": payload})
        global_ = ExplainGlobalRequest.model_validate({"symbol": bars.symbol, "data": payload, "rows": 200,
                                                       "repeats": 3})
        return _Prepared(bars, scope, local, global_)

    def _calls(self, prepared: _Prepared) -> CallFlow[_Replies | str]:
        symbol = prepared.bars.symbol
        try:
            local = (yield from call(EXPLAIN_LOCAL, prepared.local)) if prepared.scope != "global" else None
            global_ = (yield from call(EXPLAIN_GLOBAL, prepared.global_)) if prepared.scope != "local" else None
        except NotFound as exc:
            return f"no ensemble deployed for {symbol} ({exc.message}): {train_hint(symbol)}"
        except Conflict as exc:
            gated = gated_from(exc)
            if gated is None:
                raise
            return f"{gated.reason('ensemble', 'the trend rules')}: a gated model is not explained"
        return _Replies(local, global_)

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: _Replies | str) -> ToolResult:
        if isinstance(reply, str):
            return self._fallback(arguments, prepared, reply)
        symbol = prepared.bars.symbol
        parts: list[str] = []
        data: dict[str, Any] = {"symbol": symbol, "scope": prepared.scope}
        first = reply.local or reply.global_
        assert first is not None  # the scope asks for at least one
        if reply.local is not None:
            parts.append(_local_text(symbol, reply.local))
            data["local"] = reply.local.model_dump(mode="json")
        if reply.global_ is not None:
            parts.append(_global_text(reply.global_))
            data["global"] = reply.global_.model_dump(mode="json", exclude={"surrogate": {"text"}})
        parts.append(f"Model {first.model_id} v{first.model_version}; method {first.method_used}; data "
                     f"{first.data_hash[:19]}.")
        return ToolResult(tool=self.name, ok=True, summary=" ".join(parts), arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        symbol = prepared.bars.symbol if prepared is not None else str(arguments.get("symbol") or "SP500")
        text = (f"{self.name}: could not explain {symbol}'s ensemble signal: {reason}. No explanation is "
                "available; do not infer one.")
        return ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments,
                          data={"symbol": symbol, "reason": reason})
