"""Sending schemathesis cases to the app in process, checking each reply and counting what came back.

One :class:`Tally` per run records every case by phase and operation, every failed check (a 5xx, a reply
that does not match the OpenAPI document, a crash inside the app) with the request that caused it, and
renders the summary the fuzz test prints and asserts on.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

__all__ = ["CHECKS", "VALID_DATA_PHASES", "AnyCase", "Operation", "Tally", "draw",
           "hypothesis_restored", "operations"]

AnyCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]

VALID_DATA_PHASES = frozenset({"examples", "compute"})

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
"""No 5xx; a status, content type and body the OpenAPI document declares; invalid input refused with a 4xx."""


@dataclass
class Tally:
    """Cases sent and replies received, by phase and operation, and every failure with its request."""

    compute: frozenset[str]
    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    ok: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    refusals: dict[str, list[str]] = field(default_factory=dict)
    """The first few 4xx messages per operation in the phases that send valid data (why they were not 2xx)."""
    seconds: dict[str, float] = field(default_factory=dict)
    call_seconds: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def send(self, phase: str, case: AnyCase, session: Any) -> Any:
        """Send one case, check the reply; returns the reply's JSON (None when it has none or it failed)."""
        label = case.operation.label
        self.cases[phase, label] += 1
        started = time.perf_counter()
        try:
            response = case.call(session=session)
        except Exception as exc:  # the app raised through its own handlers: a server error all the same
            self.server_errors += 1
            self.failures.append(f"[{phase}] {label}: the app raised {exc!r}\n  {_request(case)}")
            return None
        finally:
            self.call_seconds[phase, label] += time.perf_counter() - started
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.server_errors += 1
        if 200 <= response.status_code < 300:
            self.ok[phase, label] += 1
        elif phase in VALID_DATA_PHASES and len(seen := self.refusals.setdefault(label, [])) < 3:
            seen.append(f"{response.status_code} {response.text[:300]}")
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as exc:
            titles = "; ".join(sorted({f.title for f in exc.exceptions}))
            self.failures.append(f"[{phase}] {label} -> {response.status_code}: {titles}\n  {_request(case)}\n"
                                 f"  reply: {response.text[:400]}")
        try:
            return response.json()
        except ValueError:
            return None

    def timed(self, phase: str, started: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def phases(self) -> list[str]:
        return list(dict.fromkeys(phase for phase, _ in self.cases))

    def count(self, counter: Counter[tuple[str, str]], phase: str | None = None, compute: bool | None = None) -> int:
        return sum(n for (p, label), n in counter.items()
                   if (phase is None or p == phase) and (compute is None or (label in self.compute) == compute))

    def without_2xx(self, labels: Iterable[str]) -> list[str]:
        """Those of ``labels`` that never answered 2xx in any phase."""
        answered = {label for (_, label), n in self.ok.items() if n}
        return sorted(set(labels) - answered)

    def summary(self, operations: int) -> dict[str, Any]:
        """The figures the test asserts on and prints."""
        per_phase = {}
        for phase in self.phases():
            cases, ok = self.count(self.cases, phase), self.count(self.ok, phase)
            c_cases, c_ok = self.count(self.cases, phase, True), self.count(self.ok, phase, True)
            per_phase[phase] = {"cases": cases, "2xx": ok, "compute_cases": c_cases, "compute_2xx": c_ok,
                                "compute_2xx_share": round(c_ok / c_cases, 4) if c_cases else None,
                                "seconds": round(self.seconds.get(phase, 0.0), 1)}
        c_cases, c_ok = self.count(self.cases, compute=True), self.count(self.ok, compute=True)
        return {
            "operations": operations,
            "compute_operations": len(self.compute),
            "cases": self.count(self.cases),
            "compute_cases": c_cases,
            "compute_2xx": c_ok,
            "compute_2xx_share": round(c_ok / c_cases, 4) if c_cases else None,
            "compute_operations_with_2xx": len(self.compute) - len(self.without_2xx(self.compute)),
            "server_errors": self.server_errors,
            "check_failures": len(self.failures),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "phases": per_phase,
            "refusals": self.refusals,
            "by_operation": {label: {phase: f"{self.ok[phase, label]}/{n} 2xx, "
                                            f"{self.call_seconds[phase, label]:.1f} s"
                                     for (phase, lab), n in self.cases.items() if lab == label}
                             for label in sorted({label for _, label in self.cases})},
        }

    def render(self, operations: int) -> str:
        """The summary as a few lines of text."""
        s = self.summary(operations)
        share = s["compute_2xx_share"]
        lines = [f"schemathesis fuzz: {s['operations']} operations, {s['cases']} cases, "
                 f"{s['server_errors']} server errors, {s['check_failures']} failed checks",
                 f"compute endpoints: {s['compute_operations_with_2xx']}/{s['compute_operations']} answered 2xx; "
                 f"{s['compute_2xx']}/{s['compute_cases']} compute cases 2xx"
                 + (f" ({share:.1%})" if share is not None else "")]
        for phase, p in s["phases"].items():
            c_share = p["compute_2xx_share"]
            lines.append(f"  {phase:<9} {p['cases']:>6} cases  {p['2xx']:>5} 2xx  compute {p['compute_2xx']:>4}/"
                         f"{p['compute_cases']:<5}" + (f" ({c_share:.1%})" if c_share is not None else "")
                         + f"  {p['seconds']:>6.1f} s")
        lines.append("  statuses: " + ", ".join(f"{k}: {v}" for k, v in s["statuses"].items()))
        return "\n".join(lines)


def _request(case: AnyCase) -> str:
    """The request in one line, long arrays cut to their first items (the data of a valid example is long)."""
    body = case.body
    text = "" if isinstance(body, NotSet) or body is None else body.decode("utf-8", "replace") if isinstance(
        body, bytes) else body if isinstance(body, str) else json.dumps(_short(body), default=str)
    text = text if len(text) <= 1500 else text[:1500] + f"... ({len(text)} characters)"
    return (f"{case.method} {case.formatted_path} query={case.query or {}} headers={dict(case.headers or {})} "
            f"body={text}")


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value[:3]] + ([f"... {len(value)} items"] if len(value) > 3 else [])
    return value


