"""One handler turning every failure into RFC 9457 problem+json.

Expected failures are ``AllianceError``s and carry their own code and status; HTTP
errors raised by Flask itself (404, 405, 413) and by request parsing (422 with per-field
messages) keep their status; a database that cannot serve right now (a failover, a
restart, a demoted primary: see ``alliance.db.database_unavailable``) is a 503
``database_unavailable`` with ``Retry-After``, safe to retry under the same
Idempotency-Key; anything else is a 500 whose body names only the request id, never
the exception.
"""

from __future__ import annotations

import logging
import uuid
from typing import SupportsInt, cast

from flask import Flask, Response, g, json, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from alliance.db import database_unavailable
from alliance.domain.errors import AllianceError
from alliance.observability.logs import accepted_request_id
from alliance.observability.metrics import UNMATCHED_ROUTE

PROBLEM_CONTENT_TYPE = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-Id"
PROBLEM_TYPE_BASE = "https://alliance.invalid/problems/"
logger = logging.getLogger(__name__)


class DatabaseUnavailable(AllianceError):
    """The database cannot serve right now; nothing was kept, and the same request may be sent again."""

    code = "database_unavailable"
    http_status = 503
    title = "Database unavailable"
    # A failover takes seconds; the pool replaces its connections on the next request.
    retry_after_s = 1


def problem_document(
    *, status: int, code: str, title: str, detail: str, fields: dict[str, list[str]] | None = None
) -> dict[str, object]:
    """The problem+json body, with the stable code and this request's id."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": g.get("request_id"),
    }
    if fields:
        body["errors"] = fields
    return body


def problem_body(error: AllianceError) -> dict[str, object]:
    """The problem document of an expected failure, with the error's extension members (RFC 9457 §3.2), if any."""
    body = problem_document(status=error.http_status, code=error.code, title=error.title, detail=error.detail,
                            fields=error.fields)
    body.update(error.extensions)
    return body


def problem_document_response(body: dict[str, object]) -> Response:
    """The problem+json response carrying ``body`` (a ``problem_document``, with any extension members)."""
    g.problem_code = body["code"]
    # ``problem_document`` puts the status there as an int; the body's values are of several types.
    status = int(cast(SupportsInt, body["status"]))
    return Response(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)


def _assign_request_id() -> None:
    g.request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER)) or uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    if g.get("request_id"):
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


def problem_response(error: AllianceError) -> Response:
    """The problem+json response of an expected failure (with its Retry-After, if any)."""
    g.problem_partner_id = getattr(error, "partner_id", None)
    response = problem_document_response(problem_body(error))
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def _field_messages(error: HTTPException) -> dict[str, list[str]]:
    """Per-field messages of a request-parsing failure, by field name."""
    messages = (getattr(error, "data", None) or {}).get("messages") or {}
    fields: dict[str, list[str]] = {}
    for location_messages in messages.values():
        if isinstance(location_messages, dict):
            for field, field_messages in location_messages.items():
                fields[str(field)] = _flatten(field_messages)
    return fields


def _flatten(messages: object) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, list):
        return [text for item in messages for text in _flatten(item)]
    if isinstance(messages, dict):
        return [f"{key}: {text}" for key, value in messages.items() for text in _flatten(value)]
    return [str(messages)]


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    fields = _field_messages(error) if status == 422 else {}
    code = "validation_failed" if fields else (error.name or "http_error").lower().replace(" ", "_")
    detail = "the request body does not have the expected form" if fields else (error.description or error.name)
    response = problem_document_response(problem_document(status=status, code=code, title=error.name, detail=detail,
                                                  fields=fields))
    if status == 405 and error.get_response().headers.get("Allow"):
        response.headers["Allow"] = error.get_response().headers["Allow"]
    return response


def _unexpected_error(error: Exception) -> Response:
    logger.exception("unexpected error in %s %s (request %s)", request.method, _route(), g.get("request_id"))
    return problem_document_response(problem_document(
        status=500, code="internal_error", title="Internal Server Error",
        detail="The hub could not complete the request; quote the request id to the operator.",
    ))


def database_error_response(error: DBAPIError) -> Response:
    """The reply to a database error: the retry-safe 503 when the database cannot serve, else a 500."""
    if not database_unavailable(error):
        return _unexpected_error(error)
    logger.warning("database unavailable in %s %s (request %s): %s: %s", request.method, _route(),
                   g.get("request_id"), error.orig.__class__.__name__, " ".join(str(error.orig).split())[:200])
    return problem_response(DatabaseUnavailable("the database cannot serve right now; nothing was kept, "
                                                "send the same request again"))


def _route() -> str:
    """The request's URL rule, not its path: a path may carry what the logs must not
    (see alliance.observability.logs)."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def init_app(app: Flask) -> None:
    """Register the request id hooks and the error handlers (after any extension's own)."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.register_error_handler(AllianceError, problem_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, database_error_response)
    app.register_error_handler(Exception, _unexpected_error)
