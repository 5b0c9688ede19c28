"""Proving the member is present: card + PIN (locked after repeated failures) or a one-time code.

PINs are stored as keyed hashes (``alliance.domain.pin_hashing``). The key ring comes
with the session: ``create_app`` has the hub's session factory put it in every
session's ``info`` (``carry_pin_key_ring``), so the PIN services keep their signatures
and every hub in a process uses its own keys. A successful check rewrites a hash that is
under an older key, or still scrypt, under the active key, in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from alliance.domain.cards import CardNotUsable, require_usable_card, require_valid_card_number
from alliance.domain.errors import AllianceError, ConfigurationError, NotFound, ValidationFailed
from alliance.domain.pin_hashing import KEYED_SCHEME, LEGACY_SCHEME, PinKeyRing
from alliance.domain.risk import Measure
from alliance.models import Card, Member, RedemptionCode
from alliance.services import risk
from alliance.storage.adapters import storage_for

MAX_PIN_FAILURES = 5
PIN_LENGTHS = range(4, 13)
PIN_KEY_RING_INFO = "alliance.pin_key_ring"
REDEMPTION_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
REDEMPTION_CODE_LENGTH = 10
REDEMPTION_CODE_TTL = timedelta(minutes=15)
CARD_FOR_PIN_CHECK = (
    select(Card.id.label("card_id"), Card.status.label("card_status"), Member.id.label("member_id"),
           Member.status.label("member_status"), Member.tier, Card.pin_hash, Card.failed_pin_attempts)
    .join(Member, Member.id == Card.member_id)
    .where(Card.card_number == bindparam("card_number"))
    .with_for_update(of=Card)
)


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


@dataclass(frozen=True, slots=True)
class PinHashCensus:
    """How the PINs of active cards are stored: per key of the ring, still scrypt, or uncheckable."""

    by_key_id: dict[str, int]
    legacy_scrypt: int
    unverifiable: int


def carry_pin_key_ring(session_factory: sessionmaker[Session], pin_keys: PinKeyRing) -> None:
    """Have every session ``session_factory`` makes carry ``pin_keys`` in its ``info``."""
    info = dict(session_factory.kw.get("info") or {})
    info[PIN_KEY_RING_INFO] = pin_keys
    session_factory.configure(info=info)


def pin_key_ring(session: Session) -> PinKeyRing:
    """The PIN key ring ``session`` carries (see ``carry_pin_key_ring``)."""
    pin_keys = session.info.get(PIN_KEY_RING_INFO)
    if not isinstance(pin_keys, PinKeyRing):
        raise ConfigurationError(
            "this database session carries no PIN key ring; open it through the hub's unit of work")
    return pin_keys


def hash_pin(pin: str, pin_keys: PinKeyRing) -> str:
    """A keyed hash of a PIN under the active key; refuses anything but 4 to 12 digits."""
    _require_pin_format(pin)
    return pin_keys.hash(pin)


def pin_matches(pin: str, stored: str, pin_keys: PinKeyRing) -> bool:
    """Whether ``pin`` is a well-formed PIN that ``stored`` was made from (``PinResetRequired`` if uncheckable)."""
    return _well_formed_pin(pin) and pin_keys.verify(pin, stored)


def active_card_holder(session: Session, card_number: str) -> CardHolder:
    """The active card with this number and its active member."""
    require_valid_card_number(card_number)
    row = session.execute(
        select(Card.id, Card.status, Member.id, Member.status, Member.tier)
        .join(Member, Member.id == Card.member_id).where(Card.card_number == card_number)
    ).first()
    if row is None:
        raise NotFound("no card with this number")
    card_id, card_status, member_id, member_status, tier = row
    require_usable_card(card_status, member_status)
    return CardHolder(card_id=card_id, member_id=member_id, tier=tier)


def set_pin(session: Session, *, card_number: str, pin: str) -> None:
    """Set a card's PIN and clear its failure count (unlocks a locked card)."""
    pin_keys = pin_key_ring(session)
    holder = active_card_holder(session, card_number)
    session.execute(update(Card).where(Card.id == holder.card_id)
                    .values(pin_hash=hash_pin(pin, pin_keys), failed_pin_attempts=0))