def draw(strategy: st.SearchStrategy[AnyCase], n: int) -> list[AnyCase]:
    """``n`` cases (fewer when the strategy has fewer, none when it has none), the same every run: derandomized,
    no example database."""
    out: list[AnyCase] = []
    if n < 1:
        return out

    @hypothesis.settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis.given(strategy)
    def collect(case: AnyCase) -> None:
        out.append(case)

    with suppress(Unsatisfiable):  # nothing to negate: an operation without parameters or body
        collect()
    return out


_PATCHED_BY_SCHEMATHESIS = (
    ("hypothesis.core", "RepresentationPrinter"),
    ("hypothesis.core", "BUFFER_SIZE"),
    ("hypothesis.internal.conjecture.engine", "BUFFER_SIZE"),
    ("hypothesis.strategies._internal.collections", "BUFFER_SIZE"),
    ("hypothesis.strategies._internal.core", "is_first_param_referenced_in_function"),
    ("hypothesis.internal.entropy", "register_random"),
)


@contextmanager
def hypothesis_restored() -> Iterator[None]:
    """Put back the Hypothesis globals schemathesis replaces when it first generates a case.

    Among them the printer of falsifying examples, replaced by one that prints nothing: left in place, every
    Hypothesis test that runs later in the session would report ``x=,`` instead of the value that failed.
    """
    saved = [(module, name, getattr(importlib.import_module(module), name)) for module, name in
             _PATCHED_BY_SCHEMATHESIS]
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(importlib.import_module(module), name, value)
        from schemathesis.generation.hypothesis import setup

        setup._is_patched = False  # type: ignore[attr-defined]


def operations(schema: BaseSchema) -> list[Operation]:
    """Every operation of the document; one it cannot read fails the test."""
    out = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation of the OpenAPI document is invalid: {result.err()}"
        out.append(result.ok())
    return out
