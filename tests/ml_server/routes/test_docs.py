"""``/docs`` works offline: one page rendered from the OpenAPI document, nothing loaded from elsewhere."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from quantcrew.ml_server.routes.docs import render_docs


def test_docs_page_lists_the_operations_without_any_url_to_another_host(client: TestClient) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", page) == []  # no script, style or link from another host
    assert "<script" not in page
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/regime/label", "/v1/risk/var", "/health"):
        assert path in paths and f"<code>{path}</code>" in page


def test_cdn_pages_are_gone(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404


def test_docs_page_escapes_text_from_the_document() -> None:
    spec = {"info": {"title": "<b>x</b>", "version": "1"},
            "paths": {"/a": {"get": {"summary": "<script>alert(1)</script>", "responses": {"200": {}},
                                     "security": [{"bearer": []}]}}},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
    page = render_docs(spec)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert 'title="needs the API key"' in page and "Authorization: Bearer" in page
