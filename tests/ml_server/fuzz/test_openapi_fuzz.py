"""Schemathesis over every operation of the ML server's OpenAPI document, in process, in a couple of minutes.

Phases, in order, on one app:

* examples: one valid request per operation (:mod:`.examples`), after the fits and jobs that make the ids the
  later ones need; each must answer 2xx, so every compute endpoint runs its model at least once;
* coverage: a sample of schemathesis's deterministic boundary cases, positive and negative, per operation;
* fuzzing: Hypothesis-generated cases, positive and negative, a few per operation;
* compute: for each compute endpoint, its valid example with one field changed to a value from schemathesis's
  positive boundary cases (a maximum, a minimum, each enum value...), and a few Hypothesis positive cases
  that keep only the example's data, ids and cost knobs; so that generated parameters reach the models rather
  than stop at the validation of a payload no model could use.

Every reply is checked: no 5xx (nor an exception through the app), a status, content type and body the
document declares, invalid input refused with a 4xx. Jobs a generated case starts are cancelled at once. The
summary (operations, cases per phase, the share of compute cases answered 2xx, server errors) is printed
(``pytest -s``) and written to ``fuzz-summary.json`` in the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app
from tests.ml_server.fuzz.examples import BEFORE, COMPUTE, EXAMPLES, JOB_STARTERS, PINNED, Example, Ids
from tests.ml_server.fuzz.runner import AnyCase, Operation, Tally, draw, hypothesis_restored, operations

COVERAGE_CASES = 16
"""Coverage cases per operation, taken evenly from schemathesis's list (a few hundred per compute operation)."""
FUZZ_CASES = 2
"""Hypothesis cases per operation and generation mode (positive, negative)."""
COMPUTE_ONE_FIELD = 6
"""Cases per compute endpoint that change one field of its example to a value of a positive coverage case."""
COMPUTE_GENERATED = 2
"""Cases per compute endpoint that keep only its example's pinned fields and take the rest from Hypothesis."""
MIN_COMPUTE_2XX_SHARE = 0.5
"""Share of compute-phase cases that must answer 2xx (about 0.85 measured): below it, the pinned fields or the
examples no longer make valid requests and the phase has slid back to testing validation only."""
JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def app_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenApiSchema, Any]]:
    """The real app on a temporary home, its OpenAPI document loaded by schemathesis, and a client session.

    Module-scoped, so set up before the function-scoped clean environment: it cleans its own (no QUANTCREW_*
    from the shell, no stray .env or schemathesis.toml in the working directory).
    """
    with pytest.MonkeyPatch.context() as env, hypothesis_restored():
        for name in [name for name in os.environ if name.startswith("QUANTCREW_")]:
            env.delenv(name)
        env.chdir(tmp_path_factory.mktemp("fuzz-cwd"))
        settings = load_settings(home=tmp_path_factory.mktemp("fuzz-home"),
                                 server={"device": "cpu", "job_workers": 1, "preload": False})
        app = create_app(settings)
        try:
            schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config())
            with asgi.get_client(cast(Any, app)) as session:
                yield schema, session
        finally:
            asgi.shutdown_lifespans()  # the app's lifespan: jobs stopped, registry closed


def _operation(schema: OpenApiSchema, label: str) -> Operation:
    method, path = label.split(" ", 1)
    operation: Operation = schema[path][method]
    return operation


def _wait(schema: OpenApiSchema, session: Any, job_id: str) -> dict[str, Any]:
    operation = _operation(schema, "GET /v1/jobs/{job_id}")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job: dict[str, Any] = operation.Case(path_parameters={"job_id": job_id}).call(session=session).json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _example_case(schema: OpenApiSchema, example: Example, ids: Ids, body: Any = None) -> AnyCase:
    body = example.body(ids) if body is None and example.body is not None else body
    return _operation(schema, example.label).Case(
        path_parameters=example.path(ids) or None, query=example.query(ids) or None,
        **({"body": body, "media_type": "application/json"} if body is not None else {}))


def _send_example(schema: OpenApiSchema, session: Any, tally: Tally, example: Example, ids: Ids,
                  phase: str = "examples") -> Any:
    """Send an example; keep what later ones need from its reply. None (and a failure recorded) unless 2xx."""
    try:
        case = _example_case(schema, example, ids)
    except KeyError as exc:  # an id an earlier example should have kept
        tally.failures.append(f"[{phase}] {example.label}: no {exc} (an earlier example failed)")
        return None
    before = tally.count(tally.ok, phase)
    reply = tally.send(phase, case, session)
    if tally.count(tally.ok, phase) == before:
        tally.failures.append(f"[{phase}] {example.label}: not 2xx: {json.dumps(reply)[:400]}")
        return None
    if example.wait:
        reply = _wait(schema, session, reply["job_id"])
        if reply["status"] != "succeeded":
            tally.failures.append(f"[{phase}] job {reply['job_id']} ({reply['kind']}) ended {reply['status']}: "
                                  f"{reply.get('error')}")
            return None
    if example.keep is not None:
        example.keep(reply, ids)
    return reply


def _run_examples(schema: OpenApiSchema, session: Any, tally: Tally) -> Ids:
    ids: Ids = {}
    started = time.perf_counter()
    for example in EXAMPLES:
        _send_example(schema, session, tally, example, ids)
    tally.timed("examples", started)
    return ids


