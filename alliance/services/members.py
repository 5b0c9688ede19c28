"""Enrolling members and issuing their cards."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from alliance.domain.cards import card_number_from_sequence
from alliance.models import Card, Member
from alliance.services.accounts import open_member_accounts

CARD_ISSUER_PREFIX = "6390"
MEMBER_NUMBER_BYTES = 8


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new member, their public number and first card."""

    member_id: int
    member_number: str
    card_id: int
    card_number: str


def enrol_member(session: Session, *, now: datetime) -> Enrolment:
    """Create a member with their ledger accounts and a first card."""
    # A random public number, so member numbers do not reveal how many members exist.
    member_number = secrets.token_hex(MEMBER_NUMBER_BYTES)
    member_id = session.execute(
        insert(Member).values(member_number=member_number, status="active", tier="standard", enrolled_at=now)
        .returning(Member.id)
    ).scalar_one()
    open_member_accounts(session, member_id=member_id, now=now)
    card_id, card_number = issue_card(session, member_id=member_id, now=now)
    return Enrolment(member_id=member_id, member_number=member_number, card_id=card_id, card_number=card_number)


def issue_card(session: Session, *, member_id: int, now: datetime) -> tuple[int, str]:
    """Issue a card whose number is the issuer prefix, the card's id and a Luhn digit."""
    # The number derives from the row id, which is only known after the insert, so the
    # row starts with a unique placeholder and gets its number in the same transaction.
    placeholder = uuid.uuid4().hex[:19]
    card_id = session.execute(
        insert(Card).values(member_id=member_id, card_number=placeholder, status="active",
                            failed_pin_attempts=0, issued_at=now).returning(Card.id)
    ).scalar_one()
    card_number = card_number_from_sequence(CARD_ISSUER_PREFIX, card_id)
    session.execute(update(Card).where(Card.id == card_id).values(card_number=card_number))
    return card_id, card_number
