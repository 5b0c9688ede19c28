"""Purchases reported by partners: points by the partner's rule, pending windows, refunds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.clock import add_months
from alliance.domain.earning import TIER_MULTIPLIERS, Campaign, EarnBreakdown, EarnRule, clawback_target, compute_earn
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.money import minor_units_per_unit
from alliance.models import Campaign as CampaignRow
from alliance.models import Card, Partner, PartnerEarnRule, Purchase, PurchaseRefund
from alliance.models.base import insert_unless_conflicting, integer_sum
from alliance.services import ledger
from alliance.services.member_verification import CardHolder, active_card_holder

# A till that was offline may report late, but not from another season.
MAX_REPORT_DELAY = timedelta(days=90)
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class RefundAlreadyRecorded(Conflict):
    """A refund id this partner has already used."""

    code = "refund_already_recorded"


class ReceiptAlreadyReported(Conflict):
    """A receipt id this partner has already reported."""

    code = "receipt_already_reported"


@dataclass(frozen=True, slots=True)
class PurchaseReport:
    """What a partner's till says about one purchase."""

    receipt_id: str
    card_number: str
    amount_minor: int
    currency: str
    purchased_at: datetime
    terminal_id: int | None = None


def report_purchase(
    session: Session, *, partner_id: int, report: PurchaseReport, now: datetime, expiry_months: int
) -> Purchase:
    """Record a purchase and post the points it earns; returns the stored purchase."""
    partner = _reporting_partner(session, partner_id)
    _check_report(report, partner, now)
    if session.scalar(select(Purchase.id).where(Purchase.partner_id == partner_id,
                                                 Purchase.receipt_id == report.receipt_id)) is not None:
        raise ReceiptAlreadyReported(f"receipt {report.receipt_id!r} was already reported")
    holder = active_card_holder(session, report.card_number)
    # Lock the member before reading today's points, so two tills cannot both fit under
    # the per-member-day cap with what together exceeds it.
    member = ledger.lock_member(session, holder.member_id)
    breakdown = _points_for(session, partner, holder, report)
    pending_until = None
    if partner.return_window_days:
        pending_until = report.purchased_at + timedelta(days=partner.return_window_days)
    expires_at = add_months(now, expiry_months)
    earn_transaction_id = bonus_transaction_id = None
    if breakdown.partner_points:
        earn_transaction_id = ledger.earn(
            session, member_id=holder.member_id, partner_id=partner_id, points=breakdown.partner_points, now=now,
            expires_at=expires_at, pending_until=pending_until, memo=f"receipt {report.receipt_id}", locked=member,
        ).transaction_id
    if breakdown.hub_points:
        bonus_transaction_id = ledger.earn(
            session, member_id=holder.member_id, partner_id=None, points=breakdown.hub_points, now=now,
            expires_at=expires_at, pending_until=pending_until, memo=f"campaign bonus, receipt {report.receipt_id}",
            locked=member,
        ).transaction_id
    purchase = session.scalars(
        insert_unless_conflicting(session, Purchase, "partner_id", "receipt_id").values(
            partner_id=partner_id, receipt_id=report.receipt_id, member_id=holder.member_id,
            card_id=holder.card_id, terminal_id=report.terminal_id, amount_minor=report.amount_minor,
            currency=report.currency, purchased_at=report.purchased_at, reported_at=now,
            points_partner=breakdown.partner_points, points_hub=breakdown.hub_points,
            earn_transaction_id=earn_transaction_id, bonus_transaction_id=bonus_transaction_id,
            pending_until=pending_until, breakdown=breakdown.to_dict(), refunded_amount_minor=0,
        ).returning(Purchase)
    ).first()
    if purchase is None:
        # Another request reported the same receipt between our check and this insert;
        # the caller's savepoint takes back the points posted above.
        raise ReceiptAlreadyReported(f"receipt {report.receipt_id!r} was already reported")
    return purchase


def lock_card_holders(session: Session, card_numbers: list[str]) -> None:
    """Lock the members behind these cards in ascending member id, before a batch posts.

    A batch touches many members in one transaction; taking their locks in the one
    global order first means two batches (or a batch and a transfer) cannot deadlock.
    """
    member_ids = session.scalars(select(Card.member_id).where(Card.card_number.in_(set(card_numbers)))).all()
    for member_id in sorted(set(member_ids)):
        ledger.lock_member(session, member_id, require_active=False)


def find_purchase(session: Session, *, partner_id: int, receipt_id: str) -> Purchase:
    """This partner's purchase with this receipt id; another partner's is not found."""
    purchase = session.scalar(select(Purchase).where(Purchase.partner_id == partner_id, Purchase.receipt_id == receipt_id))
    if purchase is None:
        raise NotFound(f"no purchase with receipt {receipt_id!r}")
    return purchase


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """A purchase refund and the points it took back."""

    refund: PurchaseRefund
    purchase: Purchase


