"""One handler turning every failure into RFC 9457 problem+json.

Expected failures are ``AllianceError``s and carry their own code and status; HTTP
errors raised by Flask itself (404, 405, 413) keep their status; anything else is a
500 whose body names only the request id, never the exception.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException

from alliance.domain.errors import AllianceError

PROBLEM_CONTENT_TYPE = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-Id"
PROBLEM_TYPE_BASE = "https://alliance.invalid/problems/"
logger = logging.getLogger(__name__)


def problem_response(
    *, status: int, code: str, title: str, detail: str, fields: dict[str, list[str]] | None = None
) -> Response:
    """A problem+json response carrying the request id."""
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": g.get("request_id"),
    }
    if fields:
        body["errors"] = fields
    return Response(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)


def _assign_request_id() -> None:
    g.request_id = uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    if g.get("request_id"):
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


def _alliance_error(error: AllianceError) -> Response:
    return problem_response(
        status=error.http_status, code=error.code, title=error.title, detail=error.detail, fields=error.fields
    )


def _http_error(error: HTTPException) -> Response:
    code = (error.name or "http_error").lower().replace(" ", "_")
    return problem_response(
        status=error.code or 500, code=code, title=error.name, detail=error.description or error.name
    )


def _unexpected_error(error: Exception) -> Response:
    logger.exception("unexpected error in %s %s (request %s)", request.method, request.path, g.get("request_id"))
    return problem_response(
        status=500, code="internal_error", title="Internal Server Error",
        detail="The hub could not complete the request; quote the request id to the operator.",
    )


def init_app(app: Flask) -> None:
    """Register the request id hooks and the error handlers."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.register_error_handler(AllianceError, _alliance_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
