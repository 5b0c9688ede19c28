"""Purchases reported by partners, one at a time: reading the facts, posting the points, refunds.

What a purchase earns is decided by ``alliance.domain.purchases.decide_purchase``, the
same function that decides each item of a batch (``purchase_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import BigInteger, Row, bindparam, exists, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from alliance.db import DriverStatement
from alliance.domain.clock import add_months
from alliance.domain.earning import Campaign, EarnRule, clawback_target
from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, account_code
from alliance.domain.purchases import (
    CardFacts,
    PurchaseFacts,
    ReceiptAlreadyReported,
    ReportingPartner,
    decide_purchase,
    local_day,
)
from alliance.models import Campaign as CampaignRow
from alliance.models import Card, LedgerAccount, Member, Partner, PartnerEarnRule, Purchase, PurchaseRefund
from alliance.models.base import integer_sum, prebuilt_inserts_unless_conflicting
from alliance.services import idempotency, ledger

_RULE = aliased(PartnerEarnRule)
_RUNNING = (or_(CampaignRow.partner_id == bindparam("partner_id"), CampaignRow.partner_id.is_(None)),
            CampaignRow.starts_at <= bindparam("purchased_at"), CampaignRow.ends_at > bindparam("purchased_at"))
# The partner's earning terms at the posting time (``ledger.EARNING_PARTNER``), its earn
# rule in force at the purchase time, whether the receipt was already reported, and
# whether any campaign runs at the purchase time (its rows are read only then).
PURCHASE_CONTEXT = (
    ledger.EARNING_PARTNER.add_columns(
        Partner.time_zone, Partner.return_window_days,
        exists().where(Purchase.partner_id == Partner.id, Purchase.receipt_id == bindparam("receipt_id"))
        .label("already_reported"),
        PartnerEarnRule.id.label("rule_id"), PartnerEarnRule.base_points_per_unit, PartnerEarnRule.amount_ladder,
        PartnerEarnRule.per_purchase_cap_points, PartnerEarnRule.per_member_day_cap_points,
        exists().where(*_RUNNING).label("campaigns_running"),
    )
    .outerjoin(PartnerEarnRule, PartnerEarnRule.id == (
        select(_RULE.id).where(_RULE.partner_id == Partner.id, _RULE.effective_from <= bindparam("purchased_at"))
        .order_by(_RULE.effective_from.desc()).limit(1).correlate(Partner).scalar_subquery()))
)
# The card, its member and the member's accounts, locked in id order (as ``ledger.lock_member``).
LOCK_CARD_HOLDER = (
    select(Card.id.label("card_id"), Card.status.label("card_status"), Member.id.label("member_id"), Member.status,
           Member.tier, LedgerAccount.id, LedgerAccount.kind, LedgerAccount.balance_points)
    .select_from(Card).join(Member, Member.id == Card.member_id)
    .join(LedgerAccount, LedgerAccount.member_id == Member.id)
    .where(Card.card_number == bindparam("card_number"))
    .order_by(LedgerAccount.id)
    .with_for_update(of=LedgerAccount)
)
_CONTEXT_ROW = PURCHASE_CONTEXT.subquery("purchase_context")
# Both in one round trip: the holder's locked account rows, each carrying the context
# (read, not locked). No row when the card is unknown; then the context alone is read,
# so the refusals still come in the order a partner would fix them.
CARD_HOLDER_IN_CONTEXT = LOCK_CARD_HOLDER.add_columns(*_CONTEXT_ROW.c).outerjoin(_CONTEXT_ROW, true())
_CARD_HOLDER_IN_CONTEXT_ON_DRIVER = DriverStatement(CARD_HOLDER_IN_CONTEXT)
# The same, with a partner request's idempotency claim in front (``idempotency.claim(first=...)``):
# the claim and this read in one round trip.
CLAIM_THEN_CARD_HOLDER_IN_CONTEXT = idempotency.claim_in_front_of(CARD_HOLDER_IN_CONTEXT)
CAMPAIGNS_RUNNING = select(
    CampaignRow.id, CampaignRow.name, CampaignRow.funded_by, CampaignRow.multiplier, CampaignRow.bonus_points,
    CampaignRow.min_amount_minor,
).where(*_RUNNING)
# Yields no row when the receipt is already stored.
INSERT_PURCHASE = prebuilt_inserts_unless_conflicting(Purchase, ["partner_id", "receipt_id"], *Purchase.__table__.c)
_PURCHASE_COLUMNS = [column.name for column in Purchase.__table__.c if column.name != "id"]
# PostgreSQL, for a purchase earning partner points only (the usual case): the earn's
# posting and the purchase row in one statement (``ledger.earn_posting_then``). The same
# row ``INSERT_PURCHASE`` writes, and none when the receipt is already stored.
EARN_AND_INSERT_PURCHASE = ledger.earn_posting_then(f"""
INSERT INTO purchases ({", ".join(_PURCHASE_COLUMNS)})
SELECT {", ".join("new_transaction.id" if name == "earn_transaction_id" else f":purchase_{name}"
                  for name in _PURCHASE_COLUMNS)}
  FROM new_transaction
