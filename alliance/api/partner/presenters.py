"""Turning stored rows into the plain dicts the output schemas dump."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from alliance.models import Card, Purchase, RedemptionHold, Terminal

HOLD_STATUS_NAMES = {"open": "authorized", "captured": "captured", "voided": "voided", "expired": "expired"}


def masked_card(session: Session, card_id: int | None) -> str | None:
    """The card number with all but the last four digits hidden."""
    if card_id is None:
        return None
    return mask_card_number(session.scalar(select(Card.card_number).where(Card.id == card_id)))


def mask_card_number(number: str | None) -> str | None:
    """A known card number with all but the last four digits hidden."""
    return "•" * 12 + number[-4:] if number else None


def terminal_code(session: Session, terminal_id: int | None) -> str | None:
    """The code of a terminal, for replies."""
    if terminal_id is None:
        return None
    return session.scalar(select(Terminal.code).where(Terminal.id == terminal_id))


LOOK_UP = object()


def purchase(session: Session, row: Purchase | Row, now: datetime, *, card_number: str | None = None,
             terminal: str | None | object = LOOK_UP) -> dict[str, object]:
    """A purchase as the partner sees it.

    ``card_number`` (its card's number) and ``terminal`` (its terminal's code, or None)
    are given when the caller already knows them, so they are not read again.
    """
    pending = row.pending_until is not None and row.pending_until > now
    return {
        "receipt_id": row.receipt_id,
        "card_number": mask_card_number(card_number) if card_number else masked_card(session, row.card_id),
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "purchased_at": row.purchased_at,
        "reported_at": row.reported_at,
        "terminal": terminal_code(session, row.terminal_id) if terminal is LOOK_UP else terminal,
        "points": {
            "total": row.points_partner + row.points_hub,
            "partner_funded": row.points_partner,
            "hub_funded": row.points_hub,
            "state": "pending" if pending else "active",
            "pending_until": row.pending_until,
        },
        "breakdown": row.breakdown,
        "refunded_amount_minor": row.refunded_amount_minor,
    }


def redemption(session: Session, hold: RedemptionHold) -> dict[str, object]:
    """A redemption as the partner sees it."""
    return {
        "reference": hold.reference,
        "status": HOLD_STATUS_NAMES[hold.status],
        "points_held": hold.points_held,
        "points_captured": hold.points_captured,
        "points_refunded": hold.points_refunded,
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "closed_at": hold.closed_at,
        "terminal": terminal_code(session, hold.terminal_id),
    }
