"""One error family for everything the SDK can report.

Every error carries what the hub said (``http_status``, ``code``, ``request_id``,
``detail``, ``field_errors``) and ``retry_safe``: whether sending the same operation
again, under the same idempotency key, may still succeed. A till can branch on the
class, log the ``request_id`` for the operator, and show ``detail`` to the cashier.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from partners_sdk.results import Purchase

# The one 409 code that means "try again shortly" rather than "this clashes".
IN_FLIGHT_CODE = "idempotency_key_in_flight"
# Signatures refused for their time usually mean a wrong terminal clock; the SDK says so.
CLOCK_CODES = frozenset({"signature_from_future", "signature_expired"})
MEMBER_CODES = frozenset({"member_not_verified", "pin_locked", "pin_reset_required", "card_not_usable"})


class AllianceError(Exception):
    """Base of every error the SDK raises."""

    default_code = "alliance_error"

    def __init__(
        self,
        detail: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        field_errors: Mapping[str, list[str]] | None = None,
        retry_safe: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.http_status = http_status
        self.code = code or self.default_code
        self.request_id = request_id
        self.field_errors: dict[str, list[str]] = {
            name: list(messages) for name, messages in (field_errors or {}).items()
        }
        self.retry_safe = retry_safe
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        status = f"{self.http_status} " if self.http_status is not None else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        return f"{status}{self.code}: {self.detail}{request}"

    def to_dict(self) -> dict[str, Any]:
        """The error as plain JSON-ready values, for logs and the CLI."""
        return {
            "error": type(self).__name__, "http_status": self.http_status, "code": self.code,
            "detail": self.detail, "request_id": self.request_id, "field_errors": self.field_errors,
            "retry_safe": self.retry_safe,
        }


class AuthenticationError(AllianceError):
    """401: the hub refused the request's signature or key."""

    default_code = "authentication_failed"


class ForbiddenError(AllianceError):
    """403: the key may not act this way (for example for another terminal)."""

    default_code = "forbidden"


class MemberVerificationError(ForbiddenError):
    """The member is not verified: a wrong PIN or code, a PIN locked or to be reset (403), or an unusable card (409)."""

    default_code = "member_not_verified"


class DeclinedError(ForbiddenError):
    """403 ``declined``: the alliance's risk controls refused the operation; nothing was recorded.

    ``decision`` is the reference the member can quote to the alliance's customer service.
    Retrying does not help; the reply says nothing about which limit was reached, by design.
    """

    default_code = "declined"
    decision: str | None = None


class NotFoundError(AllianceError):
    """404: no such purchase or redemption for this partner."""

    default_code = "not_found"


class ConflictError(AllianceError):
    """409: the operation clashes with what the hub already has (a receipt already reported, say)."""

    default_code = "conflict"


class ReceiptAlreadyReportedError(ConflictError):
    """409 ``receipt_already_reported``: this partner already reported a purchase under this receipt id.

    ``existing_purchase`` is that purchase as the hub holds it, fetched by
    ``report_purchase`` as soon as the hub refused; it is None only when the hub could
    not be asked within the call's deadline (then ``client.get_purchase(receipt_id)``).
    """

    default_code = "receipt_already_reported"
    existing_purchase: "Purchase | None" = None


class InvalidRequestError(AllianceError):
    """400, 413 or 422: the request itself is wrong; sending it again cannot help."""

    default_code = "validation_failed"


class InsufficientPointsError(InvalidRequestError):
    """422: the member does not have the points to redeem."""

    default_code = "insufficient_points"


class RateLimitedError(AllianceError):
    """429: the hub asks the till to slow down."""

    default_code = "rate_limited"


class ServerError(AllianceError):
    """5xx: the hub failed; the same operation may be retried under the same key."""

    default_code = "server_error"


class HubUnreachable(AllianceError):
    """No reply from the hub at all: connection refused or dropped, or a timeout."""

    default_code = "hub_unreachable"


class UnexpectedReplyError(AllianceError):
    """The hub answered with something this SDK cannot read."""

    default_code = "unexpected_reply"


class QueueFullError(AllianceError):
    """The offline queue holds as many operations as it is allowed to."""

    default_code = "queue_full"


class ConfigurationError(AllianceError):
    """The client is set up wrongly (a missing key file, a bad base URL)."""

    default_code = "configuration_error"


def error_from_reply(status: int, headers: Mapping[str, str], problem: Mapping[str, Any] | None) -> AllianceError:
    """The typed error for a non-2xx reply and its problem+json body (if it had one)."""
    problem = problem or {}
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else None
    request_id = problem.get("request_id") if isinstance(problem.get("request_id"), str) else None
    request_id = request_id or headers.get("x-request-id")
    field_errors = _field_errors(problem.get("errors"))
    error_class = _error_class(status, code)
    retry_safe = status >= 500 or status == 429 or (status == 409 and code == IN_FLIGHT_CODE)
    detail = detail or f"the hub answered {status}"
    if code in CLOCK_CODES and "clock" not in detail:
        detail += "; check the terminal's clock"
    error = error_class(detail, http_status=status, code=code or error_class.default_code, request_id=request_id,
                        field_errors=field_errors, retry_safe=retry_safe,
                        retry_after_s=parse_retry_after_s(headers.get("retry-after")))
    if isinstance(error, DeclinedError) and isinstance(problem.get("decision"), str):
        error.decision = problem["decision"]
    return error


def _error_class(status: int, code: str | None) -> type[AllianceError]:
    if status == 401:
        return AuthenticationError
    if status == 403 and code == DeclinedError.default_code:
        return DeclinedError
    if status == 403:
        return MemberVerificationError if code in MEMBER_CODES else ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409 and code == ReceiptAlreadyReportedError.default_code:
        return ReceiptAlreadyReportedError
    if status == 409:
        return MemberVerificationError if code in MEMBER_CODES else ConflictError
    if status == 422 and code == "insufficient_points":
        return InsufficientPointsError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return UnexpectedReplyError


def _field_errors(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    return {str(name): [str(message) for message in messages] if isinstance(messages, list) else [str(messages)]
            for name, messages in raw.items()}


def parse_retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())
