"""PINs under keyed hashes at the till: scrypt hashes upgraded on use, rotation, a key gone, the CLI.

Each test runs on PostgreSQL and on SQLite. A rotated or changed ring is a second hub on
the same database with other ``pin_keys`` settings, as a redeployed hub would be.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import ConfigurationError
from alliance.domain.pin_hashing import PinKeyRing, generate_pin_key_ring_config, with_new_active_pin_key
from alliance.extensions import hub_state
from alliance.models import Card
from alliance.services.member_verification import MAX_PIN_FAILURES, check_pin, set_pin
from tests.back_office_support import other_hub, run_cli
from tests.factories import make_member, make_member_with_pin, make_signing_partner
from tests.http_server import fund_member, wall_clock_partner_time
from tests.partner_client import SignedTestClient

BALANCE = "/partner/v1/balance-inquiries"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"
WRONG_PIN = "1357"


@pytest.fixture
def till(app):  # type: ignore[no-untyped-def]
    """A partner's till and a member with 300 points and a PIN under the hub's active key."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=300)
    return SimpleNamespace(app=app, hub=hub, partner=partner, card_number=member.card_number)


def inquire(app, till, pin: str = PIN):  # type: ignore[no-untyped-def]
    """A balance inquiry at ``till``'s partner, sent to ``app`` (the first hub or another one)."""
    return SignedTestClient(app, till.partner).post(BALANCE, {"card_number": till.card_number, "pin": pin})


def stored_pin(till) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """The card's stored PIN hash and failure count, read straight from the table."""
    with till.hub.engine.connect() as connection:
        row = connection.execute(
            select(Card.pin_hash, Card.failed_pin_attempts).where(Card.card_number == till.card_number)).one()
    return row.pin_hash, row.failed_pin_attempts


def store_pin_hash(till, pin_hash: str, failures: int = 0) -> None:  # type: ignore[no-untyped-def]
    with till.hub.engine.begin() as connection:
        connection.execute(update(Card).where(Card.card_number == till.card_number)
                           .values(pin_hash=pin_hash, failed_pin_attempts=failures))


