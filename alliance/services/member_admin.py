"""Customer service on members: enrolment with personal data, cards, PINs, codes, history,
transfers, tiers, export and erasure. Every change is written to the audit log, which
never holds personal data itself (only which fields changed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import Row, case, insert, or_, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.domain.pii import KeyRing, LookupKind, normalise_email, normalise_phone
from alliance.domain.risk import Measure
from alliance.models import (
    Card,
    Complaint,
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    Member,
    MemberProfile,
    MemberTransfer,
    PointLot,
    Purchase,
    RedemptionHold,
)
from alliance.models.base import integer_sum
from alliance.services import audit_log, ledger, risk, risk_patterns
from alliance.services.accounts import member_balances
from alliance.services.member_verification import active_card_holder, issue_redemption_code, set_pin
from alliance.services.members import Enrolment, enrol_member, issue_card

PROFILE_FIELDS = ("name", "phone", "email", "birth_date")
MAX_NAME_CHARACTERS = 200
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
# The calendar day is already tomorrow somewhere while it is today in UTC (up to 14 hours
# ahead), so a birth date is "in the future" only once it is past every time zone's today.
LATEST_TIME_ZONE_OFFSET = timedelta(hours=14)
HISTORY_PAGE_LIMIT = 200


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """How much a member may give away, and how long they must have been a member."""

    max_points_per_transfer: int
    max_points_per_day: int
    min_membership_days: int


def member_by_number(session: Session, member_number: str) -> Member:
    """The member with this public number."""
    member = session.scalar(select(Member).where(Member.member_number == member_number))
    if member is None:
        raise NotFound(f"no member {member_number!r}")
    return member


def enrol_with_profile(
    session: Session, *, key_ring: KeyRing, profile: Mapping[str, str | date], now: datetime, actor: str
) -> Enrolment:
    """Enrol a member with a card and encrypted personal data."""
    enrolment = enrol_member(session, now=now)
    session.execute(insert(MemberProfile).values(member_id=enrolment.member_id, updated_at=now))
    _write_profile(session, key_ring, enrolment.member_id, profile, now)
    audit_log.append(session, actor=actor, action="member.enrol", subject=f"member:{enrolment.member_number}",
                     now=now, after={"card": _masked(enrolment.card_number), "profile_fields": sorted(profile)})
    return enrolment


def update_profile(
    session: Session, *, key_ring: KeyRing, member_number: str, changes: Mapping[str, str | date | None],
    now: datetime, actor: str,
) -> None:
    """Change some personal data fields (None clears one); ``birth_date`` is a date or ISO 8601 text."""
    member = member_by_number(session, member_number)
    _require_not_erased(session, member.id)
    if session.get(MemberProfile, member.id) is None:
        # Members enrolled without personal data have no profile row until they are given some.
        session.execute(insert(MemberProfile).values(member_id=member.id, updated_at=now))
    _write_profile(session, key_ring, member.id, changes, now)
    audit_log.append(session, actor=actor, action="member.profile.update", subject=f"member:{member_number}",
                     now=now, after={"changed_fields": sorted(changes)})


def read_profile(session: Session, *, key_ring: KeyRing, member_id: int) -> dict[str, str | None]:
    """The member's personal data, decrypted (the birth date as ISO 8601 text, e.g. "1990-03-12")."""
    profile = session.get(MemberProfile, member_id)
    if profile is None or profile.erased_at is not None:
        return {name: None for name in PROFILE_FIELDS}
    return {
        name: (key_ring.decrypt(token, context=f"member:{member_id}:{name}") if token else None)
        for name, token in (("name", profile.name_encrypted), ("phone", profile.phone_encrypted),
                            ("email", profile.email_encrypted), ("birth_date", profile.birth_date_encrypted))
    }


