"""Hardening of every request and reply that the routes need not think about.

Requests: a limit on a JSON body's nesting, which the size limit alone does not give.
Python's JSON parser recurses once per nesting level, so a small body of ten thousand
``[`` exhausts the interpreter's stack and raises ``RecursionError``, which is not a
parse error to Flask or webargs and would end as a 500. No hub request nests more than
a few levels, so a JSON body nested deeper than ``MAX_JSON_DEPTH`` is refused before
anything parses it. A JSON string holding NUL (``\\u0000``) is refused too: no field
may contain it and PostgreSQL text cannot store it (a 500 before this check); so is a
NUL in the path (no resource's address holds one: 404), in a query parameter or in a
submitted form (422).

Replies: API answers (JSON, problem+json, signed statements) carry
``X-Content-Type-Options: nosniff`` so no browser reinterprets them, and
``Cache-Control: no-store`` because they hold balances, personal data and tokens that
no shared cache may keep. The hub sends no CORS headers at all: no browser page on
another origin may call the APIs.
"""

from __future__ import annotations

import re
from itertools import accumulate

from flask import Flask, Response, request
from werkzeug.datastructures import MultiDict

from alliance.domain.errors import AllianceError

MAX_JSON_DEPTH = 32
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
API_PREFIXES = ("/partner/", "/back-office/", "/oauth/", "/settlement/")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")


# A JSON ``\u0000`` escape (not preceded by an odd run of backslashes, which would make it literal text).
_JSON_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class NulCharacterInBody(AllianceError):
    """A JSON string holding a NUL character, which no field may contain and PostgreSQL text cannot store."""

    code = "validation_failed"
    http_status = 422
    title = "Invalid input"


class NulCharacterInAddress(AllianceError):
    """A path holding a NUL character: no resource of the hub has such an address."""

    code = "not_found"
    http_status = 404
    title = "Not Found"


class BodyTooDeeplyNested(AllianceError):
    """A JSON body nested deeper than any request of the hub needs."""

    code = "body_too_deeply_nested"
    http_status = 400
    title = "Body nested too deeply"


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (brackets inside strings do not count)."""
    if body.count(b"[") + body.count(b"{") <= 1:
        return body.count(b"[") + body.count(b"{")
    brackets = _JSON_STRING.sub(b"", body).translate(None, delete=_NOT_A_BRACKET)
    return max(accumulate(1 if bracket in b"[{" else -1 for bracket in brackets), default=0)


def _refuse_nul_characters() -> None:
    if "\x00" in request.path:
        raise NulCharacterInAddress("no address on this hub contains the NUL character")
    for source, values in (("query", request.args),
                           ("form", request.form if request.mimetype in FORM_TYPES else MultiDict())):
        if any("\x00" in name or "\x00" in value for name, value in values.items(multi=True)):
            raise NulCharacterInBody(f"{source} parameters may not contain the NUL character",
                                     fields={source: ["contains the NUL character"]})


def _refuse_hostile_json() -> None:
    if not request.is_json:
        return
    body = request.get_data(cache=True)
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise BodyTooDeeplyNested(f"JSON bodies may nest at most {MAX_JSON_DEPTH} levels of arrays and objects")
    if b"u0000" in body and _JSON_NUL_ESCAPE.search(body):
        raise NulCharacterInBody("text fields may not contain the NUL character (\\u0000)",
                                 fields={"body": ["contains \\u0000"]})


def _api_reply_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith(API_PREFIXES):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    """Check every JSON body's nesting before a view parses it; harden every reply's headers."""
    app.before_request(_refuse_nul_characters)
    app.before_request(_refuse_hostile_json)
    app.after_request(_api_reply_headers)