def scrypt_hash(pin: str) -> str:
    """A PIN hash exactly as the hub wrote them before keyed hashing."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${b64encode(salt).decode()}${b64encode(digest).decode()}"


def test_a_new_pin_is_stored_as_a_keyed_hash_under_the_active_key(till):
    pin_hash, failures = stored_pin(till)
    assert pin_hash.startswith(f"hmac-sha256${till.hub.pin_key_ring.active_key_id}$")
    assert PIN not in pin_hash and failures == 0
    assert inquire(till.app, till).status == 200


def test_a_card_still_under_scrypt_verifies_and_is_rehashed_in_the_same_transaction(till):
    legacy = scrypt_hash(PIN)
    store_pin_hash(till, legacy, failures=2)

    reply = inquire(till.app, till)

    assert (reply.status, reply.body["points_available"]) == (200, 300)
    upgraded, failures = stored_pin(till)
    assert upgraded.startswith(f"hmac-sha256${till.hub.pin_key_ring.active_key_id}$") and failures == 0
    assert till.hub.pin_key_ring.verify(PIN, upgraded)
    # Once under the active key, a right PIN writes nothing more.
    assert inquire(till.app, till).status == 200
    assert stored_pin(till) == (upgraded, 0)


def test_a_wrong_pin_against_a_scrypt_hash_counts_and_leaves_the_hash_alone(till):
    legacy = scrypt_hash(PIN)
    store_pin_hash(till, legacy)

    reply = inquire(till.app, till, WRONG_PIN)

    assert (reply.status, reply.body["code"]) == (403, "member_not_verified")
    assert stored_pin(till) == (legacy, 1)


def test_wrong_pins_count_across_refusals_and_the_fifth_locks_the_card(till):
    for attempt in range(1, MAX_PIN_FAILURES):
        reply = inquire(till.app, till, WRONG_PIN)
        assert (reply.status, reply.body["code"]) == (403, "member_not_verified")
        assert stored_pin(till)[1] == attempt
    locking = inquire(till.app, till, WRONG_PIN)
    right_but_locked = inquire(till.app, till, PIN)

    assert (locking.status, locking.body["code"]) == (403, "pin_locked")
    assert (right_but_locked.status, right_but_locked.body["code"]) == (403, "pin_locked")
    assert stored_pin(till)[1] == MAX_PIN_FAILURES
    assert run_cli(till.app, "members", "set-pin", "--card", till.card_number, "--pin", PIN).exit_code == 0
    assert inquire(till.app, till).status == 200


def test_after_rotation_an_old_hash_verifies_and_moves_to_the_new_key(till, tmp_path):
    old_hash, _ = stored_pin(till)
    rotated = with_new_active_pin_key(till.hub.pin_key_ring.to_config(), "p2")

    with other_hub(till.hub, tmp_path / "rotated", pin_keys=rotated) as rotated_app:
        wrong = inquire(rotated_app, till, WRONG_PIN)
        assert (wrong.status, wrong.body["code"]) == (403, "member_not_verified")
        assert stored_pin(till) == (old_hash, 1)
        reply = inquire(rotated_app, till)
        assert reply.status == 200

    new_hash, failures = stored_pin(till)
    assert new_hash.startswith("hmac-sha256$p2$") and failures == 0
    only_new_key = PinKeyRing([key for key in PinKeyRing.from_config(rotated).keys if key.key_id == "p2"], "p2")
    with other_hub(till.hub, tmp_path / "old-key-dropped", pin_keys=only_new_key.to_config()) as new_app:
        assert inquire(new_app, till).status == 200


def test_a_pin_under_a_key_gone_from_the_ring_is_refused_without_counting_and_a_reset_cures_it(till, tmp_path):
    old_hash, _ = stored_pin(till)
    other_ring = generate_pin_key_ring_config("p2")

    with other_hub(till.hub, tmp_path / "other-ring", pin_keys=other_ring) as other_app:
        replies = [inquire(other_app, till, pin) for pin in [PIN, WRONG_PIN] * MAX_PIN_FAILURES]
        authorize = SignedTestClient(other_app, till.partner).post(
            REDEMPTIONS, {"reference": "red-1", "points": 10, "card_number": till.card_number, "pin": PIN})

        for reply in [*replies, authorize]:
            assert (reply.status, reply.body["code"]) == (403, "pin_reset_required")
            assert "customer service must set a new PIN" in reply.body["detail"]
            assert till.hub.pin_key_ring.active_key_id not in reply.body["detail"]
        assert stored_pin(till) == (old_hash, 0)

        reset = run_cli(other_app, "members", "set-pin", "--card", till.card_number, "--pin", PIN)
        assert reset.exit_code == 0, reset.output
        assert stored_pin(till)[0].startswith("hmac-sha256$p2$")
        assert inquire(other_app, till).status == 200
    # The first hub, still on the old ring, is now the one that cannot check the PIN.
    assert inquire(till.app, till).body["code"] == "pin_reset_required"


def test_a_stored_hash_the_hub_cannot_read_is_refused_without_counting(till):
    store_pin_hash(till, "md5$5f4dcc3b5aa765d61d8327deb882cf99")
    reply = inquire(till.app, till)
    assert (reply.status, reply.body["code"]) == (403, "pin_reset_required")
    assert stored_pin(till)[1] == 0


def test_pin_commands_make_rings_rotate_them_and_count_the_cards_per_key(till, tmp_path):
    first_key_id = till.hub.pin_key_ring.active_key_id
    made = run_cli(till.app, "pins", "new-key-ring")
    assert made.exit_code == 0
    assert PinKeyRing.from_config(made.output.strip()).active_key_id.startswith("pin-")
    named = run_cli(till.app, "pins", "new-key-ring", "--key-id", "2026-11")
    assert PinKeyRing.from_config(named.output.strip()).active_key_id == "2026-11"
    bad_id = run_cli(till.app, "pins", "new-key-ring", "--key-id", "a$b")
    assert bad_id.exit_code == 1 and "a key id must be 1 to 32 of" in bad_id.output
    added = run_cli(till.app, "pins", "add-key", "--key-id", "p2")
    assert added.exit_code == 0
    ring = PinKeyRing.from_config(added.output.strip())
    assert ring.active_key_id == "p2" and ring.keys[0] == till.hub.pin_key_ring.keys[0]
    refused = run_cli(till.app, "pins", "add-key", "--key-id", first_key_id)
    assert refused.exit_code == 1 and f"key id {first_key_id} is already in the ring" in refused.output

    scrypt_card = make_member(till.hub, now=wall_clock_partner_time()).card_number
    gone_card = make_member(till.hub, now=wall_clock_partner_time()).card_number
    with till.hub.engine.begin() as connection:
        connection.execute(update(Card).where(Card.card_number == scrypt_card).values(pin_hash=scrypt_hash(PIN)))
        connection.execute(update(Card).where(Card.card_number == gone_card)
                           .values(pin_hash="hmac-sha256$p0$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43))
    with other_hub(till.hub, tmp_path / "rotated", pin_keys=ring.to_config()) as rotated_app:
        usage = run_cli(rotated_app, "pins", "key-usage")

    assert usage.exit_code == 0, usage.output
    assert usage.output.splitlines() == [
        f"key {first_key_id}: 1 cards",
        "key p2 (active): 0 cards",
        "scrypt, from before keyed hashing (rehashed when next used): 1 cards",
        "under a key not in the ring, or damaged (need a PIN reset): 1 cards",
    ]


def test_a_session_that_carries_no_pin_key_ring_is_refused_clearly(till):
    with Session(till.hub.engine) as session:
        with pytest.raises(ConfigurationError, match="carries no PIN key ring"):
            set_pin(session, card_number=till.card_number, pin=PIN)
        with pytest.raises(ConfigurationError, match="carries no PIN key ring"):
            check_pin(session, card_number=till.card_number, pin=PIN)


def test_two_hubs_in_one_process_each_hash_under_their_own_keys(till, tmp_path):
    other_ring = generate_pin_key_ring_config("q1")
    with other_hub(till.hub, tmp_path / "other", pin_keys=other_ring) as other_app:
        with hub_state(other_app).unit_of_work() as uow:
            set_pin(uow.session, card_number=till.card_number, pin=PIN)
            uow.commit()
        assert stored_pin(till)[0].startswith("hmac-sha256$q1$")
        with till.hub.unit_of_work() as uow:
            set_pin(uow.session, card_number=till.card_number, pin=PIN)
            uow.commit()
    assert stored_pin(till)[0].startswith(f"hmac-sha256${till.hub.pin_key_ring.active_key_id}$")
