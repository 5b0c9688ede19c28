"""Every HTTP failure is RFC 9457 problem+json with a request id, and a 500 leaks nothing."""

from __future__ import annotations

from flask import request

from alliance.api.errors import PROBLEM_CONTENT_TYPE


def test_health_reports_the_database(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    assert response.headers["X-Request-Id"]


def test_unknown_route_is_a_problem_document(app):
    response = app.test_client().get("/no/such/route")
    assert response.status_code == 404
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body = response.get_json()
    assert body["status"] == 404 and body["code"] == "not_found"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert set(body) >= {"type", "title", "status", "detail", "code", "request_id"}


def test_wrong_method_is_a_problem_document(app):
    response = app.test_client().delete("/healthz")
    assert response.status_code == 405
    assert response.get_json()["code"] == "method_not_allowed"


def test_oversized_body_is_refused_with_413(app):
    @app.post("/echo-length")
    def echo_length():  # type: ignore[no-untyped-def]
        return {"bytes": len(request.get_data())}

    limit = app.config["MAX_CONTENT_LENGTH"]
    client = app.test_client()
    assert client.post("/echo-length", data=b"x" * limit).get_json() == {"bytes": limit}
    response = client.post("/echo-length", data=b"x" * (limit + 1))
    assert response.status_code == 413
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert response.get_json()["code"] == "request_entity_too_large"


def test_unexpected_errors_are_a_bare_500(app):
    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error"
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)
