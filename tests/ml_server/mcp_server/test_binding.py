"""Binding REST handlers for MCP: every catalog route binds, with the route's own input schema and constraints."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from quantcrew.ml_server.mcp_server.binding import bind, find_route
from quantcrew.ml_server.mcp_server.catalog import CATALOG, ToolEntry


@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry.name)
def test_every_catalog_entry_binds_its_route(entry: ToolEntry) -> None:
    binding = bind(entry.method, entry.path)
    assert binding.rest == f"{entry.method} {entry.path}"
    assert binding.input_schema["type"] == "object"
    body = [hint for name, hint in binding.route.endpoint.__annotations__.items() if name == "req"]
    if entry.method == "POST":  # a JSON body: the tool takes the route's request model itself
        assert body and binding.input_model.__name__ == body[0]
        assert binding.input_schema == binding.input_model.model_json_schema()


def test_catalog_names_are_unique_and_valid_tool_names() -> None:
    names = [entry.name for entry in CATALOG]
    assert len(names) == len(set(names))
    assert all(name.replace("_", "").isalnum() and name.islower() for name in names)


def test_parameters_keep_the_rest_constraints_and_defaults() -> None:
    jobs = bind("GET", "/v1/jobs").input_model
    assert jobs().model_dump() == {"kind": None, "status": None, "limit": 100}
    for bad in ({"limit": 0}, {"limit": 1001}, {"kind": "k" * 65}, {"status": "sleeping"}, {"page": 2}):
        with pytest.raises(ValidationError):
            jobs.model_validate(bad)
    job = bind("GET", "/v1/jobs/{job_id}").input_model
    assert job.model_json_schema()["required"] == ["job_id"]
    assert bind("GET", "/v1/jobs/{job_id}").location("job_id") == "path"
    assert bind("GET", "/v1/jobs").location("limit") == "query"
    assert bind("POST", "/v1/risk/var").location("data") == "body"


def test_only_list_replies_are_wrapped() -> None:
    listed = bind("GET", "/v1/models")
    assert listed.wrapped and listed.reply_name == "list[ModelInfo]"
    assert not bind("GET", "/v1/jobs").wrapped and bind("GET", "/v1/jobs").reply_name == "JobList"


def test_unknown_route_is_refused_by_name() -> None:
    with pytest.raises(LookupError, match="POST /v1/regime/nothing"):
        find_route("post", "/v1/regime/nothing")


def test_handler_with_an_optional_body_cannot_be_a_tool() -> None:
    with pytest.raises(TypeError, match="optional body"):
        bind("POST", "/v1/bandit/{bandit}/reset")


def test_input_model_is_a_pydantic_model_that_forbids_unknown_fields() -> None:
    model: type[BaseModel] = bind("GET", "/v1/bandit/{bandit}").input_model
    assert model.model_validate({"bandit": "desk"}).model_dump() == {"bandit": "desk"}
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({"bandit": "desk", "regime": "calm"})
