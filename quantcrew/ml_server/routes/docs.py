"""``/docs``: the API reference as one self-contained HTML page, rendered from the OpenAPI document.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet access; this page has no script, stylesheet or link to another host. The
machine-readable document stays at ``/openapi.json``.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

__all__ = ["render_docs", "router"]

router = APIRouter(include_in_schema=False)

_METHODS = ("get", "post", "put", "patch", "delete")
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4em;"
    "text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .2em}"
    ".m{font-weight:bold;text-transform:uppercase}.lock{color:#a60}"
)


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """Every operation of the API, with its summary, body model, responses and whether it needs the key."""
    return HTMLResponse(render_docs(request.app.openapi()))


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    return str(schema.get("type", ""))


def render_docs(spec: dict[str, Any]) -> str:
    """The HTML page for an OpenAPI document (every text escaped; links stay on this server)."""
    info = spec.get("info", {})
    esc = html.escape
    rows = []
    for path, item in sorted(spec.get("paths", {}).items()):
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            codes = ", ".join(sorted(op.get("responses", {})))
            lock = '<span class="lock" title="needs the API key">key</span>' if op.get("security") else ""
            summary = op.get("summary") or ""
            description = (op.get("description") or "").strip().split("\n\n")[0]
            rows.append(
                f'<tr><td class="m">{esc(method)}</td><td><code>{esc(path)}</code> {lock}</td>'
                f"<td>{esc(summary)}<br><small>{esc(description)}</small></td>"
                f"<td><code>{esc(_ref_name(body))}</code></td><td>{esc(codes)}</td></tr>"
            )
    schemes = spec.get("components", {}).get("securitySchemes", {})
    auth = ("<p>Operations marked <span class=\"lock\">key</span> need <code>Authorization: Bearer &lt;key&gt;"
            "</code> (the server's <code>server.api_key</code>).</p>" if schemes else "")
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(str(info.get('title', 'API')))}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{esc(str(info.get('title', 'API')))} <small>{esc(str(info.get('version', '')))}</small></h1>"
        f"<p>{esc(str(info.get('summary', '')))}</p>{auth}"
        "<p>Request and response schemas: <a href=\"openapi.json\">openapi.json</a>.</p>"
        "<table><thead><tr><th>Method</th><th>Path</th><th>What it does</th><th>Body</th><th>Responses</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )
