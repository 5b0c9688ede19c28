"""Personal data at rest: encryption under a rotating key ring, and keyed lookup hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from alliance.domain.errors import AllianceError, ConfigurationError, ValidationFailed
from alliance.domain.pii import (
    MAX_PLAINTEXT_BYTES,
    KeyRing,
    LookupKind,
    PiiDecryptionFailed,
    PiiKey,
    PiiKeyMissing,
    generate_key_ring_config,
    key_id_of,
    normalise_email,
    normalise_phone,
    with_new_active_key,
)

SECRET_ONE = bytes(range(32))
SECRET_TWO = bytes(range(100, 132))
LOOKUP_SECRET = b"L" * 32
PHONE_CONTEXT = "member:42:phone"


def encode(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


def ring_with(*key_ids: str, active: str | None = None, lookup_secret: bytes = LOOKUP_SECRET) -> KeyRing:
    secrets_by_key_id = {"k1": SECRET_ONE, "k2": SECRET_TWO}
    keys = [PiiKey(key_id, secrets_by_key_id[key_id]) for key_id in key_ids]
    return KeyRing(keys, active or key_ids[-1], lookup_secret)


def flip_character(token: str, index: int) -> str:
    return token[:index] + chr(ord(token[index]) ^ 0x01) + token[index + 1:]


# Encryption and decryption.


@pytest.mark.parametrize("plaintext", ["+33612345678", "Zoë Ångström-Łukasiewicz", "", "a" * 1000])
def test_decrypt_returns_what_encrypt_was_given(plaintext):
    ring = ring_with("k1")
    assert ring.decrypt(ring.encrypt(plaintext, context=PHONE_CONTEXT), context=PHONE_CONTEXT) == plaintext


def test_tokens_are_versioned_ascii_naming_the_active_key():
    token = ring_with("k1", "k2", active="k2").encrypt("+33612345678", context=PHONE_CONTEXT)
    version, key_id, body = token.split(".")
    assert (version, key_id) == ("v1", "k2")
    assert token.isascii()
    # A 12-byte nonce, the ciphertext, and a 16-byte tag.
    assert len(base64.urlsafe_b64decode(body + "==")) == 12 + len("+33612345678") + 16


def test_encrypting_the_same_value_twice_gives_different_tokens():
    ring = ring_with("k1")
    assert ring.encrypt("same", context=PHONE_CONTEXT) != ring.encrypt("same", context=PHONE_CONTEXT)


def test_a_token_copied_to_another_members_row_does_not_decrypt():
    ring = ring_with("k1")
    token = ring.encrypt("+33612345678", context="member:42:phone")
    for other_context in ("member:43:phone", "member:42:email", "member:42:phone "):
        with pytest.raises(PiiDecryptionFailed) as raised:
            ring.decrypt(token, context=other_context)
        assert raised.value.code == "pii_decryption_failed"
        assert raised.value.http_status == 500


def test_flipping_any_character_of_a_token_makes_it_fail():
    ring = ring_with("k1")
    token = ring.encrypt("+33612345678", context=PHONE_CONTEXT)
    body_start = len("v1.k1.")
    for index in range(len(token)):
        with pytest.raises((PiiDecryptionFailed, PiiKeyMissing)) as raised:
            ring.decrypt(flip_character(token, index), context=PHONE_CONTEXT)
        if index >= body_start:
            assert raised.type is PiiDecryptionFailed


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.k1", "v2.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "v1..AAAA", "v1.k1.", "v1.k1.!!!!",
     "v1.k1.AAAA", "v1.k1.a.b", "v1.k 1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
    ids=["empty", "version-only", "no-body", "unknown-version", "no-key-id", "empty-body", "not-base64",
         "too-short", "four-parts", "bad-key-id"],
)
def test_garbled_tokens_are_refused_as_decryption_failures(token):
    with pytest.raises(PiiDecryptionFailed):
        ring_with("k1").decrypt(token, context=PHONE_CONTEXT)


def test_tokens_with_padding_or_non_canonical_base64_are_refused():
    ring = ring_with("k1")
    token = ring.encrypt("+33612345678", context=PHONE_CONTEXT)
    with pytest.raises(PiiDecryptionFailed):
        ring.decrypt(token + "=", context=PHONE_CONTEXT)
    # The sealed bytes are 40 long, so the last character carries four unused bits;
    # setting one of them decodes to the same bytes and must still be refused.
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = alphabet[alphabet.index(last) | 0x01]
    assert same_bytes != last
    with pytest.raises(PiiDecryptionFailed):
        ring.decrypt(token[:-1] + same_bytes, context=PHONE_CONTEXT)


def test_a_token_under_a_key_the_ring_lacks_fails_with_pii_key_missing():
    token = ring_with("k1", "k2", active="k2").encrypt("+33612345678", context=PHONE_CONTEXT)
    with pytest.raises(PiiKeyMissing) as raised:
        ring_with("k1").decrypt(token, context=PHONE_CONTEXT)
    assert raised.value.code == "pii_key_missing"
    assert raised.value.http_status == 500
    assert "k2" in raised.value.detail
    assert isinstance(raised.value, AllianceError)


def test_encrypt_refuses_plaintext_beyond_the_limit():
    ring = ring_with("k1")
    ring.encrypt("a" * MAX_PLAINTEXT_BYTES, context=PHONE_CONTEXT)
    with pytest.raises(ValidationFailed, match="limit"):
        ring.encrypt("a" * (MAX_PLAINTEXT_BYTES + 1), context=PHONE_CONTEXT)


def test_encrypt_and_decrypt_need_a_context():
    ring = ring_with("k1")
    with pytest.raises(ValueError, match="context"):
        ring.encrypt("+33612345678", context="")
    with pytest.raises(ValueError, match="context"):
        ring.decrypt(ring.encrypt("x", context=PHONE_CONTEXT), context="")


# Rotation.


def test_after_rotation_old_tokens_decrypt_and_new_tokens_use_the_new_key():
    old_ring = ring_with("k1")
    old_token = old_ring.encrypt("+33612345678", context=PHONE_CONTEXT)
    rotated = ring_with("k1", "k2", active="k2")
    assert rotated.decrypt(old_token, context=PHONE_CONTEXT) == "+33612345678"
    assert key_id_of(rotated.encrypt("+33612345678", context=PHONE_CONTEXT)) == "k2"


def test_reencrypt_moves_a_stale_token_to_the_active_key():
    old_token = ring_with("k1").encrypt("+33612345678", context=PHONE_CONTEXT)
    rotated = ring_with("k1", "k2", active="k2")
    assert rotated.needs_reencryption(old_token)
    fresh_token = rotated.reencrypt(old_token, context=PHONE_CONTEXT)
    assert key_id_of(fresh_token) == "k2"
    assert not rotated.needs_reencryption(fresh_token)
    assert rotated.decrypt(fresh_token, context=PHONE_CONTEXT) == "+33612345678"


def test_reencrypt_keeps_the_context_binding():
    old_token = ring_with("k1").encrypt("+33612345678", context=PHONE_CONTEXT)
    rotated = ring_with("k1", "k2", active="k2")
    with pytest.raises(PiiDecryptionFailed):
        rotated.reencrypt(old_token, context="member:43:phone")
    fresh_token = rotated.reencrypt(old_token, context=PHONE_CONTEXT)
    with pytest.raises(PiiDecryptionFailed):
        rotated.decrypt(fresh_token, context="member:43:phone")


def test_key_id_of_names_the_key_and_refuses_garbage():
    assert key_id_of(ring_with("k1").encrypt("x", context=PHONE_CONTEXT)) == "k1"
    with pytest.raises(PiiDecryptionFailed):
        key_id_of("not a token")


def test_with_new_active_key_keeps_old_keys_and_the_lookup_secret():
    config = generate_key_ring_config(("k1",))
    ring = KeyRing.from_config(config)
    old_token = ring.encrypt("+33612345678", context=PHONE_CONTEXT)
    rotated = KeyRing.from_config(with_new_active_key(config, "k2"))
    assert rotated.active_key_id == "k2"
    assert [key.key_id for key in rotated.keys] == ["k1", "k2"]
    assert rotated.keys[0] == ring.keys[0]
    assert rotated.decrypt(old_token, context=PHONE_CONTEXT) == "+33612345678"
    assert rotated.lookup_hash("+33612345678", kind="phone") == ring.lookup_hash("+33612345678", kind="phone")


def test_with_new_active_key_refuses_an_existing_key_id():
    config = generate_key_ring_config(("k1", "k2"))
    with pytest.raises(ConfigurationError, match="already"):
        with_new_active_key(config, "k1")


# Configuration.


def test_a_generated_configuration_parses_back_with_the_last_key_active():
    config = generate_key_ring_config(("2026-01", "2026-07"))
    ring = KeyRing.from_config(config)
    assert ring.active_key_id == "2026-07"
    assert [key.key_id for key in ring.keys] == ["2026-01", "2026-07"]
    assert all(len(key.secret) == 32 for key in ring.keys)
    assert ring.to_config() == config


def test_generated_configurations_hold_fresh_secrets():
    first, second = KeyRing.from_config(generate_key_ring_config()), KeyRing.from_config(generate_key_ring_config())
    assert first.keys[0].secret != second.keys[0].secret
    assert first.lookup_secret != second.lookup_secret


def test_from_config_accepts_any_order_whitespace_padding_and_a_trailing_semicolon():
    padded_secret = base64.urlsafe_b64encode(SECRET_TWO).decode("ascii")
    assert padded_secret.endswith("=")
    config = f" lookup = {encode(LOOKUP_SECRET)} ;k2={padded_secret}; active=k2 ;k1={encode(SECRET_ONE)};\n"
    ring = KeyRing.from_config(config)
    assert ring == KeyRing([PiiKey("k2", SECRET_TWO), PiiKey("k1", SECRET_ONE)], "k2", LOOKUP_SECRET)


SHORT_SECRET = encode(b"S" * 16)
GOOD_ONE, GOOD_TWO, GOOD_LOOKUP = encode(SECRET_ONE), encode(SECRET_TWO), encode(LOOKUP_SECRET)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("", "empty"),
        (f"k1={GOOD_ONE};lookup={GOOD_LOOKUP}", "'active' is missing"),
        (f"active=k1;k1={GOOD_ONE}", "'lookup' is missing"),
        (f"active=k2;k1={GOOD_ONE};lookup={GOOD_LOOKUP}", "active PII key id is not one of the keys"),
        (f"active=k1;k1={GOOD_ONE};k1={GOOD_TWO};lookup={GOOD_LOOKUP}", "k1 appears more than once"),
        (f"active=k1;active=k1;k1={GOOD_ONE};lookup={GOOD_LOOKUP}", "'active' appears more than once"),
        (f"active=k1;k1={GOOD_ONE};lookup={GOOD_LOOKUP};lookup={GOOD_LOOKUP}", "'lookup' appears more than once"),
        (f"active=k1;k1={SHORT_SECRET};lookup={GOOD_LOOKUP}", "key k1 must be exactly 32 bytes"),
        (f"active=k1;k1={GOOD_ONE};lookup={SHORT_SECRET}", "lookup secret must be at least 32 bytes"),
        (f"active=k1;k1={GOOD_ONE}+/;lookup={GOOD_LOOKUP}", "key k1 is not valid base64url"),
        (f"active=k1;k1={GOOD_ONE};lookup={GOOD_LOOKUP}!", "lookup secret is not valid base64url"),
        (f"active=k1;{GOOD_ONE};lookup={GOOD_LOOKUP}", "segment 2 has no '='"),
        (f"active=k1;k 1={GOOD_ONE};lookup={GOOD_LOOKUP}", "segment 2 does not start with a valid key id"),
        (f"active={GOOD_ONE};k1={GOOD_ONE};lookup={GOOD_LOOKUP}", "'active' is not a valid key id"),
        (f"active=Lookup;Lookup={GOOD_ONE};lookup={GOOD_LOOKUP}", "reserved name"),
    ],
    ids=["empty", "no-active", "no-lookup", "active-unknown", "duplicate-key", "duplicate-active",
         "duplicate-lookup", "short-key", "short-lookup", "bad-base64", "bad-lookup-base64", "no-equals",
         "bad-key-id", "secret-as-active", "reserved-key-id"],
)
def test_from_config_names_the_problem_without_echoing_secrets(config, message):
    with pytest.raises(ConfigurationError) as raised:
        KeyRing.from_config(config)
    assert message in raised.value.detail
    assert raised.value.__cause__ is None
    for secret in (GOOD_ONE, GOOD_TWO, GOOD_LOOKUP, SHORT_SECRET):
        assert secret not in str(raised.value)
        # Not even a recognisable piece of one.
        assert secret[:16] not in str(raised.value)


def test_key_rings_never_show_secrets_in_their_repr():
    ring = ring_with("k1", "k2")
    shown = repr(ring) + repr(ring.keys)
    assert "k1" in shown
    for secret in (SECRET_ONE, SECRET_TWO, LOOKUP_SECRET):
        assert repr(secret) not in shown
        assert encode(secret) not in shown


@pytest.mark.parametrize(
    ("keys", "active", "lookup_secret", "message"),
    [
        ([], "k1", LOOKUP_SECRET, "at least one key"),
        ([PiiKey("k1", SECRET_ONE), PiiKey("k1", SECRET_TWO)], "k1", LOOKUP_SECRET, "more than once"),
        ([PiiKey("k1", SECRET_ONE)], "k2", LOOKUP_SECRET, "active"),
        ([PiiKey("k1", SECRET_ONE[:31])], "k1", LOOKUP_SECRET, "exactly 32 bytes"),
        ([PiiKey("k1", SECRET_ONE + b"x")], "k1", LOOKUP_SECRET, "exactly 32 bytes"),
        ([PiiKey("k1", SECRET_ONE)], "k1", b"L" * 31, "at least 32 bytes"),
        ([PiiKey("k.1", SECRET_ONE)], "k.1", LOOKUP_SECRET, "key id"),
        ([PiiKey("k" * 33, SECRET_ONE)], "k" * 33, LOOKUP_SECRET, "key id"),
        ([PiiKey("active", SECRET_ONE)], "active", LOOKUP_SECRET, "reserved"),
    ],
    ids=["no-keys", "duplicate-id", "active-absent", "short-secret", "long-secret", "short-lookup",
         "dot-in-id", "long-id", "reserved-id"],
)
def test_key_ring_refuses_an_invalid_set_of_keys(keys, active, lookup_secret, message):
    with pytest.raises(ConfigurationError, match=message):
        KeyRing(keys, active, lookup_secret)


def test_a_longer_lookup_secret_is_accepted():
    assert ring_with("k1", lookup_secret=b"L" * 64).lookup_secret == b"L" * 64


# Lookup hashes.


@pytest.mark.parametrize("written", ["+33 6 12 34 56 78", "0033612345678", "+33-6-12-34-56-78", "+33.6.12.34.56.78",
                                     "(+33) 6 12 34 56 78", " +33612345678 "])
def test_phone_lookup_hash_is_the_same_however_the_number_is_written(written):
    ring = ring_with("k1")
    assert ring.lookup_hash(written, kind="phone") == ring.lookup_hash("+33612345678", kind=LookupKind.PHONE)


def test_lookup_hash_is_hmac_sha256_of_kind_and_normalised_value():
    ring = ring_with("k1")
    expected = hmac.new(LOOKUP_SECRET, b"phone\x00+33612345678", hashlib.sha256).hexdigest()
    assert ring.lookup_hash("0033 6 12 34 56 78", kind="phone") == expected
    # The same characters under another kind hash differently: the kind is domain-separating.
    other_kind = hmac.new(LOOKUP_SECRET, b"email\x00+33612345678", hashlib.sha256).hexdigest()
    assert other_kind != expected


def test_lookup_hashes_differ_across_kinds_values_and_lookup_secrets():
    ring = ring_with("k1")
    other_secret_ring = ring_with("k1", lookup_secret=b"M" * 32)
    phone_hash = ring.lookup_hash("+33612345678", kind="phone")
    assert len(phone_hash) == 64 and int(phone_hash, 16) >= 0
    assert ring.lookup_hash("+33612345679", kind="phone") != phone_hash
    assert other_secret_ring.lookup_hash("+33612345678", kind="phone") != phone_hash
    email_hash = ring.lookup_hash("Zoe@Example.COM", kind="email")
    assert email_hash == ring.lookup_hash("zoe@example.com", kind="email")
    assert email_hash != other_secret_ring.lookup_hash("zoe@example.com", kind="email")


def test_lookup_hash_does_not_depend_on_the_encryption_keys():
    assert ring_with("k1").lookup_hash("+33612345678", kind="phone") == ring_with("k1", "k2").lookup_hash(
        "+33612345678", kind="phone"
    )


def test_lookup_hash_refuses_invalid_values_and_unknown_kinds():
    ring = ring_with("k1")
    with pytest.raises(ValidationFailed):
        ring.lookup_hash("not a phone", kind="phone")
    with pytest.raises(ValidationFailed):
        ring.lookup_hash("+33612345678", kind="email")
    with pytest.raises(ValueError):
        ring.lookup_hash("+33612345678", kind="fax")


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("06.12.34.56.78", "0612345678"),
        ("1234567", "1234567"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_normalise_phone_keeps_digits_and_a_leading_plus(written, normalised):
    assert normalise_phone(written) == normalised


@pytest.mark.parametrize(
    "written",
    ["", "+", "123456", "+1234567890123456", "33 6 12 34 56 78 ext 9", "+33+612345678", "6612345678+",
     "٠٦١٢٣٤٥٦٧٨", "phone", "0" * 65, "00"],
    ids=["empty", "plus-only", "too-short", "too-long", "letters", "inner-plus", "trailing-plus",
         "arabic-indic-digits", "word", "overlong-input", "double-zero-only"],
)
def test_normalise_phone_refuses_what_is_not_a_phone_number(written):
    with pytest.raises(ValidationFailed) as raised:
        normalise_phone(written)
    assert list(raised.value.fields) == ["phone"]


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("  Zoe.Martin@Example.COM \n", "zoe.martin@example.com"), ("a+tag@mail.example.org", "a+tag@mail.example.org")],
)
def test_normalise_email_trims_and_lowercases(written, normalised):
    assert normalise_email(written) == normalised


@pytest.mark.parametrize(
    "written",
    ["", "zoe", "zoe@", "@example.com", "zoe@@example.com", "a@b@example.com", "zoe@localhost", "zoe@.com",
     "zoe@example.", "zoe@example..com", "zoe martin@example.com", "z" * 250 + "@example.com"],
)
def test_normalise_email_refuses_what_is_not_an_address(written):
    with pytest.raises(ValidationFailed) as raised:
        normalise_email(written)
    assert list(raised.value.fields) == ["email"]
