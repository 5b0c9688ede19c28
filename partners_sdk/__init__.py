"""The point-of-sale client merchants embed; it imports nothing from the hub's packages.

    client = AllianceClient(base_url, key_id, load_private_key("till.pem"), queue="pos-queue.sqlite3")
    purchase = client.report_purchase(receipt_id=..., card_number=..., amount_minor=..., currency="EUR")
"""

from partners_sdk.client import AllianceClient, StatementSummary
from partners_sdk.drainer import Drainer
from partners_sdk.errors import (
    AllianceError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    DeclinedError,
    ForbiddenError,
    HubUnreachable,
    InsufficientPointsError,
    InvalidRequestError,
    MemberVerificationError,
    NotFoundError,
    QueueFullError,
    RateLimitedError,
    ReceiptAlreadyReportedError,
    ServerError,
    UnexpectedReplyError,
)
from partners_sdk.keys import generate_key_pair, load_private_key, public_key_pem, write_private_key
from partners_sdk.offline_queue import DeadLetter, OfflineQueue, PendingOperation
from partners_sdk.payloads import PurchaseReport
from partners_sdk.results import (
    Balance,
    BatchItemResult,
    BatchResult,
    Breakdown,
    CampaignPoints,
    Event,
    EventAward,
    FlushReport,
    Points,
    Problem,
    Purchase,
    PurchaseRefund,
    Queued,
    Redemption,
    Reward,
    RewardOrder,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from partners_sdk.retry import RetryPolicy
from partners_sdk.signing import RequestSigner
from partners_sdk.statements import StatementNotAuthentic, public_key_from_raw, verify_statement
from partners_sdk.transport import HttpClientTransport, Transport, TransportError
from partners_sdk.webhooks import (
    WebhookDeduplicator,
    WebhookEvent,
    WebhookVerificationError,
    verify_webhook,
)

__version__ = "0.1.0"

__all__ = [
    "AllianceClient", "AllianceError", "AuthenticationError", "Balance", "BatchItemResult", "BatchResult",
    "Breakdown", "CampaignPoints", "ConfigurationError", "ConflictError", "DeadLetter", "DeclinedError", "Drainer",
    "Event",
    "EventAward", "FlushReport",
    "ForbiddenError", "HttpClientTransport", "HubUnreachable", "InsufficientPointsError", "InvalidRequestError",
    "MemberVerificationError", "NotFoundError", "OfflineQueue", "PendingOperation", "Points", "Problem", "Purchase",
    "PurchaseRefund", "PurchaseReport", "QueueFullError", "Queued", "RateLimitedError", "ReceiptAlreadyReportedError",
    "Redemption", "Reward", "RewardOrder", "WebhookAttempt", "WebhookDelivery", "WebhookEndpoint",
    "RequestSigner", "RetryPolicy", "ServerError", "StatementNotAuthentic", "StatementSummary", "Transport",
    "TransportError", "UnexpectedReplyError", "public_key_from_raw", "verify_statement",
    "WebhookDeduplicator", "WebhookEvent", "WebhookVerificationError", "verify_webhook",
    "generate_key_pair", "load_private_key", "public_key_pem", "write_private_key",
]