def check_pin(session: Session, *, card_number: str, pin: str) -> PinCheck:
    """Try a PIN under the card's row lock; the caller commits, then acts on the outcome.

    A PIN that cannot be checked (its key has left the ring) raises ``PinResetRequired``
    and counts no failure: the member did nothing wrong.
    """
    pin_keys = pin_key_ring(session)
    # The card holder (``active_card_holder``'s checks) and the card's row lock in one round trip.
    require_valid_card_number(card_number)
    rows = storage_for(session).read(session, CARD_FOR_PIN_CHECK, {"card_number": card_number})
    row = rows[0] if rows else None
    if row is None:
        raise NotFound("no card with this number")
    require_usable_card(row.card_status, row.member_status)
    holder = CardHolder(card_id=row.card_id, member_id=row.member_id, tier=row.tier)
    pin_hash, failures = row.pin_hash, row.failed_pin_attempts
    if failures >= MAX_PIN_FAILURES:
        return PinCheck(holder=None, failures=failures, locked=True)
    if pin_hash is not None and pin_matches(pin, pin_hash, pin_keys):
        changes: dict[str, object] = {"failed_pin_attempts": 0} if failures else {}
        if pin_keys.needs_rehash(pin_hash):
            changes["pin_hash"] = pin_keys.hash(pin)
        if changes:
            session.execute(update(Card).where(Card.id == holder.card_id).values(**changes))
        return PinCheck(holder=holder, failures=0, locked=False)
    failures += 1
    session.execute(update(Card).where(Card.id == holder.card_id).values(failed_pin_attempts=failures))
    # Sent now, in the request's transaction, so the counted failure survives the refusal.
    session.flush()
    return PinCheck(holder=None, failures=failures, locked=failures >= MAX_PIN_FAILURES)


def pin_hash_census(session: Session, pin_keys: PinKeyRing) -> PinHashCensus:
    """Active cards' PIN hashes counted by the key each names, so an operator knows when an old key can go.

    A key may leave the ring once no hash is under it; hashes under a key no longer in
    the ring, or in no form the hub writes, are counted as unverifiable: they need a PIN reset.
    """
    def under(prefix: str) -> ColumnElement[int]:
        return func.count(case((Card.pin_hash.startswith(prefix, autoescape=True), 1)))

    key_ids = [key.key_id for key in pin_keys.keys]
    row = session.execute(
        select(func.count(Card.pin_hash), under(f"{LEGACY_SCHEME}$"),
               *(under(f"{KEYED_SCHEME}${key_id}$") for key_id in key_ids))
        .where(Card.status == "active")
    ).one()
    total, legacy_scrypt, *keyed = row
    # One count per key id, selected in their order.
    by_key_id = dict(zip(key_ids, keyed, strict=True))
    return PinHashCensus(by_key_id=by_key_id, legacy_scrypt=legacy_scrypt,
                         unverifiable=total - legacy_scrypt - sum(keyed))


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


def verify_pin_at_till(session: Session, *, card_number: str, pin: str, till: risk.Subject,
                       now: datetime) -> CardHolder:
    """Card + PIN at a partner's till, under the card-testing limits; a failure is counted for them.

    Before the PIN is tried, a till that has failed on too many different cards is refused
    (``RiskDeclined``); an unknown card, a wrong PIN or a locked one is recorded as a failure
    of the card number tried, kept with the refusal although the request is taken back.
    """
    tried = "card:" + hashlib.sha256(card_number.encode()).hexdigest()[:40]
    risk.assess(session, measure=Measure.VERIFICATION_FAILURE, subject=_tried_at(till, tried), points=0,
                reference=None, now=now)
    try:
        return require_verified(check_pin(session, card_number=card_number, pin=pin))
    except (NotFound, MemberNotVerified) as refusal:
        # Kept by whoever takes the request back (``AllianceError.kept``), once.
        refusal.kept = lambda kept_in: _failed(kept_in, till, tried, "pin", now)
        raise


def redeem_code_at_till(session: Session, *, code: str, till: risk.Subject, now: datetime) -> CardHolder:
    """A one-time redemption code used at a partner's till, under the card-testing limits.

    A code that is unknown, used or expired is refused, and the failure is kept although
    the request's work is taken back.
    """
    normalised = code.strip().upper()
    tried = "code:" + _code_hash(normalised)[:40]
    risk.assess(session, measure=Measure.VERIFICATION_FAILURE, subject=_tried_at(till, tried), points=0,
                reference=None, now=now)
    assert till.partner_id is not None, "a till belongs to a partner"
    try:
        return consume_redemption_code(session, code=normalised, partner_id=till.partner_id, now=now)
    except MemberNotVerified as refusal:
        refusal.kept = lambda kept_in: _failed(kept_in, till, tried, "code", now)
        raise


def _tried_at(till: risk.Subject, tried: str) -> risk.Subject:
    return risk.Subject(partner_id=till.partner_id, partner_code=till.partner_code, terminal_id=till.terminal_id,
                        tried=tried)


def _failed(session: Session, till: risk.Subject, tried: str, method: str, now: datetime) -> None:
    assert till.partner_id is not None, "a till belongs to a partner"
    risk.record_verification_failure(session, partner_id=till.partner_id, terminal_id=till.terminal_id,
                                     tried=tried, method=method, now=now)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _well_formed_pin(pin: str) -> bool:
    # ASCII only: str.isdigit() also accepts digits of other scripts and superscripts.
    return pin.isascii() and pin.isdigit() and len(pin) in PIN_LENGTHS


def _require_pin_format(pin: str) -> None:
    if not _well_formed_pin(pin):
        raise ValidationFailed("a PIN is 4 to 12 digits", fields={"pin": ["4 to 12 digits"]})