def birth_date_of(text: str | date | None, *, now: datetime) -> date | None:
    """A birth date given as a date or ISO 8601 text (YYYY-MM-DD), checked: not before 1900, not in the future."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        text = text.date()
    if isinstance(text, date):
        value = text
    else:
        try:
            value = date.fromisoformat(str(text).strip())
        except ValueError:
            raise ValidationFailed(f"{text!r} is not a date: write it as YYYY-MM-DD, e.g. 1990-03-12",
                                   fields={"birth_date": ["not a date (YYYY-MM-DD)"]}) from None
    if value < EARLIEST_BIRTH_DATE:
        raise ValidationFailed("a birth date before 1900 is refused", fields={"birth_date": ["before 1900"]})
    if value > (now + LATEST_TIME_ZONE_OFFSET).date():
        raise ValidationFailed("a birth date in the future is refused", fields={"birth_date": ["in the future"]})
    return value


def month_day(value: date) -> int:
    """The birthday as the profile keeps it in clear: month and day as MMDD (1231 for 31 December)."""
    return value.month * 100 + value.day


def find_by_contact(session: Session, *, key_ring: KeyRing, phone: str | None, email: str | None) -> list[Member]:
    """Members whose phone or e-mail matches, through the keyed lookup hash."""
    conditions = []
    if phone:
        conditions.append(
            MemberProfile.phone_lookup == key_ring.lookup_hash(normalise_phone(phone), kind=LookupKind.PHONE))
    if email:
        conditions.append(
            MemberProfile.email_lookup == key_ring.lookup_hash(normalise_email(email), kind=LookupKind.EMAIL))
    if not conditions:
        raise ValidationFailed("look up by phone or email", fields={"phone": ["or email required"]})
    return list(session.scalars(select(Member).join(MemberProfile, MemberProfile.member_id == Member.id)
                                .where(or_(*conditions)).order_by(Member.id)))


def replace_card(session: Session, *, card_number: str, now: datetime, actor: str,
                 reason: str | None = None) -> tuple[int, str]:
    """Block a lost card and issue a new one. Balance, lots and holds belong to the member,
    so they carry over untouched; the PIN carries over too. A reason given is kept in the audit entry."""
    card = session.scalar(select(Card).where(Card.card_number == card_number).with_for_update())
    if card is None:
        raise NotFound("no card with this number")
    if card.status != "active":
        raise InvalidState(f"the card is already {card.status}")
    session.execute(update(Card).where(Card.id == card.id).values(status="blocked", blocked_at=now))
    new_card_id, new_number = issue_card(session, member_id=card.member_id, now=now)
    session.execute(update(Card).where(Card.id == new_card_id).values(pin_hash=card.pin_hash))
    member_number = session.scalar(select(Member.member_number).where(Member.id == card.member_id))
    audit_log.append(session, actor=actor, action="card.replace", subject=f"member:{member_number}", now=now,
                     before={"card": _masked(card_number), "status": "active"},
                     after={"blocked_card": _masked(card_number), "new_card": _masked(new_number),
                            **({"reason": reason} if reason else {})})
    return new_card_id, new_number


def member_card_number(session: Session, *, member_number: str, position: int) -> str:
    """The number of the member's ``position``-th card (1 is the first issued), so forms need not carry it."""
    member = member_by_number(session, member_number)
    cards = cards_of(session, member.id)
    if not 1 <= position <= len(cards):
        raise NotFound(f"member {member_number} has no card number {position}")
    return cards[position - 1][0]


def replace_member_card(session: Session, *, member_number: str, position: int, reason: str, now: datetime,
                        actor: str) -> str:
    """Replace the member's ``position``-th card (it must be active), with the reason in the audit entry;
    returns the new card's number."""
    if not reason.strip():
        raise ValidationFailed("say why the card is replaced", fields={"reason": ["required"]})
    card_number = member_card_number(session, member_number=member_number, position=position)
    _, new_number = replace_card(session, card_number=card_number, now=now, actor=actor, reason=reason.strip())
    return new_number


def refuse_guessable_pin(pin: str) -> None:
    """Refuse a PIN anyone would try first: one digit repeated (0000) or a straight run (1234, 9876)."""
    if not (pin.isascii() and pin.isdigit()):
        return  # set_pin refuses it, with the format in its words
    steps = {int(second) - int(first) for first, second in zip(pin[:-1], pin[1:], strict=True)}
    if len(steps) == 1 and steps.pop() in (-1, 0, 1):
        raise ValidationFailed("this PIN is too easy to guess (one digit repeated, or digits in a row); choose another",
                               fields={"pin": ["guessable"]})


