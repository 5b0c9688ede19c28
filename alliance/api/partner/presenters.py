"""Turning stored rows into the plain dicts the output schemas dump."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from alliance.services import risk, terminals
from alliance.storage.unit_of_work import Session

HOLD_STATUS_NAMES = {"open": "authorized", "captured": "captured", "voided": "voided", "expired": "expired"}


class StoredPurchase(Protocol):
    """A stored purchase's columns, as a model instance or a row carries them (read-only here)."""

    @property
    def receipt_id(self) -> str: ...
    @property
    def card_id(self) -> int: ...
    @property
    def terminal_id(self) -> int | None: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def purchased_at(self) -> datetime: ...
    @property
    def reported_at(self) -> datetime: ...
    @property
    def points_partner(self) -> int: ...
    @property
    def points_hub(self) -> int: ...
    @property
    def pending_until(self) -> datetime | None: ...
    @property
    def earn_transaction_id(self) -> int | None: ...
    @property
    def bonus_transaction_id(self) -> int | None: ...
    @property
    def breakdown(self) -> Any: ...
    @property
    def refunded_amount_minor(self) -> int: ...


class StoredHold(Protocol):
    """A redemption hold's columns (read-only here)."""

    @property
    def reference(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def points_held(self) -> int: ...
    @property
    def points_captured(self) -> int: ...
    @property
    def points_refunded(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def closed_at(self) -> datetime | None: ...
    @property
    def terminal_id(self) -> int | None: ...


def masked_card(session: Session, card_id: int | None) -> str | None:
    """The card number with all but the last four digits hidden."""
    return mask_card_number(terminals.card_number(session, card_id))


def mask_card_number(number: str | None) -> str | None:
    """A known card number with all but the last four digits hidden."""
    return "•" * 12 + number[-4:] if number else None


LOOK_UP = object()


def purchase(session: Session, row: StoredPurchase, now: datetime, *, card_number: str | None = None,
             terminal: str | None | object = LOOK_UP) -> dict[str, object]:
    """A purchase as the partner sees it.

    ``card_number`` (its card's number) and ``terminal`` (its terminal's code, or None)
    are given when the caller already knows them, so they are not read again.
    """
    held = getattr(row, "held_for_review", None)
    if held is None:
        held = risk.under_review(session, earn_transaction_ids=[row.earn_transaction_id, row.bonus_transaction_id])
    pending = row.pending_until is not None and row.pending_until > now
    return {
        "receipt_id": row.receipt_id,
        "card_number": mask_card_number(card_number) if card_number else masked_card(session, row.card_id),
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "purchased_at": row.purchased_at,
        "reported_at": row.reported_at,
        "terminal": terminals.terminal_code(session, row.terminal_id) if terminal is LOOK_UP else terminal,
        "points": {
            "total": row.points_partner + row.points_hub,
            "partner_funded": row.points_partner,
            "hub_funded": row.points_hub,
            # Held: pending until the alliance's review releases them, whatever the return window says.
            "state": "held_for_review" if held else "pending" if pending else "active",
            "pending_until": None if held else row.pending_until,
        },
        "breakdown": row.breakdown,
        "refunded_amount_minor": row.refunded_amount_minor,
    }


def redemption(session: Session, hold: StoredHold) -> dict[str, object]:
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
        "terminal": terminals.terminal_code(session, hold.terminal_id),
    }
