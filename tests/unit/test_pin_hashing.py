"""PINs as keyed hashes: the stored form, verification, rotation, and PINs stored as scrypt before."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from alliance.domain.errors import ConfigurationError
from alliance.domain.pin_hashing import (
    PinKey,
    PinKeyRing,
    PinResetRequired,
    generate_pin_key_ring_config,
    generated_key_id,
    with_new_active_pin_key,
)

SECRET_ONE = bytes(range(32))
SECRET_TWO = bytes(range(100, 132))
RING_ONE = PinKeyRing([PinKey("p1", SECRET_ONE)], "p1")
RING_BOTH = PinKeyRing([PinKey("p1", SECRET_ONE), PinKey("p2", SECRET_TWO)], "p2")
RING_TWO = PinKeyRing([PinKey("p2", SECRET_TWO)], "p2")
PIN = "2468"


def scrypt_hash(pin: str, salt: bytes = b"s" * 16, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """A PIN hash as the hub wrote them before keyed hashing."""
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_hash_is_hmac_sha256_of_salt_and_pin_under_the_active_key():
    stored = RING_BOTH.hash(PIN)
    scheme, key_id, salt_text, digest_text = stored.split("$")
    salt = base64.urlsafe_b64decode(salt_text + "==")
    assert (scheme, key_id, len(salt)) == ("hmac-sha256", "p2", 16)
    expected = hmac.new(SECRET_TWO, salt + PIN.encode(), hashlib.sha256).digest()
    assert digest_text == base64url(expected)
    assert "=" not in stored and len(stored) <= 200  # the column's width


def test_the_same_pin_hashes_differently_each_time_and_both_verify():
    first, second = RING_ONE.hash(PIN), RING_ONE.hash(PIN)
    assert first != second
    assert RING_ONE.verify(PIN, first) and RING_ONE.verify(PIN, second)


@pytest.mark.parametrize("wrong", ["2469", "0000", "24680", "246", "2468 ", ""])
def test_a_wrong_pin_does_not_verify(wrong):
    assert not RING_ONE.verify(wrong, RING_ONE.hash(PIN))


def test_a_hash_under_an_older_key_verifies_and_asks_to_be_rehashed():
    old = RING_ONE.hash(PIN)
    assert RING_BOTH.verify(PIN, old)
    assert not RING_BOTH.verify("1357", old)
    assert RING_BOTH.needs_rehash(old)
    rehashed = RING_BOTH.hash(PIN)
    assert rehashed.startswith("hmac-sha256$p2$") and not RING_BOTH.needs_rehash(rehashed)
    assert RING_TWO.verify(PIN, rehashed)


def test_a_hash_under_a_key_the_ring_lacks_cannot_be_checked_right_or_wrong():
    old = RING_ONE.hash(PIN)
    for attempt in (PIN, "1357"):
        with pytest.raises(PinResetRequired, match="no longer holds") as refused:
            RING_TWO.verify(attempt, old)
        assert refused.value.code == "pin_reset_required" and refused.value.http_status == 403
        assert "p1" not in refused.value.detail


def test_a_key_with_the_same_id_but_another_secret_does_not_verify():
    impostor = PinKeyRing([PinKey("p1", SECRET_TWO)], "p1")
    assert not impostor.verify(PIN, RING_ONE.hash(PIN))


def test_scrypt_hashes_from_before_keyed_hashing_verify_and_ask_to_be_rehashed():
    legacy = scrypt_hash(PIN)
    assert RING_ONE.verify(PIN, legacy)
    assert not RING_ONE.verify("1357", legacy)
    assert RING_ONE.needs_rehash(legacy)


def test_flipping_any_character_of_a_hash_stops_the_pin_verifying():
    stored = RING_ONE.hash(PIN)
    for position in range(len("hmac-sha256$p1$"), len(stored)):
        if stored[position] == "$":
            continue
        replacement = "A" if stored[position] != "A" else "B"
        altered = stored[:position] + replacement + stored[position + 1:]
        try:
            assert not RING_ONE.verify(PIN, altered), position
        except PinResetRequired:
            pass  # a change that breaks the form (length, canonical base64) is refused instead


@pytest.mark.parametrize("stored", [
    "",
    "plain-2468",
    "bcrypt$2b$12$abc",
    "hmac-sha256$p1$c2FsdA",
    "hmac-sha256$p1$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
    "hmac-sha256$p1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43,
    "hmac-sha256$p!$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,
    "hmac-sha256$p1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43 + "$extra",
    "scrypt$16384$8$1$c2FsdA==",
    "scrypt$16384$8$1$not base64$AAAA",
    "scrypt$16383$8$1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"d" * 64).decode(),
    "scrypt$1048576$8$1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"d" * 64).decode(),
    "scrypt$16384$8$1000$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"d" * 64).decode(),
    "scrypt$16384$8$1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"d" * 4).decode(),
    "scrypt$-1$8$1$c2FsdA==$ZGlnZXN0",
])
def test_a_stored_hash_in_no_form_of_this_hub_is_refused_not_guessed_at(stored):
    with pytest.raises(PinResetRequired, match="not in a form"):
        RING_ONE.verify(PIN, stored)


def test_configuration_round_trips_in_any_order_with_whitespace_and_padding():
    padded = base64.urlsafe_b64encode(SECRET_ONE).decode()
    assert padded.endswith("=")
    text = f" p1 = {padded} ; active = p2 ;p2={base64url(SECRET_TWO)}; "
    ring = PinKeyRing.from_config(text)
    assert ring.active_key_id == "p2"
    assert [key.key_id for key in ring.keys] == ["p1", "p2"]
    assert ring.to_config() == f"active=p2;p1={base64url(SECRET_ONE)};p2={base64url(SECRET_TWO)}"
    assert PinKeyRing.from_config(ring.to_config()) == ring


def test_a_generated_configuration_is_one_fresh_256_bit_key_made_active():
    ring = PinKeyRing.from_config(generate_pin_key_ring_config())
    assert len(ring.keys) == 1 and len(ring.keys[0].secret) == 32
    assert ring.active_key_id == ring.keys[0].key_id == generated_key_id(ring.keys[0].secret)
    assert PinKeyRing.from_config(generate_pin_key_ring_config("p1")).active_key_id == "p1"


def test_generated_key_ids_name_their_secret_so_independent_rings_never_share_one():
    expected = "pin-" + hashlib.sha256(b"alliance pin key id\x00" + SECRET_ONE).hexdigest()[:12]
    assert generated_key_id(SECRET_ONE) == expected
    ids = {PinKeyRing.from_config(generate_pin_key_ring_config()).active_key_id for _ in range(50)}
    assert len(ids) == 50
    # Hashes from a ring made afresh are refused as uncheckable, never counted as wrong PINs.
    first, second = (PinKeyRing.from_config(generate_pin_key_ring_config()) for _ in range(2))
    with pytest.raises(PinResetRequired):
        second.verify(PIN, first.hash(PIN))


def test_adding_a_key_keeps_the_old_ones_for_verifying_and_makes_the_new_one_active():
    rotated = PinKeyRing.from_config(with_new_active_pin_key(RING_ONE.to_config(), "p2"))
    assert rotated.active_key_id == "p2"
    assert [key.key_id for key in rotated.keys] == ["p1", "p2"]
    assert rotated.keys[0].secret == SECRET_ONE and len(rotated.keys[1].secret) == 32
    assert rotated.verify(PIN, RING_ONE.hash(PIN))
    with pytest.raises(ConfigurationError, match="p1 is already in the ring"):
        with_new_active_pin_key(RING_ONE.to_config(), "p1")
    derived = PinKeyRing.from_config(with_new_active_pin_key(RING_ONE.to_config()))
    assert derived.active_key_id == generated_key_id(derived.keys[1].secret)


SECRET_TEXT = base64url(SECRET_ONE)


@pytest.mark.parametrize(("config", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    (f"active=p1;p1{SECRET_TEXT}", "segment 2 has no '='"),
    (f"p1={SECRET_TEXT}", "'active' is missing"),
    (f"active=p1;active=p1;p1={SECRET_TEXT}", "'active' appears more than once"),
    (f"active=p 1;p1={SECRET_TEXT}", "'active' is not a valid key id"),
    (f"active=p9;p1={SECRET_TEXT}", "active key id is not one of the keys"),
    ("active=p1;p1=not*base64", "secret of key p1 is not valid base64url"),
    (f"active=p1;p1={base64url(b'short')}", "secret of key p1 must be exactly 32 bytes"),
    (f"active=p1;p1={base64url(b'x' * 64)}", "secret of key p1 must be exactly 32 bytes"),
    (f"active=p1;p1={SECRET_TEXT};p1={SECRET_TEXT}", "key id p1 appears more than once"),
    (f"active=p1;p$1={SECRET_TEXT}", "segment 2 does not start with a valid key id"),
    ("active=p1", "at least one key"),
])
def test_configuration_errors_name_the_problem_never_the_secret(config, message):
    with pytest.raises(ConfigurationError, match=message) as refused:
        PinKeyRing.from_config(config)
    assert SECRET_TEXT not in refused.value.detail


def test_a_ring_refuses_reserved_key_ids_and_more_than_64_keys():
    with pytest.raises(ConfigurationError, match="reserved"):
        PinKeyRing([PinKey("active", SECRET_ONE)], "active")
    too_many = [PinKey(f"p{number}", SECRET_ONE) for number in range(65)]
    with pytest.raises(ConfigurationError, match="more than 64"):
        PinKeyRing(too_many, "p1")


def test_rings_never_show_secrets_in_their_repr():
    shown = repr(RING_BOTH) + repr(RING_BOTH.keys[0])
    assert "p1" in shown and repr(SECRET_ONE) not in shown and base64url(SECRET_ONE) not in shown


@pytest.mark.parametrize("key_id", ["p1\n", "p 1", "p$1", "", "x" * 33, "pé"])
def test_key_ids_outside_the_alphabet_are_refused_even_with_a_trailing_newline(key_id):
    with pytest.raises(ConfigurationError, match="a key id must be 1 to 32 of"):
        PinKeyRing([PinKey(key_id, SECRET_ONE)], key_id)
