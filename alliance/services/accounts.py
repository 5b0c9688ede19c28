"""Opening ledger accounts and finding them by code."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from alliance.domain.errors import NotFound
from alliance.domain.ledger import (
    HUB_ACCOUNT_KINDS,
    MEMBER_ACCOUNT_KINDS,
    PARTNER_ACCOUNT_KINDS,
    AccountKind,
    account_code,
)
from alliance.models import LedgerAccount
from alliance.storage.adapters import storage_for

# Opening order matters: a member's available account gets the lowest id of the three,
# so it is the first row any posting for that member locks.
MEMBER_OPENING_ORDER = (AccountKind.MEMBER_AVAILABLE, AccountKind.MEMBER_PENDING, AccountKind.MEMBER_HELD)
PARTNER_OPENING_ORDER = (AccountKind.PARTNER_ISSUED, AccountKind.PARTNER_REDEEMED)
HUB_OPENING_ORDER = (AccountKind.HUB_MARKETING, AccountKind.HUB_BREAKAGE, AccountKind.HUB_ROUNDING)
assert set(MEMBER_OPENING_ORDER) == MEMBER_ACCOUNT_KINDS
assert set(PARTNER_OPENING_ORDER) == PARTNER_ACCOUNT_KINDS
assert set(HUB_OPENING_ORDER) == HUB_ACCOUNT_KINDS


def open_member_accounts(session: Session, *, member_id: int, now: datetime) -> None:
    """Open a new member's available, pending and held accounts at zero."""
    session.execute(
        insert(LedgerAccount),
        [
            {"code": account_code(kind, member_id=member_id), "kind": kind.value, "member_id": member_id,
             "balance_points": 0, "created_at": now}
            for kind in MEMBER_OPENING_ORDER
        ],
    )


def open_partner_accounts(session: Session, *, partner_id: int, now: datetime) -> None:
    """Open a new partner's issued and redeemed accounts; they keep no stored balance."""
    session.execute(
        insert(LedgerAccount),
        [
            {"code": account_code(kind, partner_id=partner_id), "kind": kind.value, "partner_id": partner_id,
             "created_at": now}
            for kind in PARTNER_OPENING_ORDER
        ],
    )


def account_ids(session: Session, codes: list[str]) -> dict[str, int]:
    """Map account codes to ids in one query; a missing account is an error."""
    rows = session.execute(select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(codes)))
    found = {code: account_id for code, account_id in rows}
    missing = sorted(set(codes) - found.keys())
    if missing:
        raise NotFound(f"no ledger account {missing[0]}")
    return found


MEMBER_BALANCES = select(LedgerAccount.kind, LedgerAccount.balance_points).where(
    LedgerAccount.member_id == bindparam("member_id"))


def member_balances(session: Session, member_id: int) -> dict[str, int]:
    """The stored available, pending and held balances of a member."""
    rows = session.connection().execute(MEMBER_BALANCES, {"member_id": member_id}).all()
    if not rows:
        raise NotFound("the member has no ledger accounts")
    # A member's accounts always store a balance (the ``account_kind`` check); only partner
    # and hub accounts keep none, which the column's type allows for.
    return {kind.removeprefix("member_"): cast(int, balance) for kind, balance in rows}


def inquired_balances(session: Session, member_id: int) -> dict[str, int]:
    """``member_balances`` for a balance inquiry whose PIN matched, which lets its commit skip the disk flush.

    What such a transaction writes (the request's nonce, its idempotency claim and stored
    reply, perhaps a reset PIN-failure count) is harmless to lose in a crash: a retry runs
    the read again, a replayed nonce reads again, a lost reset keeps the count higher.
    A PIN that did not match is counted in a transaction that does flush. Read in the
    storage adapter's hot path, with the setting in the same round trip.
    """
    rows = storage_for(session).read_deferring_flush(session, MEMBER_BALANCES, {"member_id": member_id})
    if not rows:
        raise NotFound("the member has no ledger accounts")
    return {row.kind.removeprefix("member_"): cast(int, row.balance_points) for row in rows}