def refund_purchase(
    session: Session, *, partner_id: int, receipt_id: str, refund_id: str, amount_minor: int, now: datetime
) -> RefundOutcome:
    """Refund part or all of a purchase, clawing back points in proportion, pending first."""
    purchase = session.scalar(
        select(Purchase).where(Purchase.partner_id == partner_id, Purchase.receipt_id == receipt_id).with_for_update()
    )
    if purchase is None:
        raise NotFound(f"no purchase with receipt {receipt_id!r}")
    if session.scalar(select(PurchaseRefund.id).where(PurchaseRefund.partner_id == partner_id,
                                                       PurchaseRefund.refund_id == refund_id)) is not None:
        raise RefundAlreadyRecorded(f"refund {refund_id!r} was already recorded")
    refunded_before = purchase.refunded_amount_minor
    refunded_after = refunded_before + amount_minor
    if refunded_after > purchase.amount_minor:
        raise ValidationFailed(
            f"refunds would total {refunded_after}, more than the purchase's {purchase.amount_minor}",
            fields={"amount_minor": ["exceeds what is left to refund"]},
        )
    recovered = unrecovered = 0
    for points_earned, transaction_id in ((purchase.points_partner, purchase.earn_transaction_id),
                                          (purchase.points_hub, purchase.bonus_transaction_id)):
        share = (clawback_target(points_earned=points_earned, amount_minor=purchase.amount_minor,
                                 refunded_amount_minor_total=refunded_after)
                 - clawback_target(points_earned=points_earned, amount_minor=purchase.amount_minor,
                                   refunded_amount_minor_total=refunded_before))
        if share and transaction_id is not None:
            result = ledger.clawback_earn(session, earn_transaction_id=transaction_id, points=share, now=now)
            recovered += result.points_recovered
            unrecovered += result.points_unrecovered
    session.execute(update(Purchase).where(Purchase.id == purchase.id).values(refunded_amount_minor=refunded_after))
    try:
        with session.begin_nested():
            refund_row_id = session.execute(insert(PurchaseRefund).values(
                purchase_id=purchase.id, partner_id=partner_id, refund_id=refund_id, amount_minor=amount_minor,
                points_recovered=recovered, points_unrecovered=unrecovered, created_at=now,
            ).returning(PurchaseRefund.id)).scalar_one()
    except IntegrityError as error:
        # The same refund id, used at the same moment for another purchase.
        raise RefundAlreadyRecorded(f"refund {refund_id!r} was already recorded") from error
    session.refresh(purchase)
    return RefundOutcome(refund=session.get_one(PurchaseRefund, refund_row_id), purchase=purchase)


def _reporting_partner(session: Session, partner_id: int) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    if partner.status != "active":
        raise InvalidState(f"partner {partner.code} is {partner.status} and cannot issue points")
    return partner


def _check_report(report: PurchaseReport, partner: Partner, now: datetime) -> None:
    if report.currency != partner.currency:
        raise ValidationFailed(f"this partner reports in {partner.currency}", fields={"currency": [f"must be {partner.currency}"]})
    if report.purchased_at > now + MAX_CLOCK_AHEAD:
        raise ValidationFailed("the purchase is in the future; check the till's clock",
                               fields={"purchased_at": ["in the future"]})
    if report.purchased_at < now - MAX_REPORT_DELAY:
        raise ValidationFailed(f"purchases older than {MAX_REPORT_DELAY.days} days cannot be reported",
                               fields={"purchased_at": ["too old"]})


def _points_for(session: Session, partner: Partner, holder: CardHolder, report: PurchaseReport) -> EarnBreakdown:
    rule_row = session.scalars(
        select(PartnerEarnRule)
        .where(PartnerEarnRule.partner_id == partner.id, PartnerEarnRule.effective_from <= report.purchased_at)
        .order_by(PartnerEarnRule.effective_from.desc()).limit(1)
    ).first()
    if rule_row is None:
        raise InvalidState(f"partner {partner.code} has no earn rule in force at {report.purchased_at.isoformat()}")
    rule = EarnRule.from_stored(rule_row.base_points_per_unit, rule_row.amount_ladder,
                                rule_row.per_purchase_cap_points, rule_row.per_member_day_cap_points)
    campaigns = [
        Campaign(campaign_id=row.id, name=row.name, funded_by=row.funded_by, multiplier=row.multiplier,
                 bonus_points=row.bonus_points, min_amount_minor=row.min_amount_minor)
        for row in session.scalars(select(CampaignRow).where(
            or_(CampaignRow.partner_id == partner.id, CampaignRow.partner_id.is_(None)),
            CampaignRow.starts_at <= report.purchased_at, CampaignRow.ends_at > report.purchased_at,
        ))
    ]
    # The day's points only matter under a per-member-day cap; without one, skip the query.
    earned_today = 0
    if rule.per_member_day_cap_points is not None:
        earned_today = _partner_points_on_day(session, partner, holder.member_id, report.purchased_at)
    return compute_earn(
        amount_minor=report.amount_minor, minor_units_per_unit=minor_units_per_unit(partner.currency), rule=rule,
        tier=holder.tier, tier_multiplier=TIER_MULTIPLIERS[holder.tier], campaigns=campaigns,
        partner_points_earned_today=earned_today,
    )


def _partner_points_on_day(session: Session, partner: Partner, member_id: int, moment: datetime) -> int:
    """Points this partner gave this member on the purchase's local calendar day."""
    zone = ZoneInfo(partner.time_zone)
    local_day = moment.astimezone(zone).date()
    day_start = datetime.combine(local_day, time(0), zone)
    day_end = datetime.combine(local_day + timedelta(days=1), time(0), zone)
    return session.scalar(
        select(integer_sum(Purchase.points_partner)).where(
            Purchase.partner_id == partner.id, Purchase.member_id == member_id,
            Purchase.purchased_at >= day_start, Purchase.purchased_at < day_end,
        )
    ) or 0
