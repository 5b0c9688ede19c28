"""Proving the member is present: card + PIN (locked after repeated failures) or a one-time code."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.cards import is_valid_card_number
from alliance.domain.errors import AllianceError, NotFound, ValidationFailed
from alliance.models import Card, Member, RedemptionCode

MAX_PIN_FAILURES = 5
PIN_LENGTHS = range(4, 13)
# scrypt with these costs takes tens of milliseconds and 16 MiB per guess: slow for an
# attacker with a stolen table, quick enough for a till.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_SALT_BYTES = 16
REDEMPTION_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
REDEMPTION_CODE_LENGTH = 10
REDEMPTION_CODE_TTL = timedelta(minutes=15)


class MemberNotVerified(AllianceError):
    """The card and PIN, or the code, do not prove the member is present."""

    code = "member_not_verified"
    http_status = 403
    title = "Member not verified"


class PinLocked(AllianceError):
    """Too many wrong PINs; the card must be unlocked by customer service."""

    code = "pin_locked"
    http_status = 403
    title = "PIN locked"


class CardNotUsable(AllianceError):
    """A blocked or replaced card, or one whose member is closed."""

    code = "card_not_usable"
    http_status = 409
    title = "Card not usable"


@dataclass(frozen=True, slots=True)
class CardHolder:
    """The active card and its member."""

    card_id: int
    member_id: int
    tier: str


@dataclass(frozen=True, slots=True)
class PinCheck:
    """The outcome of a PIN attempt, returned (not raised) so the failure count can be committed."""

    holder: CardHolder | None
    failures: int
    locked: bool


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of a PIN, self-describing so costs can change later."""
    _require_pin_format(pin)
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64encode(salt).decode()}${b64encode(digest).decode()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether ``pin`` hashes to ``stored``, compared in constant time."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(pin.encode(), salt=b64decode(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate, b64decode(digest))


def active_card_holder(session: Session, card_number: str) -> CardHolder:
    """The active card with this number and its active member."""
    if not is_valid_card_number(card_number):
        raise ValidationFailed("the card number is not valid", fields={"card_number": ["fails the check digit"]})
    row = session.execute(
        select(Card.id, Card.status, Member.id, Member.status, Member.tier)
        .join(Member, Member.id == Card.member_id).where(Card.card_number == card_number)
    ).first()
    if row is None:
        raise NotFound("no card with this number")
    card_id, card_status, member_id, member_status, tier = row
    if card_status != "active" or member_status != "active":
        raise CardNotUsable(f"the card is {card_status} and its membership {member_status}")
    return CardHolder(card_id=card_id, member_id=member_id, tier=tier)


def set_pin(session: Session, *, card_number: str, pin: str) -> None:
    """Set a card's PIN and clear its failure count (unlocks a locked card)."""
    holder = active_card_holder(session, card_number)
    session.execute(update(Card).where(Card.id == holder.card_id).values(pin_hash=hash_pin(pin), failed_pin_attempts=0))


def check_pin(session: Session, *, card_number: str, pin: str) -> PinCheck:
    """Try a PIN under the card's row lock; the caller commits, then acts on the outcome."""
    holder = active_card_holder(session, card_number)
    pin_hash, failures = session.execute(
        select(Card.pin_hash, Card.failed_pin_attempts).where(Card.id == holder.card_id).with_for_update()
    ).one()
    if failures >= MAX_PIN_FAILURES:
        return PinCheck(holder=None, failures=failures, locked=True)
    if pin_hash is not None and _well_formed_pin(pin) and pin_matches(pin, pin_hash):
        if failures:
            session.execute(update(Card).where(Card.id == holder.card_id).values(failed_pin_attempts=0))
        return PinCheck(holder=holder, failures=0, locked=False)
    failures += 1
    session.execute(update(Card).where(Card.id == holder.card_id).values(failed_pin_attempts=failures))
    return PinCheck(holder=None, failures=failures, locked=failures >= MAX_PIN_FAILURES)


def require_verified(check: PinCheck) -> CardHolder:
    """The card holder of a successful PIN check, or the matching error."""
    if check.holder is not None:
        return check.holder
    if check.locked:
        raise PinLocked(f"the PIN was wrong {MAX_PIN_FAILURES} times; the card is locked for redemptions")
    raise MemberNotVerified(f"wrong PIN ({MAX_PIN_FAILURES - check.failures} attempts left)")


def issue_redemption_code(session: Session, *, member_id: int, now: datetime) -> tuple[str, datetime]:
    """A fresh one-time code for the member; only its hash is stored. Returns (code, expires_at)."""
    code = "".join(secrets.choice(REDEMPTION_CODE_ALPHABET) for _ in range(REDEMPTION_CODE_LENGTH))
    expires_at = now + REDEMPTION_CODE_TTL
    session.execute(insert(RedemptionCode).values(
        member_id=member_id, code_hash=_code_hash(code), created_at=now, expires_at=expires_at
    ))
    return code, expires_at


def consume_redemption_code(session: Session, *, code: str, partner_id: int, now: datetime) -> CardHolder:
    """Use a one-time code exactly once (a conditional update) and return its member."""
    used = session.execute(
        update(RedemptionCode)
        .where(RedemptionCode.code_hash == _code_hash(code.strip().upper()), RedemptionCode.used_at.is_(None),
               RedemptionCode.expires_at > now)
        .values(used_at=now, used_by_partner_id=partner_id)
        .returning(RedemptionCode.member_id)
    ).first()
    if used is None:
        raise MemberNotVerified("the redemption code is unknown, used or expired")
    row = session.execute(
        select(Card.id, Member.tier, Member.status).join(Member, Member.id == Card.member_id)
        .where(Card.member_id == used.member_id, Card.status == "active").order_by(Card.id.desc()).limit(1)
    ).first()
    if row is None or row.status != "active":
        raise CardNotUsable("the member has no active card")
    return CardHolder(card_id=row.id, member_id=used.member_id, tier=row.tier)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _well_formed_pin(pin: str) -> bool:
    return pin.isdigit() and len(pin) in PIN_LENGTHS


def _require_pin_format(pin: str) -> None:
    if not _well_formed_pin(pin):
        raise ValidationFailed("a PIN is 4 to 12 digits", fields={"pin": ["4 to 12 digits"]})
