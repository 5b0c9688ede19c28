"""Redemptions at any partner: authorize (a hold), capture, void, refund, look up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.coupons import Call
from alliance.domain.errors import Conflict, NotFound
from alliance.domain.risk import Measure
from alliance.models import Partner, RedemptionHold, RedemptionRefund
from alliance.services import coupons, ledger, risk, risk_patterns
from alliance.services.member_verification import CardHolder
from alliance.services.purchases import RefundAlreadyRecorded


class ReferenceAlreadyUsed(Conflict):
    """A redemption reference this partner has already used."""

    code = "reference_already_used"


def authorize(
    session: Session, *, partner_id: int, holder: CardHolder, reference: str, points: int, ttl_s: int,
    terminal_id: int | None, now: datetime, coupon_code: str | None = None,
) -> RedemptionHold:
    """Hold points of a verified member for a redemption at this partner, under the risk controls' limits.

    A redemption past a refusing limit raises ``RiskDeclined``; one past a flagging limit
    goes ahead and is kept for review. The ledger judges first: a redemption the member's
    points do not cover is refused as such (422), not kept as a risk decision.
    ``coupon_code``: an amount_off coupon of the member that the held points pay for
    (``coupons.present``), used with the hold or refused with it (``CouponInvalid``).
    """
    if _find(session, partner_id, reference) is not None:
        raise ReferenceAlreadyUsed(f"redemption reference {reference!r} was already used")
    grant = None
    if coupon_code is not None:
        # The member first, then the coupon: the lock order of a purchase presenting one.
        ledger.lock_member(session, holder.member_id, require_active=False)
        grant = coupons.present(session, code=coupon_code, member_id=holder.member_id, partner_id=partner_id,
                                partner_currency=session.get_one(Partner, partner_id).currency, moment=now,
                                call=Call.REDEMPTION, now=now, hold_points=points)
    risk_patterns.on_redemption(session, partner_id=partner_id, terminal_id=terminal_id, member_id=holder.member_id,
                                card_id=holder.card_id, tier=holder.tier, points=points, reference=reference, now=now)
    result = ledger.authorize_hold(session, member_id=holder.member_id, partner_id=partner_id, points=points,
                                   now=now, ttl_s=ttl_s)
    try:
        with session.begin_nested():
            session.execute(update(RedemptionHold).where(RedemptionHold.id == result.hold_id).values(
                reference=reference, terminal_id=terminal_id, card_id=holder.card_id))
    except IntegrityError as error:
        raise ReferenceAlreadyUsed(f"redemption reference {reference!r} was already used") from error
    # Decided with the hold written (the member locked, the points covered); a refusal takes it back.
    risk.assess(session, measure=Measure.REDEEM, points=points, reference=reference, now=now,
                subject=risk.Subject(partner_id=partner_id, terminal_id=terminal_id, member_id=holder.member_id,
                                     card_id=holder.card_id, tier=holder.tier, exclude_hold_id=result.hold_id))
    if grant is not None:
        coupons.use(session, grant, member_id=holder.member_id, partner_id=partner_id, now=now, hold_id=result.hold_id)
    return session.get_one(RedemptionHold, result.hold_id, populate_existing=True)


def coupon_of(session: Session, hold: RedemptionHold) -> dict[str, object] | None:
    """The amount_off coupon used with a redemption, as its reply names it, or None."""
    return coupons.used_with_hold(session, member_id=hold.member_id, hold_id=hold.id)


def find_redemption(session: Session, *, partner_id: int, reference: str) -> RedemptionHold:
    """This partner's redemption with this reference; another partner's is not found."""
    hold = _find(session, partner_id, reference)
    if hold is None:
        raise NotFound(f"no redemption with reference {reference!r}")
    return hold


def capture(session: Session, *, partner_id: int, reference: str, points: int, now: datetime) -> RedemptionHold:
    """Spend some or all of the held points, once; the rest go back to the member."""
    hold = find_redemption(session, partner_id=partner_id, reference=reference)
    ledger.capture_hold(session, hold_id=hold.id, points=points, now=now)
    return session.get_one(RedemptionHold, hold.id, populate_existing=True)


def void(session: Session, *, partner_id: int, reference: str, now: datetime) -> RedemptionHold:
    """Release every held point of an open redemption."""
    hold = find_redemption(session, partner_id=partner_id, reference=reference)
    ledger.void_hold(session, hold_id=hold.id, now=now)
    # An amount_off coupon it paid for can be used again.
    coupons.give_back(session, hold_id=hold.id, member_id=hold.member_id, now=now)
    return session.get_one(RedemptionHold, hold.id, populate_existing=True)


def refund(
    session: Session, *, partner_id: int, reference: str, refund_id: str, points: int, now: datetime
) -> tuple[RedemptionHold, RedemptionRefund]:
    """Give back points of a captured redemption under the partner's own refund id."""
    hold = find_redemption(session, partner_id=partner_id, reference=reference)
    if session.scalar(select(RedemptionRefund.id).where(RedemptionRefund.partner_id == partner_id,
                                                         RedemptionRefund.refund_id == refund_id)) is not None:
        raise RefundAlreadyRecorded(f"refund {refund_id!r} was already recorded")
    transaction_id = ledger.refund_redemption(session, hold_id=hold.id, points=points, now=now)
    try:
        with session.begin_nested():
            refund_row_id = session.execute(insert(RedemptionRefund).values(
                hold_id=hold.id, partner_id=partner_id, refund_id=refund_id, points=points,
                transaction_id=transaction_id, created_at=now,
            ).returning(RedemptionRefund.id)).scalar_one()
    except IntegrityError as error:
        # The same refund id, used at the same moment for another redemption.
        raise RefundAlreadyRecorded(f"refund {refund_id!r} was already recorded") from error
    return (session.get_one(RedemptionHold, hold.id, populate_existing=True),
            session.get_one(RedemptionRefund, refund_row_id))


def _find(session: Session, partner_id: int, reference: str) -> RedemptionHold | None:
    return session.scalar(
        select(RedemptionHold).where(RedemptionHold.partner_id == partner_id, RedemptionHold.reference == reference)
    )
