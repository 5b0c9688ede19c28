"""The retry policy, seen through a fake transport that records every attempt."""

from __future__ import annotations

from datetime import datetime, timezone

import http_sf
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import (
    AllianceClient,
    AuthenticationError,
    ConflictError,
    HubUnreachable,
    InvalidRequestError,
    MemberVerificationError,
    NotFoundError,
    ReceiptAlreadyReportedError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from partners_sdk.retry import Pacing, send_with_retries
from tests.sdk_support import FakeTransport, RecordingSleep, json_reply, problem_reply, purchase_json

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
CARD = "6390000000000013"


def client_with(transport: FakeTransport, sleep: RecordingSleep, *, max_retries: int = 3) -> AllianceClient:
    return AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                          max_retries=max_retries, sleep=sleep, random=lambda: 0.5, clock=lambda: NOW)


def report(client: AllianceClient):  # type: ignore[no-untyped-def]
    return client.report_purchase(receipt_id="r-1", card_number=CARD, amount_minor=15_000, currency="EUR")


def nonce_of(headers: dict[str, str]) -> str:
    (_, (_, parameters)), = http_sf.parse(headers["Signature-Input"].encode(), tltype="dictionary").items()
    return parameters["nonce"]


def test_every_attempt_reuses_the_idempotency_key_and_is_signed_with_a_new_nonce():
    transport = FakeTransport([ConnectionRefusedError("down"), TransportError("reset"), problem_reply(503, "busy"),
                               json_reply(201, purchase_json())])
    purchase = report(client_with(transport, RecordingSleep()))
    assert purchase.receipt_id == "r-1"
    keys = {attempt.headers["Idempotency-Key"] for attempt in transport.attempts}
    nonces = {nonce_of(attempt.headers) for attempt in transport.attempts}
    bodies = {attempt.body for attempt in transport.attempts}
    assert len(transport.attempts) == 4
    assert len(keys) == 1 and len(bodies) == 1
    assert len(nonces) == 4


def test_retry_after_is_obeyed_for_in_flight_keys_and_rate_limits():
    transport = FakeTransport([problem_reply(409, "idempotency_key_in_flight", **{"retry-after": "1"}),
                               problem_reply(429, "rate_limited", **{"retry-after": "7"}),
                               json_reply(201, purchase_json())])
    sleep = RecordingSleep()
    report(client_with(transport, sleep))
    assert sleep.calls == [1.0, 7.0]


def test_backoff_doubles_with_jitter_up_to_the_cap():
    transport = FakeTransport(default=TransportError("down"))
    sleep = RecordingSleep()
    policy = RetryPolicy(max_retries=6, initial_backoff_s=0.5, max_backoff_s=3.0)
    client = AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                            retry_policy=policy, sleep=sleep, random=lambda: 1.0)
    with pytest.raises(HubUnreachable):
        report(client)
    assert sleep.calls == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    low = RetryPolicy(initial_backoff_s=2.0, max_backoff_s=2.0)
    assert low.backoff_s(0, lambda: 0.0) == 1.0 and low.backoff_s(0, lambda: 1.0) == 2.0


def test_gives_up_after_max_retries_with_hub_unreachable():
    transport = FakeTransport(default=TransportError("connection refused"))
    sleep = RecordingSleep()
    with pytest.raises(HubUnreachable) as unreachable:
        report(client_with(transport, sleep, max_retries=2))
    assert len(transport.attempts) == 3
    assert len(sleep.calls) == 2
    assert unreachable.value.retry_safe is True
    assert unreachable.value.http_status is None
    assert "3 attempts" in unreachable.value.detail


def test_a_server_error_that_persists_ends_as_a_retry_safe_server_error():
    transport = FakeTransport(default=problem_reply(500, "internal_error"))
    with pytest.raises(ServerError) as failed:
        report(client_with(transport, RecordingSleep(), max_retries=1))
    assert len(transport.attempts) == 2
    assert failed.value.retry_safe and failed.value.http_status == 500 and failed.value.request_id == "req-1"


