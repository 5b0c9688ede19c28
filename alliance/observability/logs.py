"""Structured logs: one JSON object per line, through the standard ``logging`` module.

``python-json-logger`` formats the records; the hub only says which fields each kind
of record carries. Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``; a request's line adds ``request_id``, ``partner``, ``key_id``, ``route``,
``method``, ``status`` and ``duration_ms``; a job run's adds ``job``, ``holder``,
``outcome``, ``done`` and ``duration_ms``; a CLI command's adds ``command``, ``outcome``
and ``duration_ms``.

What is never logged: request bodies, query strings, the path a client sent (the
route is Flask's URL rule, so ``/partner/v1/redemptions/<hold_id>/capture``, not the
hold), headers other than the request id, SQL parameters (engines hide them from
error messages) and CLI arguments. A client's ``X-Request-Id`` is taken only when it
looks like an identifier (see ``accepted_request_id``).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "alliance"
# 8-128 characters of letters, digits and ._:- with at least one letter: a UUID, a
# ULID, a trace id. Not digits only, so that a card number sent as a request id is
# not written to the logs.
_REQUEST_ID = re.compile(r"(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9._:-]{8,128}")

REQUEST_LOGGER = logging.getLogger("alliance.request")
JOB_LOGGER = logging.getLogger("alliance.job")
COMMAND_LOGGER = logging.getLogger("alliance.command")


def configure_logging(log_format: str, *, stream: TextIO | None = None) -> None:
    """Send the hub's records (INFO and up) to standard error, one JSON object per line or as text.

    Idempotent: the hub's handler on the root logger is replaced, never doubled, so
    several apps in one process (tests, ``alliance`` commands) share one.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    # No line carries the thread or the process, so records skip collecting them
    # (the logging HOWTO's "Optimization": a request line costs a few microseconds less).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # The development server's own access lines carry the full path and query; the
    # hub's request line replaces them.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO on every command; its migrations stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Authlib writes every bearer token it issues into a DEBUG record; its warnings stay.
    logging.getLogger("authlib").setLevel(logging.WARNING)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``ALLIANCE_LOG_FORMAT``: JSON objects, or text for a person at a terminal."""
    if log_format == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"})


def accepted_request_id(value: str | None) -> str | None:
    """A client's ``X-Request-Id`` if it looks like an identifier, else None (the hub makes one)."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return None
