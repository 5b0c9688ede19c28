"""A purchase's first read rides in its idempotency claim's statement, and only runs if the claim was taken.

The PostgreSQL storage adapter puts the nonce and the claim in front of the card-in-
context read (``purchases.first_read``, ``postgresql.claim_in_front_of``): one round trip
for both. The read locks the member's accounts, so it must not run for a request that
is answered from a stored reply or refused: such a request must not wait for, or take,
any member's lock.
"""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import create_engine, select, text

from alliance.domain.cards import card_number_from_sequence
from alliance.extensions import hub_state
from alliance.models import Card, LedgerAccount
from alliance.services.members import CARD_ISSUER_PREFIX
from alliance.storage import FirstRead, NonceRow
from alliance.storage.adapters import storage_for
from tests.factories import make_member, make_signing_partner
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"


def _in_thread(call):  # type: ignore[no-untyped-def]
    outcome: dict = {}  # type: ignore[type-arg]
    thread = threading.Thread(target=lambda: outcome.setdefault("reply", call()), daemon=True)
    thread.start()
    return thread, outcome


def test_a_retry_of_a_completed_purchase_is_answered_while_the_members_accounts_are_locked(pg_app):
    hub = hub_state(pg_app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member(hub, now=wall_clock_partner_time())
    client = SignedTestClient(pg_app, shop)
    report = json.dumps(purchase_payload("r-1", member.card_number)).encode()
    first = client.post(PURCHASES, report, idempotency_key="k-1")
    assert first.status == 201, first.body

    locker = create_engine(hub.engine.url)
    try:
        with locker.connect() as connection:
            member_id = connection.scalar(select(Card.member_id).where(Card.card_number == member.card_number))
            connection.execute(select(LedgerAccount.id).where(LedgerAccount.member_id == member_id)
                               .with_for_update())
            # The retry's claim finds the key completed: the read behind it does not run,
            # so the reply comes back although the member's accounts are locked.
            retry, replied = _in_thread(lambda: client.post(PURCHASES, report, idempotency_key="k-1"))
            retry.join(timeout=30)
            assert not retry.is_alive(), "the retry of a completed purchase waited for the member's lock"
            assert (replied["reply"].status, replied["reply"].headers["Idempotent-Replayed"]) == (201, "true")
            assert replied["reply"].body == first.body
            # A new purchase of the member does wait for the lock (the read runs and locks)...
            fresh, reported = _in_thread(lambda: client.post(PURCHASES, purchase_payload("r-2", member.card_number),
                                                             idempotency_key="k-2"))
            fresh.join(timeout=1)
            assert fresh.is_alive(), "a new purchase did not wait for the member's lock"
            connection.execute(text("ROLLBACK"))
        # ...and goes through once it is released.
        fresh.join(timeout=30)
        assert not fresh.is_alive()
        assert reported["reply"].status == 201, reported["reply"].body
    finally:
        locker.dispose()


def test_the_card_in_context_read_goes_with_the_claim_on_postgresql_and_alone_on_sqlite(app, monkeypatch):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member(hub, now=wall_clock_partner_time())
    client = SignedTestClient(app, shop)
    adapter = storage_for(hub.engine)
    runs: list[str] = []
    real_read = adapter.read

    def counted(session, statement, parameters):  # type: ignore[no-untyped-def]
        # ``CARD_HOLDER_IN_CONTEXT``, with the earn limits' figures joined (``purchases.first_read``).
        if "card_status" in statement.selected_columns and "risk_n0" in statement.selected_columns:
            runs.append(parameters["card_number"])
        return real_read(session, statement, parameters)

    monkeypatch.setattr(adapter, "read", counted)
    reply = client.post(PURCHASES, purchase_payload("r-1", member.card_number))
    assert reply.status == 201, reply.body
    assert reply.body["points"]["total"] > 0, reply.body
    assert runs == ([] if hub.engine.dialect.name == "postgresql" else [member.card_number])
    # An unknown card still gets its refusal, after the partner and report checks, either way.
    unknown = client.post(PURCHASES, purchase_payload("r-2", card_number_from_sequence(CARD_ISSUER_PREFIX, 987_654)))
    assert (unknown.status, unknown.body["code"]) == (404, "not_found"), unknown.body


def test_the_first_statements_bind_names_cannot_collide_with_the_claims(pg_hub):
    # A first statement whose own binds are named like the claim's: each keeps its own
    # value, because the first statement's binds are renamed into a namespace of their own.
    from sqlalchemy import bindparam, literal_column

    from alliance.services import idempotency
    from tests.factories import make_partner

    partner_id = make_partner(pg_hub, now=wall_clock_partner_time())
    first = select(literal_column("1").label("one")).where(bindparam("claim_key") == "mine",
                                                          bindparam("key_id") == "also-mine")
    nonce = NonceRow(nonce="n-collide", partner_id=partner_id, key_id="k", seen_at=wall_clock_partner_time(),
                     prune_after=wall_clock_partner_time())
    with pg_hub.unit_of_work() as uow:
        claimed = idempotency.claim(uow.session, partner_id=partner_id, key="the-claims-key", fingerprint="f" * 64,
                                    now=wall_clock_partner_time(), nonce=nonce,
                                    first=FirstRead(first, {"claim_key": "mine", "key_id": "also-mine"}))
        # The claim took its own key; the first statement saw its own values and ran.
        assert claimed.status == "in_flight" and [row.one for row in claimed.first_rows] == [1]
        stored = uow.session.execute(text("SELECT idempotency_key, status FROM idempotency_keys"
                                          " WHERE partner_id = :partner_id"), {"partner_id": partner_id}).one()
        assert (claimed.key, tuple(stored)) == ("the-claims-key", ("the-claims-key", "in_flight"))


def test_a_first_read_whose_renamed_binds_would_meet_the_claims_is_refused_when_built(monkeypatch):
    from sqlalchemy import bindparam, literal_column

    from alliance.storage import postgresql

    first = select(literal_column("1").label("one")).where(bindparam("nonce") == "x")
    assert postgresql.claim_in_front_of(first)  # renamed first_nonce: no overlap
    # With the claim's own prefix as the namespace, the renamed bind would be claim_nonce.
    monkeypatch.setattr(postgresql, "FIRST_PREFIX", "claim_")
    with pytest.raises(ValueError, match="collide"):
        postgresql.claim_in_front_of(first)