@pytest.mark.parametrize(("status", "code", "error_class"), [
    (401, "signature_invalid", AuthenticationError),
    (403, "member_not_verified", MemberVerificationError),
    (403, "pin_reset_required", MemberVerificationError),
    (404, "not_found", NotFoundError),
    (409, "conflict", ConflictError),
    (422, "validation_failed", InvalidRequestError),
    (413, "request_entity_too_large", InvalidRequestError),
])
def test_other_client_errors_are_never_retried(status, code, error_class):
    transport = FakeTransport([problem_reply(status, code)])
    sleep = RecordingSleep()
    with pytest.raises(error_class) as refused:
        report(client_with(transport, sleep))
    assert len(transport.attempts) == 1 and sleep.calls == []
    assert refused.value.code == code and refused.value.http_status == status
    assert refused.value.retry_safe is False


def test_a_receipt_already_reported_is_not_retried_and_brings_the_existing_purchase():
    transport = FakeTransport([problem_reply(409, "receipt_already_reported"), json_reply(200, purchase_json())])
    sleep = RecordingSleep()
    with pytest.raises(ReceiptAlreadyReportedError) as refused:
        report(client_with(transport, sleep))
    assert [(attempt.method, attempt.url) for attempt in transport.attempts] == [
        ("POST", "http://hub.test/partner/v1/purchases"), ("GET", "http://hub.test/partner/v1/purchases/r-1")]
    assert sleep.calls == [] and refused.value.retry_safe is False
    assert isinstance(refused.value, ConflictError) and refused.value.existing_purchase.points.total == 150


def test_a_retry_after_longer_than_the_ceiling_gives_up_at_once():
    transport = FakeTransport(default=problem_reply(503, "maintenance", **{"retry-after": "3600"}))
    sleep = RecordingSleep()
    with pytest.raises(ServerError) as failed:
        report(client_with(transport, sleep))
    assert len(transport.attempts) == 1 and sleep.calls == []
    assert failed.value.retry_after_s == 3600.0


def test_the_deadline_bounds_the_whole_operation():
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    attempts = []

    def attempt(time_left_s: float):  # type: ignore[no-untyped-def]
        attempts.append((clock[0], time_left_s))
        raise TransportError("down")

    policy = RetryPolicy(max_retries=10, initial_backoff_s=4.0, max_backoff_s=4.0, deadline_s=10.0)
    with pytest.raises(HubUnreachable):
        send_with_retries(attempt, policy=policy, pacing=Pacing(sleep=sleep, random=lambda: 1.0,
                                                                monotonic=lambda: clock[0]))
    # Each attempt is told how much of the deadline is left, to bound its own wait.
    assert attempts == [(0.0, 10.0), (4.0, 6.0), (8.0, 2.0)]


def test_each_attempt_waits_at_most_the_timeout_or_what_is_left_of_the_deadline():
    clock = [0.0]

    def slow_failure(attempt):  # type: ignore[no-untyped-def]
        clock[0] += attempt.timeout_s
        return TransportError("timed out")

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    transport = FakeTransport(default=slow_failure)
    client = AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                            timeout_s=3.0, deadline_s=8.0, sleep=sleep, random=lambda: 1.0)
    client._pacing.monotonic = lambda: clock[0]
    with pytest.raises(HubUnreachable) as unreachable:
        client.get_purchase("r-1")
    # 3 s, a 0.25 s wait, 3 s, a 0.5 s wait, then only the 1.25 s left of the 8 s.
    assert [attempt.timeout_s for attempt in transport.attempts] == [3.0, 3.0, 1.25]
    assert clock[0] == 8.0 and "after 3 attempts in 8.0 s" in unreachable.value.detail


def test_field_errors_and_request_id_reach_the_caller():
    body = (b'{"status":422,"code":"validation_failed","detail":"bad","request_id":"abc",'
            b'"errors":{"currency":["must be EUR"]}}')
    transport = FakeTransport([(422, {"content-type": "application/problem+json"}, body)])
    with pytest.raises(InvalidRequestError) as refused:
        report(client_with(transport, RecordingSleep()))
    assert refused.value.field_errors == {"currency": ["must be EUR"]}
    assert refused.value.request_id == "abc"


def test_policy_limits_are_enforced():
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=11)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff_s=5.0, max_backoff_s=1.0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline_s=0)
