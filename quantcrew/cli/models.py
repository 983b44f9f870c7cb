"""``quantcrew models``: the server's stored models, their lineage, stages, promotion, rollback and retention.

Every command talks to the ML server (``--server-url``, else the home's running server, else one
started locally for the command), through the endpoint table's rows (``quantcrew.tools.endpoints``).
A refused request (an unknown id or name: 404; nothing to promote, no previous champion, a failed
gate: 409) exits 2 with the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, exit_for_error, fail

if TYPE_CHECKING:
    from pydantic import BaseModel

    from quantcrew.ml_server.schemas.common import ModelInfo
    from quantcrew.ml_server.schemas.lineage import DeploymentEvent, LineageResponse
    from quantcrew.tools.client import MLClient

__all__ = ["models_app"]

T = TypeVar("T")

models_app = typer.Typer(help="Stored models: list, show, lineage, stages, promote, rollback, cleanup.",
                         no_args_is_help=True)

ServerUrlOpt = Annotated[str | None, typer.Option(
    help="ML server URL; default: the home's running server, or one started locally.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's reply as JSON.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, in words; recorded with the step.")]
ActorOpt = Annotated[str | None, typer.Option(help="Who asks; recorded with the step (default: cli).")]


def _with_client(server_url: str | None, config: Any, action: Callable[[MLClient], T]) -> T:
    """``action(client)`` against the server; a client error exits with its code and the server's message."""
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    settings = load_cli_settings(config, client__url=server_url)
    try:
        with ml_server(settings, config), make_client(settings.client) as client:
            return action(client)
    except MLClientError as exc:
        fail(err_console, str(exc), exit_for_error(exc))
    except ServerStartError as exc:
        fail(err_console, f"the ML server did not start: {exc}", ExitCode.FAILED)


def _print_json(reply: BaseModel | list[Any]) -> None:
    if isinstance(reply, list):
        console.print_json(json.dumps([r.model_dump(mode="json") for r in reply]))
    else:
        console.print_json(reply.model_dump_json())


