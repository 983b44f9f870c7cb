"""A REST route's handler, callable without HTTP: the route's input schema, its dependencies, its reply.

An MCP tool calls the very handler its REST route runs, so the size checks, the service call and the
metrics it counts are the route's own, not a copy that could drift. :func:`bind` reads the handler's
signature once, as FastAPI does:

* the parameter typed with a pydantic model is the JSON body: the tool's input is that model;
* a handler without one takes path and query parameters: the tool's input is a model of exactly those
  parameters, with their constraints (``max_length``, ``ge``...), built from the signature;
* every ``Annotated[..., Depends(get_x)]`` parameter is ``quantcrew.ml_server.deps``' ``get_server``
  (or a route's own getter), called with a request that carries only the app, as it reads nothing else.

A handler that is a plain ``def`` runs in the thread pool, as FastAPI runs it; an ``async def`` one runs
on the event loop and decides for itself what to hand to a thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from fastapi import Request, Response
from fastapi.params import Body, Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.families import FAMILIES
from quantcrew.ml_server.routes import jobs, models

__all__ = ["RouteBinding", "bind", "find_route"]

Location = Literal["body", "path", "query"]

_PREFIX = "/v1"


@cache
def _routes() -> dict[tuple[str, str], APIRoute]:
    routers = [*(family.router for family in FAMILIES.values()), models.router, jobs.router]
    return {(method, _PREFIX + route.path): route for router in routers for route in router.routes
            if isinstance(route, APIRoute) for method in route.methods or ()}


def find_route(method: str, path: str) -> APIRoute:
    """The REST route served at ``method path`` (the path template, ``/v1`` included).

    Raises:
        LookupError: no such route (the catalog names one that does not exist).
    """
    try:
        return _routes()[(method.upper(), path)]
    except KeyError:
        raise LookupError(f"no REST route {method.upper()} {path}") from None


class RouteBinding:
    """One route's handler with its input model, its dependencies and its reply's model.

    Attributes:
        route: The REST route.
        input_model: What the tool takes: the route's body model, or a model of its path and query parameters.
        input_schema: The JSON schema of ``input_model`` (the tool's ``inputSchema``).
        reply_name: The name of the reply's model (``list[ModelInfo]`` for a list).
        wrapped: The route replies with a JSON array: the tool's structured result is ``{"result": [...]}``
            (MCP's structured content is an object).
    """

    def __init__(self, route: APIRoute, input_model: type[BaseModel], body: str | None,
                 locations: dict[str, Location], dependencies: dict[str, Callable[..., Any]]) -> None:
        self.route = route
        self.input_model = input_model
        self._body = body
        self._locations = locations
        self._dependencies = dependencies
        self._reply: TypeAdapter[Any] = TypeAdapter(route.response_model)
        self.input_schema: dict[str, Any] = input_model.model_json_schema()
        self.wrapped = get_origin(route.response_model) is list
        self.reply_name = _type_name(route.response_model)

    @property
    def rest(self) -> str:
        """The REST route this binding calls, e.g. ``POST /v1/risk/var``."""
        return _where(self.route)

    def location(self, field: str) -> Location:
        """Where an input field travels on the REST route: the body, the path or the query string."""
        return "body" if self._body is not None else self._locations.get(field, "query")

    async def call(self, request: Request, arguments: BaseModel) -> bytes:
        """Run the handler on validated ``arguments``; the reply's JSON, as the REST route sends it.

        Raises:
            MLServerError: what the handler raises (its 4xx on the REST side).
        """
        kwargs: dict[str, Any] = {}
        for name, dependency in self._dependencies.items():
            value = dependency(request)
            kwargs[name] = await value if inspect.isawaitable(value) else value
        if self._body is not None:
            kwargs[self._body] = arguments
        else:
            kwargs.update({name: getattr(arguments, name) for name in self._locations})
        endpoint = self.route.endpoint
        if inspect.iscoroutinefunction(endpoint):
            result = await endpoint(**kwargs)
        else:
            result = await run_in_threadpool(endpoint, **kwargs)
        if isinstance(result, Response):
            return bytes(result.body)
        return self._reply.dump_json(result)


@cache
def bind(method: str, path: str) -> RouteBinding:
    """The binding of the route at ``method path`` (built once per process: schemas take milliseconds).

    Raises:
        LookupError: no such route.
        TypeError: the handler takes something :class:`RouteBinding` cannot supply (a dependency with
            parameters of its own, an optional body, a body beside path parameters).
    """
    route = find_route(method, path)
    endpoint = route.endpoint
    hints = get_type_hints(endpoint, include_extras=True)
    body: str | None = None
    input_model: type[BaseModel] | None = None
    dependencies: dict[str, Callable[..., Any]] = {}
    fields: dict[str, Any] = {}
    locations: dict[str, Location] = {}
    for name, param in inspect.signature(endpoint).parameters.items():
        hint = hints[name]
        dependency = _dependency(hint)
        if dependency is not None:
            dependencies[name] = _request_only(dependency, route)
        elif isinstance(hint, type) and issubclass(hint, BaseModel):
            body, input_model = name, hint
        elif any(isinstance(meta, Body) for meta in _metadata(hint)) or isinstance(param.default, Body):
            raise TypeError(f"{_where(route)}: parameter {name!r} is an optional body; no tool can stand for it")
        else:
            fields[name] = (hint, ... if param.default is inspect.Parameter.empty else param.default)
            locations[name] = "path" if name in route.param_convertors else "query"
    if input_model is None:
        config = ConfigDict(extra="forbid")
        input_model = create_model(_model_name(route), __config__=config, **fields)
    elif fields:
        raise TypeError(f"{_where(route)}: takes a body and parameters {sorted(fields)}; a tool takes one or the other")
    return RouteBinding(route, input_model, body, locations, dependencies)


def _metadata(hint: Any) -> tuple[Any, ...]:
    return get_args(hint)[1:] if get_origin(hint) is Annotated else ()


def _dependency(hint: Any) -> Callable[..., Any] | None:
    for meta in _metadata(hint):
        if isinstance(meta, Depends):
            if meta.dependency is None:
                raise TypeError(f"Depends() without a callable in {hint!r}")
            return meta.dependency
    return None


def _request_only(dependency: Callable[..., Any], route: APIRoute) -> Callable[..., Any]:
    """``dependency`` itself, checked to take the request and nothing else (all the server's getters do)."""
    params = list(inspect.signature(dependency).parameters.values())
    if len(params) != 1 or get_type_hints(dependency).get(params[0].name) is not Request:
        raise TypeError(f"{_where(route)}: dependency {dependency.__qualname__} takes more than the request")
    return dependency


def _type_name(tp: Any) -> str:
    args = get_args(tp)
    if args:
        return f"{getattr(get_origin(tp), '__name__', str(get_origin(tp)))}[{', '.join(map(_type_name, args))}]"
    return str(getattr(tp, "__name__", tp))


def _model_name(route: APIRoute) -> str:
    words = [part for part in route.path.replace("{", "").replace("}", "").split("/") if part]
    return "".join(word.title().replace("_", "") for word in words) + "Arguments"


def _where(route: APIRoute) -> str:
    return f"{'/'.join(sorted(route.methods or ()))} {_PREFIX}{route.path}"
