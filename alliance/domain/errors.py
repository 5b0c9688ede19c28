"""One error family for the whole hub.

Every failure a caller can cause is an ``AllianceError`` with a stable machine ``code``
and the HTTP status the API answers with. The web layer turns them into RFC 9457
problem+json; the CLI prints their ``detail`` and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AllianceError(Exception):
    """Base of every expected failure; carries a stable code and an HTTP status.

    ``kept``: what the refusal itself must leave in the database although the work it
    refused is taken back (a risk decision's record, say), written by whoever opened
    the transaction after rolling it back (``alliance.storage.unit_of_work.keep_record``).
    """

    code = "alliance_error"
    http_status = 400
    title = "Request failed"
    kept: Callable[[Any], None] | None = None
    # Members the problem document carries beside the standard ones (RFC 9457 extension members).
    extensions: dict[str, object] = {}

    def __init__(self, detail: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or {}


class ValidationFailed(AllianceError):
    """Input that does not have the form the operation needs."""

    code = "validation_failed"
    http_status = 422
    title = "Invalid input"


class NotFound(AllianceError):
    """The object does not exist, or is not visible to the caller."""

    code = "not_found"
    http_status = 404
    title = "Not found"


class Conflict(AllianceError):
    """The operation clashes with the current state of an object."""

    code = "conflict"
    http_status = 409
    title = "Conflict"


class UnbalancedPosting(AllianceError):
    """A journal transaction whose entries do not sum to zero, or are malformed."""

    code = "unbalanced_posting"
    http_status = 422
    title = "Unbalanced journal transaction"


class InsufficientPoints(AllianceError):
    """A debit that would take a member's points below zero."""

    code = "insufficient_points"
    http_status = 422
    title = "Insufficient points"


class InvalidState(AllianceError):
    """An operation not allowed in the object's current state (a captured hold, say)."""

    code = "invalid_state"
    http_status = 409
    title = "Invalid state"


class ConfigurationError(AllianceError):
    """Settings that the hub cannot start with."""

    code = "configuration_error"
    http_status = 500
    title = "Configuration error"