def reset_member_pin(session: Session, *, member_number: str, position: int, pin: str, now: datetime,
                     actor: str) -> str:
    """Set a new PIN on the member's ``position``-th card and unlock it (a guessable PIN is refused);
    returns the card, masked."""
    card_number = member_card_number(session, member_number=member_number, position=position)
    reset_pin(session, card_number=card_number, pin=pin, now=now, actor=actor)
    return _masked(card_number)


def reset_pin(session: Session, *, card_number: str, pin: str, now: datetime, actor: str) -> None:
    """Set a new PIN chosen at the desk and unlock the card; a PIN anyone would try first is refused."""
    active_card_holder(session, card_number)  # an unknown or blocked card is refused before the PIN is judged
    refuse_guessable_pin(pin)
    set_pin(session, card_number=card_number, pin=pin)
    audit_log.append(session, actor=actor, action="card.pin.reset", subject=f"card:{_masked(card_number)}", now=now)


def new_redemption_code(session: Session, *, member_number: str, now: datetime, actor: str) -> tuple[str, datetime]:
    """Issue a one-time redemption code."""
    member = member_by_number(session, member_number)
    code, expires_at = issue_redemption_code(session, member_id=member.id, now=now)
    audit_log.append(session, actor=actor, action="member.redemption_code.issue", subject=f"member:{member_number}",
                     now=now, after={"expires_at": expires_at.isoformat()})
    return code, expires_at


