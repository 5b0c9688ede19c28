"""The OpenAPI document covers every operation, its security and its errors."""

from __future__ import annotations

import re

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
API_PREFIXES = ("/partner/v1", "/back-office/v1")


def operations(spec):  # type: ignore[no-untyped-def]
    return [(path, method, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


def test_every_api_route_is_in_the_document(app):
    spec = app.test_client().get("/openapi.json").get_json()
    documented = {(path, method.upper()) for path, method, _ in operations(spec)}
    routed = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in app.url_map.iter_rules() if rule.rule.startswith(API_PREFIXES)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed and routed == documented


def test_every_operation_states_its_security_and_problem_responses(app):
    spec = app.test_client().get("/openapi.json").get_json()
    assert {"rfc9421", "bearer"} <= set(spec["components"]["securitySchemes"])
    for path, method, operation in operations(spec):
        expected = [{"rfc9421": []}] if path.startswith("/partner/") else [{"bearer": []}]
        assert operation["security"] == expected, (method, path)
        assert "401" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
        if method == "post" and path.startswith("/partner/"):
            assert any(parameter["name"] == "Idempotency-Key" and parameter["required"]
                       for parameter in operation["parameters"]), path
        if path.startswith("/back-office/"):
            assert "403" in operation["responses"], (method, path)


def test_docs_page_lists_every_operation_without_javascript(app):
    spec = app.test_client().get("/openapi.json").get_json()
    page = app.test_client().get("/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert "<script" not in html
    for path, _method, _ in operations(spec):
        assert f"<code>{path}</code>" in html
