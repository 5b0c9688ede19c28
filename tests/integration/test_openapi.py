"""The OpenAPI document covers every partner operation, its security and its errors."""

from __future__ import annotations

from alliance.api.partner.routes import PREFIX

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def operations(spec):  # type: ignore[no-untyped-def]
    return [(path, method, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


def test_every_partner_route_is_in_the_document(app):
    spec = app.test_client().get("/openapi.json").get_json()
    documented = {(path.replace("{", "<").replace("}", ">"), method.upper()) for path, method, _ in operations(spec)}
    routed = {(rule.rule, method) for rule in app.url_map.iter_rules() if rule.rule.startswith(PREFIX)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed and routed == documented


def test_every_partner_operation_states_its_security_and_problem_responses(app):
    spec = app.test_client().get("/openapi.json").get_json()
    assert "rfc9421" in spec["components"]["securitySchemes"]
    for path, method, operation in operations(spec):
        assert operation["security"] == [{"rfc9421": []}], (method, path)
        assert "401" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
        if method == "post":
            assert any(parameter["name"] == "Idempotency-Key" and parameter["required"]
                       for parameter in operation["parameters"]), path


def test_docs_page_lists_every_operation_without_javascript(app):
    spec = app.test_client().get("/openapi.json").get_json()
    page = app.test_client().get("/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert "<script" not in html
    for path, method, _ in operations(spec):
        assert f"<code>{path}</code>" in html