@models_app.command("list")
def models_list(family: Annotated[str | None, typer.Option(help="Only this family.")] = None,
                name: Annotated[str | None, typer.Option(help="Only versions of this model name.")] = None,
                server_url: ServerUrlOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Stored models, newest first, with their deployment stage and trigger."""
    from quantcrew.tools import endpoints as ep

    def fetch(client: MLClient) -> tuple[list[ModelInfo], dict[str, str]]:
        found = [m for m in client.list_models() if (family is None or m.family == family)
                 and (name is None or m.name == name)]
        stages = {d.model_id: d.stage for d in client._call(ep.ENSEMBLE_DEPLOYMENTS).deployments}
        return found, stages

    found, stages = _with_client(server_url, config, fetch)
    if as_json:
        _print_json(found)
        return
    table = Table("model_id", "name", "version", "family", "method", "deployed", "trigger", "parent", "trained on",
                  "created", title=f"Stored models ({len(found)})")
    for m in found:
        span = f"{m.lineage.data_start} .. {m.lineage.data_end}" if m.lineage.data_start else ""
        table.add_row(m.model_id, m.name, str(m.version), m.family, m.method, stages.get(m.model_id, ""),
                      m.lineage.trigger or "", m.lineage.parent_model_id or "", span,
                      m.created_at.isoformat(timespec="seconds"))
    console.print(table)


@models_app.command("show")
def models_show(model_id: str, server_url: ServerUrlOpt = None, config: ConfigOpt = None) -> None:
    """One stored model's entry as JSON: version, method, SHA-256, metadata, lineage."""
    _print_json(_with_client(server_url, config, lambda client: client.get_model(model_id)))


@models_app.command("lineage")
def models_lineage(model_id: str, server_url: ServerUrlOpt = None, as_json: JsonOpt = False,
                   config: ConfigOpt = None) -> None:
    """The version and its parents, each with its training span, trigger, gate and deployment history."""
    from quantcrew.tools import endpoints as ep

    reply = _with_client(server_url, config, lambda client: client._call(ep.MODELS_LINEAGE, path_id=model_id))
    if as_json:
        _print_json(reply)
        return
    console.print(_lineage_table(reply))


def _lineage_table(reply: LineageResponse) -> Table:
    table = Table("model_id", "name", "version", "trigger", "trained on", "data hash", "code", "gate", "stage",
                  "history", title=f"Lineage of {reply.model_id}")
    for node in reply.chain:
        if node.model is None:
            table.add_row(node.model_id, "(deleted)", "", "", "", "", "", "", "", _history(node.events))
            continue
        lin = node.model.lineage
        gate = "" if lin.gate is None else ("passed" if lin.gate.get("passed") else "failed")
        span = f"{lin.data_start} .. {lin.data_end}" if lin.data_start else ""
        table.add_row(node.model_id, node.model.name, str(node.model.version), lin.trigger or "", span,
                      (lin.data_hash or "")[:12], lin.code_version or "", gate,
                      node.deployment.stage if node.deployment is not None else "", _history(node.events))
    return table


def _history(events: list[DeploymentEvent]) -> str:
    return "; ".join(f"{e.at:%Y-%m-%d %H:%M} {e.from_stage or '-'}->{e.to_stage} ({e.action}"
                     + (f": {e.reason}" if e.reason else "") + ")" for e in events)


@models_app.command("stage")
def models_stage(model_id: str, stage: Annotated[str, typer.Argument(
                     help="shadow, canary, gradual, full or retired.")],
                 share: Annotated[float | None, typer.Option(help="canary / gradual share (0 < share < 1).")] = None,
                 ramp_seconds: Annotated[float | None, typer.Option(help="gradual: seconds to reach 100%.")] = None,
                 reason: ReasonOpt = None, actor: ActorOpt = None, server_url: ServerUrlOpt = None,
                 as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Put a stored version of any stateful family at a deployment stage (a hand override: no gate)."""
    from pydantic import ValidationError

    from quantcrew.ml_server.schemas.lineage import StageRequest
    from quantcrew.tools import endpoints as ep

    try:
        body = StageRequest.model_validate({"stage": stage, "share": share, "ramp_seconds": ramp_seconds,
                                            "reason": reason, "actor": actor or "cli"})
    except ValidationError as exc:
        fail(err_console, f"bad stage request: {exc.errors()[0]['msg']} ({stage!r})", ExitCode.BAD_INPUT)
    reply = _with_client(server_url, config, lambda client: client._call(ep.MODELS_STAGE, body, path_id=model_id))
    _report(reply, as_json, f"{model_id} is now {reply.deployment.stage} of '{reply.deployment.name}'")


@models_app.command("promote")
def models_promote(name: Annotated[str, typer.Argument(help="The deployment name, e.g. ensemble-SP500.")],
                   model_id: Annotated[str | None, typer.Option(
                       help="Which candidate, when the name has several shadows.")] = None,
                   to: Annotated[str | None, typer.Option(
                       help="canary, gradual or full; default the next stage (shadow -> canary -> full).")] = None,
                   share: Annotated[float | None, typer.Option(help="canary share (default 0.1).")] = None,
                   ramp_seconds: Annotated[float | None, typer.Option(help="gradual: seconds to 100%.")] = None,
                   reason: ReasonOpt = None, actor: ActorOpt = None, server_url: ServerUrlOpt = None,
                   as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Promote the name's candidate one step (shadow -> canary -> full) or to --to. Exits 2 when there is
    nothing to promote."""
    from pydantic import ValidationError

    from quantcrew.ml_server.schemas.lineage import PromoteRequest
    from quantcrew.tools import endpoints as ep

    try:
        body = PromoteRequest.model_validate({"model_id": model_id, "to_stage": to, "share": share,
                                              "ramp_seconds": ramp_seconds, "reason": reason,
                                              "actor": actor or "cli"})
    except ValidationError as exc:
        fail(err_console, f"bad promotion: {exc.errors()[0]['msg']}", ExitCode.BAD_INPUT)
    reply = _with_client(server_url, config, lambda client: client._call(ep.MODELS_PROMOTE, body, path_id=name))
    _report(reply, as_json, f"promoted {reply.deployment.model_id} (version {reply.deployment.version}) to "
                            f"{reply.deployment.stage} of '{name}'")


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="The deployment name, e.g. ensemble-SP500.")],
                    reason: ReasonOpt = None, actor: ActorOpt = None, server_url: ServerUrlOpt = None,
                    as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Put the previous champion back at full and retire the current one. Exits 2 without a previous champion."""
    from quantcrew.ml_server.schemas.lineage import RollbackRequest
    from quantcrew.tools import endpoints as ep

    body = RollbackRequest(reason=reason, actor=actor or "cli")
    reply = _with_client(server_url, config, lambda client: client._call(ep.MODELS_ROLLBACK, body, path_id=name))
    retired = f"; {reply.retired.model_id} retired" if reply.retired is not None else ""
    _report(reply, as_json, f"rolled '{name}' back to {reply.model_id} (version {reply.restored.version}){retired}")


@models_app.command("cleanup")
def models_cleanup(name: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; delete nothing.")] = False,
                   server_url: ServerUrlOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Apply the retention policy: keep monitor.keep_versions versions per name, and every deployed one."""
    from quantcrew.ml_server.schemas.lineage import CleanupRequest
    from quantcrew.tools import endpoints as ep

    body = CleanupRequest(name=name, dry_run=dry_run)
    reply = _with_client(server_url, config, lambda client: client._call(ep.MODELS_CLEANUP, body))
    if as_json:
        _print_json(reply)
        return
    verb = "would delete" if dry_run else "deleted"
    for entry in reply.deleted:
        console.print(f"{verb} {entry.model_id} ('{entry.name}' version {entry.version})", markup=False)
    for entry in reply.kept:
        console.print(f"kept {entry.model_id} ('{entry.name}' version {entry.version}): {entry.reason}",
                      markup=False)
    console.print(f"{len(reply.deleted)} {verb}, {len(reply.kept)} old versions kept (keep_versions "
                  f"{reply.keep_versions})", markup=False)


def _report(reply: Any, as_json: bool, line: str) -> None:
    if as_json:
        _print_json(reply)
        return
    console.print(line, markup=False)
    for e in reply.events:
        console.print(f"  {e.model_id}: {e.from_stage or '-'} -> {e.to_stage} ({e.action}"
                      + (f": {e.reason}" if e.reason else "") + ")", markup=False)