def history(session: Session, *, member_number: str, limit: int,
            before_transaction_id: int | None) -> list[dict[str, Any]]:
    """The member's journal transactions, newest first, with the points each moved for them."""
    member = member_by_number(session, member_number)
    member_accounts = select(LedgerAccount.id).where(LedgerAccount.member_id == member.id)
    query = (
        select(JournalTransaction.id, JournalTransaction.kind, JournalTransaction.posted_at,
               JournalTransaction.partner_id, LedgerAccount.kind.label("account"),
               integer_sum(JournalEntry.amount_points).label("points"))
        .join(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(JournalEntry.account_id.in_(member_accounts))
        .group_by(JournalTransaction.id, JournalTransaction.kind, JournalTransaction.posted_at,
                  JournalTransaction.partner_id, LedgerAccount.kind)
        .order_by(JournalTransaction.id.desc(), LedgerAccount.kind)
    )
    if before_transaction_id is not None:
        query = query.where(JournalTransaction.id < before_transaction_id)
    rows = session.execute(query.limit(min(limit, HISTORY_PAGE_LIMIT) * 3)).all()
    by_transaction: dict[int, dict[str, Any]] = {}
    for row in rows:
        item = by_transaction.setdefault(row.id, {"transaction_id": row.id, "kind": row.kind,
                                                  "posted_at": row.posted_at, "partner_id": row.partner_id,
                                                  "points": {}})
        item["points"][row.account.removeprefix("member_")] = int(row.points)
    return list(by_transaction.values())[:limit]


def transfer_points(
    session: Session, *, from_member_number: str, to_member_number: str, points: int, limits: TransferLimits,
    now: datetime, actor: str,
) -> MemberTransfer:
    """Move points between members within the limits."""
    sender = member_by_number(session, from_member_number)
    receiver = member_by_number(session, to_member_number)
    if sender.id == receiver.id:
        raise ValidationFailed("a member cannot transfer points to themselves", fields={"to_member": ["same member"]})
    if points > limits.max_points_per_transfer:
        raise ValidationFailed(f"at most {limits.max_points_per_transfer} points per transfer",
                               fields={"points": ["over the per-transfer limit"]})
    if sender.enrolled_at > now - timedelta(days=limits.min_membership_days):
        raise InvalidState(f"members can transfer after {limits.min_membership_days} days of membership")
    if receiver.status != "active":
        raise InvalidState("the receiving membership is not active")
    risk.assess(session, measure=Measure.TRANSFER_OUT, points=points, reference=None, now=now,
                subject=risk.Subject(partner_id=None, member_id=sender.id, tier=sender.tier))
    risk_patterns.on_transfer(session, sender=sender, receiver=receiver, points=points, now=now)
    transfer_id = session.execute(insert(MemberTransfer).values(
        from_member_id=sender.id, to_member_id=receiver.id, points=points, created_at=now, created_by=actor,
    ).returning(MemberTransfer.id)).scalar_one()
    ledger.transfer(session, from_member_id=sender.id, to_member_id=receiver.id, points=points,
                    transfer_id=transfer_id, now=now)
    # Counted after the sender is locked (inside ledger.transfer), so two transfers at once
    # cannot both slip under the daily limit.
    sent_today = session.execute(select(integer_sum(MemberTransfer.points)).where(
        MemberTransfer.from_member_id == sender.id, MemberTransfer.created_at > now - timedelta(days=1))).scalar_one()
    if sent_today > limits.max_points_per_day:
        raise ValidationFailed(f"at most {limits.max_points_per_day} points per 24 hours",
                               fields={"points": ["over the daily limit"]})
    audit_log.append(session, actor=actor, action="member.transfer", subject=f"member:{from_member_number}", now=now,
                     after={"to": to_member_number, "points": points, "transfer_id": transfer_id})
    return session.get_one(MemberTransfer, transfer_id)


def cards_of(session: Session, member_id: int) -> list[tuple[str, str]]:
    """A member's cards, oldest first, as (card number, status)."""
    return [(number, status) for number, status in session.execute(
        select(Card.card_number, Card.status).where(Card.member_id == member_id).order_by(Card.id))]


def member_number_of(session: Session, member_id: int) -> str:
    """The member number of the member with ``member_id``."""
    member_number = session.scalar(select(Member.member_number).where(Member.id == member_id))
    if member_number is None:
        raise NotFound(f"no member {member_id}")
    return member_number


def export(session: Session, *, key_ring: KeyRing, member_number: str, actor: str,
           now: datetime) -> dict[str, object]:
    """Everything held on a member, as JSON-ready data; the ``member.export`` audit entry records who asked."""
    member = member_by_number(session, member_number)
    profile_row = session.get(MemberProfile, member.id)
    cards = session.execute(select(Card.card_number, Card.status, Card.issued_at, Card.blocked_at)
                            .where(Card.member_id == member.id).order_by(Card.id)).all()
    lots = session.execute(select(PointLot.id, PointLot.state, PointLot.points_earned, PointLot.points_remaining,
                                  PointLot.earned_at, PointLot.expires_at).where(PointLot.member_id == member.id)
                           .order_by(PointLot.id)).all()
    purchases = session.execute(select(Purchase.receipt_id, Purchase.amount_minor, Purchase.currency,
                                       Purchase.purchased_at, Purchase.points_partner, Purchase.points_hub)
                                .where(Purchase.member_id == member.id).order_by(Purchase.id)).all()
    holds = session.execute(select(RedemptionHold.reference, RedemptionHold.status, RedemptionHold.points_held,
                                   RedemptionHold.points_captured, RedemptionHold.created_at)
                            .where(RedemptionHold.member_id == member.id).order_by(RedemptionHold.id)).all()
    complaints = session.execute(select(Complaint.id, Complaint.category, Complaint.status, Complaint.description,
                                        Complaint.opened_at).where(Complaint.member_id == member.id)
                                 .order_by(Complaint.id)).all()
    exported = {
        "member": {"member_number": member.member_number, "status": member.status, "tier": member.tier,
                   "enrolled_at": member.enrolled_at.isoformat()},
        "profile": read_profile(session, key_ring=key_ring, member_id=member.id),
        "profile_erased_at": profile_row.erased_at.isoformat() if profile_row and profile_row.erased_at else None,
        "balances": member_balances(session, member.id),
        "cards": [_row_dict(card) for card in cards],
        "lots": [_row_dict(lot) for lot in lots],
        "purchases": [_row_dict(purchase) for purchase in purchases],
        "redemptions": [_row_dict(hold) for hold in holds],
        "complaints": [_row_dict(complaint) for complaint in complaints],
        "history": [_row_dict(item) for item in history(session, member_number=member_number,
                                                         limit=HISTORY_PAGE_LIMIT, before_transaction_id=None)],
    }
    audit_log.append(session, actor=actor, action="member.export", subject=f"member:{member_number}", now=now)
    return exported


def erase(session: Session, *, member_number: str, now: datetime, actor: str) -> None:
    """Remove a member's personal data; the ledger, lots and settlements stay as they are."""
    member = member_by_number(session, member_number)
    status_before = member.status
    _require_not_erased(session, member.id)
    if session.get(MemberProfile, member.id) is None:
        # Members enrolled without personal data have no profile row; the erasure is
        # still recorded on one, so it happens once and shows in the export.
        session.execute(insert(MemberProfile).values(member_id=member.id, updated_at=now))
    session.execute(update(MemberProfile).where(MemberProfile.member_id == member.id).values(
        name_encrypted=None, phone_encrypted=None, email_encrypted=None, phone_lookup=None, email_lookup=None,
        birth_date_encrypted=None, birthday=None, erased_at=now, updated_at=now))
    redacted = "[erased at the member's request]"
    session.execute(update(Complaint).where(Complaint.member_id == member.id)
                    .values(description=redacted,
                            resolution_note=case((Complaint.resolution_note.is_(None), None), else_=redacted)))
    session.execute(update(Card).where(Card.member_id == member.id, Card.status == "active")
                    .values(status="blocked", blocked_at=now))
    session.execute(update(Member).where(Member.id == member.id).values(status="closed"))
    audit_log.append(session, actor=actor, action="member.erase", subject=f"member:{member_number}", now=now,
                     before={"status": status_before}, after={"status": "closed", "profile": "erased"})


def recompute_tiers(session: Session, *, now: datetime, currency: str, minor_units_per_unit: int) -> int:
    """Set every member's tier under the tier policy in force at ``now`` (``tier_policy.recompute_tiers``)."""
    from alliance.services import tier_policy

    return tier_policy.recompute_tiers(session, now=now, currency=currency, minor_units_per_unit=minor_units_per_unit)


def _write_profile(session: Session, key_ring: KeyRing, member_id: int,
                   values: Mapping[str, str | date | None], now: datetime) -> None:
    unknown = set(values) - set(PROFILE_FIELDS)
    if unknown:
        raise ValidationFailed("unknown profile fields", fields={name: ["unknown"] for name in sorted(unknown)})
    columns: dict[str, object] = {"updated_at": now}
    if "name" in values:
        name = str(values["name"] or "").strip()
        if len(name) > MAX_NAME_CHARACTERS:
            raise ValidationFailed("the name is too long",
                                   fields={"name": [f"at most {MAX_NAME_CHARACTERS} characters"]})
        columns["name_encrypted"] = key_ring.encrypt(name, context=f"member:{member_id}:name") if name else None
    for field_name, normalise, kind in (("phone", normalise_phone, LookupKind.PHONE),
                                        ("email", normalise_email, LookupKind.EMAIL)):
        if field_name in values:
            given = values[field_name]
            value = normalise(str(given)) if given else None
            columns[f"{field_name}_encrypted"] = (
                key_ring.encrypt(value, context=f"member:{member_id}:{field_name}") if value else None)
            columns[f"{field_name}_lookup"] = key_ring.lookup_hash(value, kind=kind) if value else None
    if "birth_date" in values:
        # The full date is encrypted; the month and day stay in clear for the birthday job.
        born = birth_date_of(values["birth_date"], now=now)
        columns["birth_date_encrypted"] = (
            key_ring.encrypt(born.isoformat(), context=f"member:{member_id}:birth_date") if born else None)
        columns["birthday"] = month_day(born) if born else None
    session.execute(update(MemberProfile).where(MemberProfile.member_id == member_id).values(**columns))


def _require_not_erased(session: Session, member_id: int) -> None:
    erased_at = session.scalar(select(MemberProfile.erased_at).where(MemberProfile.member_id == member_id))
    if erased_at is not None:
        raise InvalidState("this member's personal data was erased")


def _masked(card_number: str) -> str:
    return "•" * 12 + card_number[-4:]


def _row_dict(row: Row[*tuple[Any, ...]] | Mapping[str, object]) -> dict[str, object]:
    values = row._asdict() if hasattr(row, "_asdict") else dict(row)
    return {key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in values.items()}