def _send(schema: OpenApiSchema, session: Any, tally: Tally, phase: str, case: AnyCase) -> None:
    reply = tally.send(phase, case, session)
    if case.operation.label in JOB_STARTERS and isinstance(reply, dict) and isinstance(reply.get("job_id"), str):
        # a generated job is only started: cancelled at once (a 409 when it has finished already)
        _operation(schema, "DELETE /v1/jobs/{job_id}").Case(path_parameters={"job_id": reply["job_id"]}).call(
            session=session)


def _evenly(items: list[Any], n: int) -> list[Any]:
    """``n`` of ``items`` spread evenly over the list, first and last included."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def _distinct(bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bodies without repeats, in order."""
    return list({json.dumps(body, sort_keys=True, default=str): body for body in bodies}.values())


def _generated_fields(case: AnyCase, label: str) -> dict[str, Any]:
    """The fields of a generated body that are not pinned to the example's."""
    body = case.body if isinstance(case.body, dict) else {}
    return {name: value for name, value in body.items() if name not in PINNED[label]}


def _one_field_changes(cases: list[AnyCase], label: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every generated value of one field at a time that differs from the example's."""
    changes = ({name: value} for case in cases for name, value in _generated_fields(case, label).items()
               if base.get(name) != value)
    return _distinct(changes)


def _compute_body(example: Example, ids: Ids, fields: dict[str, Any], *, on_example: bool) -> dict[str, Any]:
    """The example's body with ``fields`` laid over it: over all of it (one field changed), or over its pinned
    fields only (every other field as generated, or the server's default when the generator left it out)."""
    base = example.body(ids) if example.body is not None else {}
    if not on_example:
        base = {name: value for name, value in base.items() if name in PINNED[example.label]}
    return {**base, **fields}


def _run_compute(schema: OpenApiSchema, session: Any, tally: Tally, ids: Ids, operation: Operation,
                 coverage: list[AnyCase]) -> None:
    label = operation.label
    examples = {example.label: example for example in EXAMPLES if not example.wait}
    example = examples[label]
    positive = [c for c in coverage if c.meta is not None and c.meta.generation.mode == GenerationMode.POSITIVE]
    base = _compute_body(example, ids, {}, on_example=True)
    bodies = [(fields, True) for fields in _evenly(_one_field_changes(positive, label, base), COMPUTE_ONE_FIELD)]
    generated = draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), COMPUTE_GENERATED)
    bodies += [(_generated_fields(case, label), False) for case in generated]
    for fields, on_example in bodies:
        if label in BEFORE:  # a fresh id for each case (a reward takes a new decision)
            _send_example(schema, session, tally, examples[BEFORE[label]], ids, phase="compute")
        body = _compute_body(example, ids, fields, on_example=on_example)
        _send(schema, session, tally, "compute", _example_case(schema, example, ids, body))


def _negatable(operation: Operation) -> bool:
    """False when no request to the operation can be invalid (no body, only plain string parameters): Hypothesis
    would search for a negative case for seconds in vain."""
    raw = operation.definition.raw
    plain = {"type", "title", "description"}
    return "requestBody" in raw or any(
        set(p.get("schema", {})) - plain or p.get("schema", {}).get("type") != "string"
        for p in raw.get("parameters") or [])


def _run_generated(schema: OpenApiSchema, session: Any, tally: Tally, ids: Ids) -> None:
    for operation in operations(schema):
        started = time.perf_counter()
        generation = schema.config.generation_for(operation=operation, phase="coverage")
        coverage = list(schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                                   generation_config=generation))
        for case in _evenly(coverage, COVERAGE_CASES):
            _send(schema, session, tally, "coverage", case)
        tally.timed("coverage", started)

        started = time.perf_counter()
        for mode in GenerationMode if _negatable(operation) else [GenerationMode.POSITIVE]:
            for case in draw(operation.as_strategy(generation_mode=mode), FUZZ_CASES):
                _send(schema, session, tally, "fuzzing", case)
        tally.timed("fuzzing", started)

        if operation.label in COMPUTE:
            started = time.perf_counter()
            _run_compute(schema, session, tally, ids, operation, coverage)
            tally.timed("compute", started)


def test_fuzzing_every_operation_finds_no_server_error_and_reaches_every_compute_endpoint(
        app_schema: tuple[OpenApiSchema, Any], tmp_path: Path) -> None:
    schema, session = app_schema
    labels = [operation.label for operation in operations(schema)]
    tally = Tally(compute=frozenset(COMPUTE))
    ids = _run_examples(schema, session, tally)
    _run_generated(schema, session, tally, ids)

    summary = tally.summary(len(labels))
    (tmp_path / "fuzz-summary.json").write_text(json.dumps({**summary, "failures": tally.failures}, indent=2))
    print("\n" + tally.render(len(labels)) + f"\n  summary: {tmp_path / 'fuzz-summary.json'}")

    assert set(labels) >= COMPUTE, sorted(COMPUTE - set(labels))
    assert set(PINNED) == COMPUTE
    assert not tally.without_2xx(labels), f"operations that never answered 2xx: {tally.without_2xx(labels)}"
    # the generated parameters reach the models: most compute-phase cases are answered, not refused
    assert summary["phases"]["compute"]["compute_2xx_share"] >= MIN_COMPUTE_2XX_SHARE, tally.refusals
    assert summary["server_errors"] == 0, "\n".join(tally.failures)
    assert not tally.failures, "\n".join(tally.failures)