ON CONFLICT (partner_id, receipt_id) DO NOTHING
RETURNING {", ".join(column.name for column in Purchase.__table__.c)}, (SELECT id FROM new_lot) AS earn_lot_id
""").bindparams(*(bindparam(f"purchase_{column.name}", type_=column.type)
                  for column in Purchase.__table__.c if column.name not in {"id", "earn_transaction_id"})
                ).columns(*Purchase.__table__.c, earn_lot_id=BigInteger)
_EARN_AND_INSERT_PURCHASE_ON_DRIVER = DriverStatement(EARN_AND_INSERT_PURCHASE)


class RefundAlreadyRecorded(Conflict):
    """A refund id this partner has already used."""

    code = "refund_already_recorded"


@dataclass(frozen=True, slots=True)
class PurchaseReport:
    """What a partner's till says about one purchase."""

    receipt_id: str
    card_number: str
    amount_minor: int
    currency: str
    purchased_at: datetime
    terminal_id: int | None = None


def context_parameters(*, partner_id: int, receipt_id: str, card_number: str, purchased_at: datetime,
                       now: datetime) -> dict[str, object]:
    """The bind values of ``CARD_HOLDER_IN_CONTEXT`` for a report (and of ``PURCHASE_CONTEXT``)."""
    return {
        "partner_id": partner_id, "receipt_id": receipt_id, "purchased_at": purchased_at, "at": now,
        "account_code": account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id), "card_number": card_number,
    }


def report_purchase(
    session: Session, *, partner_id: int, report: PurchaseReport, now: datetime, expiry_months: int,
    context_rows: list | None = None,  # type: ignore[type-arg]
) -> Row:
    """Record a purchase and post the points it earns; returns the stored purchase's columns.

    One round trip before the writes in the usual case (``CARD_HOLDER_IN_CONTEXT``): the
    card's member with its accounts locked, and the partner with its earn rule in force,
    issue price and whether the receipt is known. More only when needed: the campaigns'
    rows when one runs; the day's points under a per-member-day cap. The checks run in
    the order a partner would fix them: partner, report, receipt, card, rule.
    """
    connection = session.connection()
    parameters = context_parameters(partner_id=partner_id, receipt_id=report.receipt_id, card_number=report.card_number,
                                    purchased_at=report.purchased_at, now=now)
    # The member is locked before today's points are read, so two tills cannot both fit
    # under the per-member-day cap with what together exceeds it. ``context_rows``: that
    # statement's rows, already read with the request's claim (same parameters).
    rows = context_rows if context_rows is not None else _CARD_HOLDER_IN_CONTEXT_ON_DRIVER.rows(connection, parameters)
    context = rows[0] if rows else connection.execute(PURCHASE_CONTEXT, parameters).first()
    decision = decide_purchase(report, _facts(session, partner_id, context, rows, report), now)
    holder, breakdown, pending_until = decision.card, decision.breakdown, decision.pending_until
    member = ledger.member_accounts_from_rows(rows, holder.member_id, require_active=True)
    expires_at = add_months(now, expiry_months)
    purchase_row = {
        "partner_id": partner_id, "receipt_id": report.receipt_id, "member_id": holder.member_id,
        "card_id": holder.card_id, "terminal_id": report.terminal_id, "amount_minor": report.amount_minor,
        "currency": report.currency, "purchased_at": report.purchased_at, "reported_at": now,
        "points_partner": breakdown.partner_points, "points_hub": breakdown.hub_points,
        "bonus_transaction_id": None, "pending_until": pending_until, "breakdown": breakdown.to_dict(),
        "refunded_amount_minor": 0,
    }
    earn_transaction_id = bonus_transaction_id = None
    in_one_statement = connection.dialect.name == "postgresql" and breakdown.partner_points and not breakdown.hub_points
    if breakdown.partner_points:
        earned = ledger.earn(
            session, member_id=holder.member_id, partner_id=partner_id, points=breakdown.partner_points, now=now,
            expires_at=expires_at, pending_until=pending_until, memo=f"receipt {report.receipt_id}", locked=member,
            terms=ledger.earning_terms(context, partner_id, now),
            then=(_EARN_AND_INSERT_PURCHASE_ON_DRIVER, {f"purchase_{name}": value for name, value in purchase_row.items()})
            if in_one_statement else None,
        )
        if in_one_statement:
            return _stored(earned.then_row, report)
        earn_transaction_id = earned.transaction_id
    if breakdown.hub_points:
        bonus_transaction_id = ledger.earn(
            session, member_id=holder.member_id, partner_id=None, points=breakdown.hub_points, now=now,
            expires_at=expires_at, pending_until=pending_until, memo=f"campaign bonus, receipt {report.receipt_id}",
            locked=member,
        ).transaction_id
    return _stored(connection.execute(INSERT_PURCHASE[connection.dialect.name], {
        **purchase_row, "earn_transaction_id": earn_transaction_id, "bonus_transaction_id": bonus_transaction_id,
    }).first(), report)


def _stored(purchase: Row | None, report: PurchaseReport) -> Row:
    if purchase is None:
        # Another request reported the same receipt between our check and this insert;
        # the caller rolls back the points posted above with the refusal.
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


def _facts(session: Session, partner_id: int, context, rows, report: PurchaseReport) -> PurchaseFacts:  # type: ignore[no-untyped-def]
    """What ``decide_purchase`` needs, from ``CARD_HOLDER_IN_CONTEXT``'s rows (or ``PURCHASE_CONTEXT``'s row).

    The campaigns' rows are read only when one runs, the day's points only under a
    per-member-day cap, and neither for a purchase refused before it could earn.
    """
    partner = None
    if context is not None and context.partner_found is not None:
        partner = ReportingPartner(id=partner_id, code=context.partner_code, status=context.partner_status,
                                   currency=context.partner_currency, time_zone=context.time_zone,
                                   return_window_days=context.return_window_days)
    card = None
    if rows:
        first = rows[0]
        card = CardFacts(card_id=first.card_id, card_status=first.card_status, member_id=first.member_id,
                         member_status=first.status, tier=first.tier)
    rule = None
    if context is not None and context.rule_id is not None:
        rule = EarnRule.from_stored(context.base_points_per_unit, context.amount_ladder,
                                    context.per_purchase_cap_points, context.per_member_day_cap_points)
    facts = PurchaseFacts(partner_id=partner_id, partner=partner, receipt_reported=bool(
        context is not None and context.already_reported), card=card, rule=rule)
    if partner is None or card is None or rule is None or partner.status != "active" or facts.receipt_reported:
        return facts
    campaigns = [
        Campaign(campaign_id=row.id, name=row.name, funded_by=row.funded_by, multiplier=row.multiplier,
                 bonus_points=row.bonus_points, min_amount_minor=row.min_amount_minor)
        for row in session.connection().execute(CAMPAIGNS_RUNNING, {"partner_id": partner_id,
                                                                    "purchased_at": report.purchased_at})
    ] if context.campaigns_running else []
    earned_today = 0
    if rule.per_member_day_cap_points is not None:
        earned_today = _partner_points_on_day(session, partner, card.member_id, report.purchased_at)
    return replace(facts, campaigns=campaigns, partner_points_today=earned_today)


def _partner_points_on_day(session: Session, partner: ReportingPartner, member_id: int, moment: datetime) -> int:
    """Points this partner gave this member on the purchase's local calendar day."""
    day = local_day(moment, partner.time_zone)
    return session.scalar(
        select(integer_sum(Purchase.points_partner)).where(
            Purchase.partner_id == partner.id, Purchase.member_id == member_id,
            Purchase.purchased_at >= day.start, Purchase.purchased_at < day.end,
        )
    ) or 0
