"""Purchases reported by partners: one pipeline for a single report and a batch, and refunds.

A report goes through three steps, whether it comes alone or among a thousand:

1. **Facts** are read once: the partner with its earning terms (issue price, the
   accounts that fund earns), the earn rule and campaigns in force, the card with its
   member (whose accounts are locked first), whether the receipt is known and, under a
   per-member-day cap, the day's points. A single report reads them in one round trip
   (``CARD_HOLDER_IN_CONTEXT``, which a partner request's claim carries in its own); a
   batch reads each kind once for all its items.
2. **Decision**: ``plan`` decides each item with the domain's one rule
   (``alliance.domain.purchases.decide_purchase``) plus what the ledger refuses before it
   writes, in batch order, so two items of one member and day share a cap exactly as two
   single reports would.
3. **Writing**: every applied item's postings and purchase rows go to the ledger's one
   earn writer (``ledger.write_earns``, one statement on PostgreSQL), which the database's
   triggers check as they check every posting.

A single report is a batch of one that reads its facts in the claim's round trip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Integer, Row, bindparam, exists, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from alliance.domain.cards import is_valid_card_number
from alliance.domain.clock import add_months
from alliance.domain.coupons import Call, CouponInvalid
from alliance.domain.credit import OVER_LIMIT, CreditLimitReached
from alliance.domain.earning import (
    BUILT_IN_TIER_SCHEDULE,
    Campaign,
    EarnBreakdown,
    EarnRule,
    TierSchedule,
    clawback_target,
)
from alliance.domain.errors import AllianceError, Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, TransactionKind, account_code
from alliance.domain.purchases import (
    CardFacts,
    PurchaseFacts,
    PurchaseReportLike,
    ReceiptAlreadyReported,
    ReportingPartner,
    decide_purchase,
    in_report_window,
    local_day,
)
from alliance.domain.risk import Measure, Scope
from alliance.models import Campaign as CampaignRow
from alliance.models import (
    Card,
    LedgerAccount,
    Member,
    Partner,
    PartnerCredit,
    PartnerEarnRule,
    PartnerPrice,
    Purchase,
    PurchaseRefund,
    Terminal,
)
from alliance.models.base import integer_sum
from alliance.services import coupons, ledger, risk, risk_patterns, tier_policy, webhooks
from alliance.services.campaigns import CampaignBook, awards_of, joint_shares_of_purchase, record_awards
from alliance.services.risk import Decided
from alliance.storage import FirstRead, PurchaseRow, WrittenEarns
from alliance.storage.adapters import storage_for

# The partner API's limit; the service keeps its own so no caller can hand it more.
MAX_BATCH_PURCHASES = 1000
# An earn of at least this many points is announced to the member (``member.points_earned``);
# ``ALLIANCE_MEMBER_POINTS_NOTICE_THRESHOLD`` sets it.
POINTS_NOTICE_THRESHOLD = 1_000
MARKETING_ACCOUNT_CODE = account_code(AccountKind.HUB_MARKETING)

TerminalResolver = Callable[[str | None], int | None]
# What a till reported about one purchase: a single report, or an item of a batch.
_Item = TypeVar("_Item", bound=PurchaseReportLike)

_RULE = aliased(PartnerEarnRule)
# The partner's credit state from its snapshot (``settlement.credit``), read inside the partner's
# own read: NULL (no snapshot) or anything but ``over`` lets it issue.
_CREDIT_STATE = (select(PartnerCredit.state).where(PartnerCredit.partner_id == Partner.id).correlate(Partner)
                 .scalar_subquery().label("credit_state"))
_RUNNING = (or_(CampaignRow.partner_id == bindparam("partner_id"), CampaignRow.partner_id.is_(None)),
            CampaignRow.starts_at <= bindparam("purchased_at"), CampaignRow.ends_at > bindparam("purchased_at"),
            CampaignRow.stopped_at.is_(None))
# What a campaign's targeting, joint funding and budget need (``CampaignBook``).
_CAMPAIGN_REACH = (CampaignRow.target_tiers, CampaignRow.min_tenure_months, CampaignRow.segment_name,
                   CampaignRow.budget_points, CampaignRow.budget_minor)
# A single report's partner: its earning terms at the posting time (``ledger.EARNING_PARTNER``),
# the hub's marketing account (which funds campaign bonuses), its earn rule in force at the
# purchase time, whether the receipt was already reported, and whether any campaign runs
# at the purchase time (its rows are read only then).
PURCHASE_CONTEXT = (
    ledger.EARNING_PARTNER.add_columns(
        Partner.time_zone, Partner.return_window_days,
        select(LedgerAccount.id).where(LedgerAccount.code == MARKETING_ACCOUNT_CODE)
        .scalar_subquery().label("marketing_account_id"),
        exists().where(Purchase.partner_id == Partner.id, Purchase.receipt_id == bindparam("receipt_id"))
        .label("already_reported"),
        PartnerEarnRule.id.label("rule_id"), PartnerEarnRule.base_points_per_unit, PartnerEarnRule.amount_ladder,
        PartnerEarnRule.per_purchase_cap_points, PartnerEarnRule.per_member_day_cap_points,
        exists().where(*_RUNNING).label("campaigns_running"),
        _CREDIT_STATE,
    )
    .outerjoin(PartnerEarnRule, PartnerEarnRule.id == (
        select(_RULE.id).where(_RULE.partner_id == Partner.id, _RULE.effective_from <= bindparam("purchased_at"))
        .order_by(_RULE.effective_from.desc()).limit(1).correlate(Partner).scalar_subquery()))
)
# The card, its member and the member's accounts, locked in id order (as ``ledger.lock_member``).
LOCK_CARD_HOLDER = (
    select(Card.id.label("card_id"), Card.status.label("card_status"), Member.id.label("member_id"), Member.status,
           Member.tier, Member.enrolled_at, LedgerAccount.id, LedgerAccount.kind, LedgerAccount.balance_points)
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
# What the earn limits count a single report's purchases by, in its first read
# (``risk.carried_earn_figures``): the card whose number it gives and that card's member,
# the partner, and the till (the key's own, else the one it names by code).
_CARD_NAMED = select(Card.id).where(Card.card_number == bindparam("card_number")).scalar_subquery()
_MEMBER_NAMED = select(Card.member_id).where(Card.card_number == bindparam("card_number")).scalar_subquery()
_TERMINAL_NAMED = func.coalesce(
    bindparam("risk_terminal_id", type_=Integer()),
    select(Terminal.id).where(Terminal.partner_id == bindparam("partner_id"),
                              Terminal.code == bindparam("risk_terminal_code")).scalar_subquery())
RISK_KEYS = {Scope.CARD: _CARD_NAMED, Scope.MEMBER: _MEMBER_NAMED, Scope.PARTNER: bindparam("partner_id"),
             Scope.TERMINAL: _TERMINAL_NAMED}
CAMPAIGNS_RUNNING = select(
    CampaignRow.id, CampaignRow.name, CampaignRow.funded_by, CampaignRow.multiplier, CampaignRow.bonus_points,
    CampaignRow.min_amount_minor, *_CAMPAIGN_REACH,
).where(*_RUNNING)


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
    # A coupon presented with the purchase (``alliance.services.coupons``): used in the same transaction.
    coupon_code: str | None = None


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One purchase of a batch as the till reported it, its terminal named by code (or not at all)."""

    receipt_id: str
    card_number: str
    amount_minor: int
    currency: str
    purchased_at: datetime
    terminal: str | None = None


@dataclass(frozen=True, slots=True)
class ReportedPurchase:
    """A purchase as stored, with its card's number and terminal's code for the reply."""

    receipt_id: str
    card_id: int
    card_number: str
    member_id: int
    terminal_id: int | None
    terminal_code: str | None
    amount_minor: int
    currency: str
    purchased_at: datetime
    reported_at: datetime
    points_partner: int
    points_hub: int
    earn_transaction_id: int | None
    bonus_transaction_id: int | None
    pending_until: datetime | None
    breakdown: dict[str, Any]
    refunded_amount_minor: int = 0
    id: int | None = None
    # Its points wait, pending, for a risk reviewer (``alliance.services.risk``).
    held_for_review: bool = False


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item's outcome: the stored purchase, or the error refusing it."""

    purchase: ReportedPurchase | None = None
    error: AllianceError | None = None


def context_parameters(*, partner_id: int, receipt_id: str, card_number: str, purchased_at: datetime,
                       now: datetime) -> dict[str, object]:
    """The bind values of ``CARD_HOLDER_IN_CONTEXT`` for a report (and of ``PURCHASE_CONTEXT``)."""
    return {
        "partner_id": partner_id, "receipt_id": receipt_id, "purchased_at": purchased_at, "at": now,
        "account_code": account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id), "card_number": card_number,
    }


@dataclass(frozen=True, slots=True)
class ReportRead:
    """A single report's first read (``CARD_HOLDER_IN_CONTEXT``, with the figures of the earn limits that apply
    joined to it: ``risk``), for a partner request's claim to carry."""

    read: FirstRead
    risk: risk.CarriedEarnFigures | None


# The first read with each shape of carried figures joined, built once per shape.
_READS_WITH_FIGURES: dict[int, tuple[Any, Any]] = {}


def first_read(session: Session, *, partner_id: int, report: PurchaseReport, now: datetime,
               terminal_code: str | None = None) -> ReportRead:
    """A single report's facts and its earn limits' figures, read in one statement.

    The till is ``report.terminal_id`` (a key's own, or one already resolved), else the
    one ``terminal_code`` names; the figures read for it count only if the report turns
    out to act for that till.
    """
    parameters = {**context_parameters(partner_id=partner_id, receipt_id=report.receipt_id,
                                       card_number=report.card_number, purchased_at=report.purchased_at, now=now),
                  "risk_terminal_id": report.terminal_id, "risk_terminal_code": terminal_code}
    carried = risk.carried_earn_figures(session, partner_id=partner_id, keys=RISK_KEYS, now=now)
    if carried is None:
        return ReportRead(FirstRead(CARD_HOLDER_IN_CONTEXT, parameters), None)
    found = _READS_WITH_FIGURES.get(id(carried.subquery))
    if found is None or found[0] is not carried.subquery:
        if len(_READS_WITH_FIGURES) >= 256:
            _READS_WITH_FIGURES.clear()
        found = _READS_WITH_FIGURES[id(carried.subquery)] = (carried.subquery, CARD_HOLDER_IN_CONTEXT.add_columns(
            *carried.subquery.c).outerjoin(carried.subquery, true()))
    return ReportRead(FirstRead(found[1], {**parameters, **carried.parameters}), carried)


def report_purchase(
    session: Session, *, partner_id: int, report: PurchaseReport, now: datetime, expiry_months: int,
    first: ReportRead | None = None, context_rows: list[Any] | None = None,
    points_notice_threshold: int = POINTS_NOTICE_THRESHOLD,
) -> ReportedPurchase:
    """Record a purchase and post the points it earns: a batch of one whose facts come in one round trip.

    ``first``/``context_rows``: ``first_read`` and its rows, already read with the
    request's claim (or ``first`` alone, to read here). The member is locked before
    today's points are read, so two tills cannot both fit under the per-member-day cap
    with what together exceeds it. The checks run in the order a partner would fix them:
    partner, report, receipt, card, rule. An earn of at least ``points_notice_threshold``
    points is sent to the member (``member.points_earned``); a smaller one adds no statement.
    """
    if first is None:
        first = first_read(session, partner_id=partner_id, report=report, now=now)
    read = first.read
    rows = context_rows if context_rows is not None else storage_for(session).read(session, read.statement,
                                                                                   read.parameters)
    context = rows[0] if rows else session.connection().execute(PURCHASE_CONTEXT, read.parameters).first()
    partner = _terms_from_context(partner_id, context)
    holder = _holder_from_rows(rows)
    book = CampaignBook()
    facts = _single_facts(session, partner_id, partner, context, holder, report, book, now)
    expires_at = add_months(now, expiry_months)
    planned = plan(partner, facts, 0, report, report.terminal_id, holder, now, expires_at, book=book)
    assert partner is not None
    if report.coupon_code is not None:
        planned = _with_coupon(session, partner, planned, report.coupon_code, now, expires_at)
    carried = (risk.Carried(first.risk.limits, first.risk.figures(rows[0]))
               if first.risk is not None and rows else None)
    (assessed,) = _assess_risk(session, partner, [planned], now, carried=carried)
    if isinstance(assessed, AllianceError):
        raise assessed
    planned = assessed
    try:
        written = _write(session, partner, [planned], now, expires_at, book)
    except _ReceiptsTaken:
        # Another request reported the same receipt between our check and this insert;
        # the caller takes back the points posted with the refusal.
        raise ReceiptAlreadyReported(f"receipt {report.receipt_id!r} was already reported") from None
    _notify_large_earns(session, partner, [planned], now, points_notice_threshold)
    return _reported(planned, written, card_number=report.card_number, terminal_code=None, now=now)


def report_purchases(
    session: Session, *, partner_id: int, items: Sequence[BatchItem], resolve_terminal: TerminalResolver,
    now: datetime, expiry_months: int, points_notice_threshold: int = POINTS_NOTICE_THRESHOLD,
) -> list[BatchOutcome]:
    """Report a batch of purchases in order; each item is applied or rejected as a single report would be.

    ``resolve_terminal`` maps an item's terminal code to the terminal it acts for, or
    raises the caller's error (an unknown terminal, a key bound to another); it is asked
    once per distinct code.
    """
    if not 0 < len(items) <= MAX_BATCH_PURCHASES:
        raise ValidationFailed(f"a batch holds 1 to {MAX_BATCH_PURCHASES} purchases",
                               fields={"purchases": [f"1 to {MAX_BATCH_PURCHASES} items"]})
    terminals = _resolve_terminals(items, resolve_terminal)
    facts = _read_facts(session, partner_id, items, now)
    expires_at = add_months(now, expiry_months)
    # Each retry rejects at least one more item, so a batch is written at most once per item, plus once.
    for _ in range(len(items) + 1):
        decisions = _decide_all(facts, items, terminals, now, expires_at)
        if facts.partner is not None:
            decisions = _with_risk(session, facts.partner, decisions, now)
        planned = [decision for decision in decisions if isinstance(decision, _Planned)]
        try:
            # A savepoint, so a receipt another request stored meanwhile undoes only this write.
            with session.begin_nested():
                written = (_write(session, facts.partner, planned, now, expires_at, facts.book) if planned
                           else WrittenEarns())
        except _ReceiptsTaken as taken:
            assert not taken.receipt_ids & facts.reported_receipts, "a known receipt was planned again"
            # Those items are now "already reported"; deciding again also gives their day
            # points back to the member's later items, as the single path's savepoint would.
            facts.reported_receipts.update(taken.receipt_ids)
            continue
        _notify_large_earns(session, facts.partner, planned, now, points_notice_threshold)
        _keep_refusals(session, decisions)
        return _outcomes(decisions, written, _terminal_codes(session, decisions), now)
    raise AssertionError("a retry rejects at least one more item, so the batch cannot need more retries than items")


class _ReceiptsTaken(Exception):
    """Receipts another transaction reported between this batch's check and its insert."""

    def __init__(self, receipt_ids: set[str]) -> None:
        super().__init__(f"{len(receipt_ids)} receipts were reported meanwhile")
        self.receipt_ids = receipt_ids


def _resolve_terminals(items: Sequence[BatchItem],
                       resolve_terminal: TerminalResolver) -> list[int | None | AllianceError]:
    """Each item's terminal id, or the error naming it raised; one resolution per distinct code."""
    resolved: dict[str | None, int | None | AllianceError] = {}
    for code in dict.fromkeys(item.terminal for item in items):
        try:
            resolved[code] = resolve_terminal(code)
        except AllianceError as error:
            resolved[code] = error
    return [resolved[item.terminal] for item in items]


@dataclass(frozen=True, slots=True)
class _Partner:
    """The reporting partner and its earning terms at ``now`` (the price and accounts an earn posts with)."""
    # Read for a single report from ``PURCHASE_CONTEXT``, for a batch by ``_read_partner``.

    id: int
    code: str
    status: str
    currency: str
    time_zone: str
    return_window_days: int
    issue_price_per_point: Decimal | None
    issued_account_id: int | None
    marketing_account_id: int | None
    # Its credit snapshot says it has reached its limit: new issuance is refused.
    credit_over: bool = False

    @property
    def reporting(self) -> ReportingPartner:
        """The partner as ``decide_purchase`` sees it."""
        return ReportingPartner(id=self.id, code=self.code, status=self.status, currency=self.currency,
                                time_zone=self.time_zone, return_window_days=self.return_window_days)


@dataclass(frozen=True, slots=True)
class _Holder:
    """A card, its member, and the member's locked account ids."""

    card_id: int
    card_status: str
    member_id: int
    member_status: str
    tier: str
    available_id: int | None
    pending_id: int | None
    enrolled_at: datetime | None = None

    @property
    def target(self) -> _EarnTarget:
        """Where the member's earns go (a holder without accounts is refused while deciding)."""
        assert self.available_id is not None and self.pending_id is not None
        return _EarnTarget(self.member_id, self.available_id, self.pending_id)

    @property
    def card(self) -> CardFacts:
        """The card and member as ``decide_purchase`` sees them."""
        return CardFacts(card_id=self.card_id, card_status=self.card_status, member_id=self.member_id,
                         member_status=self.member_status, tier=self.tier)


@dataclass(frozen=True, slots=True)
class _Day:
    """A member's local calendar day at the partner, as the half-open UTC range the cap sums over."""

    member_id: int
    local_day: date
    start: datetime
    end: datetime


@dataclass
class _Facts:
    """Everything the batch read once that deciding its items needs, and the terms built from it."""

    partner_id: int
    partner: _Partner | None
    rules: Sequence[Row[*tuple[Any, ...]]] = field(default_factory=list)
    campaigns: list[Row[*tuple[Any, ...]]] = field(default_factory=list)
    book: CampaignBook = field(default_factory=CampaignBook)
    holders: dict[str, _Holder] = field(default_factory=dict)
    reported_receipts: set[str] = field(default_factory=set)
    days: dict[int, list[_Day]] = field(default_factory=dict)
    points_on_days: dict[tuple[int, date], int] = field(default_factory=dict)
    earn_rules: dict[int, EarnRule] = field(default_factory=dict)
    campaign_terms: dict[int, Campaign] = field(default_factory=dict)
    tier_schedule: TierSchedule = BUILT_IN_TIER_SCHEDULE


@dataclass(frozen=True, slots=True)
class _EarnTarget:
    member_id: int
    available_id: int
    pending_id: int


def _terms_from_context(partner_id: int, context: Any) -> _Partner | None:
    """A single report's partner and earning terms, from ``PURCHASE_CONTEXT``'s columns."""
    if context is None or context.partner_found is None:
        return None
    return _Partner(id=partner_id, code=context.partner_code, status=context.partner_status,
                    currency=context.partner_currency, time_zone=context.time_zone,
                    return_window_days=context.return_window_days,
                    issue_price_per_point=context.issue_price_per_point, issued_account_id=context.account_id,
                    marketing_account_id=context.marketing_account_id,
                    credit_over=context.credit_state == OVER_LIMIT)


def _holder_from_rows(rows: Sequence[Any]) -> _Holder | None:
    """A single report's card holder, from ``LOCK_CARD_HOLDER``'s rows (one per account of the member)."""
    if not rows:
        return None
    first = rows[0]
    by_kind = {row.kind: row.id for row in rows}
    return _Holder(first.card_id, first.card_status, first.member_id, first.status, first.tier,
                   by_kind.get(AccountKind.MEMBER_AVAILABLE.value), by_kind.get(AccountKind.MEMBER_PENDING.value),
                   first.enrolled_at)


def _single_facts(session: Session, partner_id: int, partner: _Partner | None, context: Any, holder: _Holder | None,
                  report: PurchaseReport, book: CampaignBook | None = None,
                  now: datetime | None = None) -> PurchaseFacts:
    """What deciding a single report needs; the campaigns' rows are read only when one runs, the day's
    points only under a per-member-day cap, and neither for a purchase refused before it could earn."""
    rule = None
    if context is not None and context.rule_id is not None:
        rule = EarnRule.from_stored(context.base_points_per_unit, context.amount_ladder,
                                    context.per_purchase_cap_points, context.per_member_day_cap_points)
    facts = PurchaseFacts(partner_id=partner_id, partner=partner.reporting if partner is not None else None,
                          receipt_reported=bool(context is not None and context.already_reported),
                          card=holder.card if holder is not None else None, rule=rule)
    if partner is None or holder is None or rule is None or partner.status != "active" or facts.receipt_reported:
        return facts
    running = list(session.connection().execute(CAMPAIGNS_RUNNING, {
        "partner_id": partner_id, "purchased_at": report.purchased_at})) if context.campaigns_running else []
    book = book if book is not None else CampaignBook()
    # The member is locked already (``CARD_HOLDER_IN_CONTEXT``); budgeted campaigns are locked after it.
    book.load(session, running, member_ids=[holder.member_id], now=now or report.purchased_at)
    campaigns = [book.rule(row) for row in running]
    earned_today = 0
    if rule.per_member_day_cap_points is not None:
        earned_today = _partner_points_on_day(session, partner.reporting, holder.member_id, report.purchased_at)
    return PurchaseFacts(partner_id=partner_id, partner=partner.reporting, receipt_reported=False, card=holder.card,
                         rule=rule, campaigns=campaigns, partner_points_today=earned_today,
                         tier_schedule=tier_policy.cached_schedule(session))


def _read_facts(session: Session, partner_id: int, items: Sequence[BatchItem], now: datetime) -> _Facts:
    """Read the partner, its rules and campaigns, lock the members, read cards, receipts and day points."""
    partner = _read_partner(session, partner_id, now)
    facts = _Facts(partner_id=partner_id, partner=partner)
    if partner is None or partner.status != "active":
        return facts
    facts.tier_schedule = tier_policy.cached_schedule(session)
    card_numbers = sorted({item.card_number for item in items if is_valid_card_number(item.card_number)})
    in_window = [item for item in items if in_report_window(item.purchased_at, now)]
    facts.rules = session.execute(
        select(PartnerEarnRule.effective_from, PartnerEarnRule.base_points_per_unit, PartnerEarnRule.amount_ladder,
               PartnerEarnRule.per_purchase_cap_points, PartnerEarnRule.per_member_day_cap_points)
        .where(PartnerEarnRule.partner_id == partner_id).order_by(PartnerEarnRule.effective_from.desc())
    ).all()
    if in_window:
        facts.campaigns = _read_campaigns(session, partner_id, in_window)
    account_ids = _lock_members(session, card_numbers)
    facts.holders = _read_holders(session, card_numbers, account_ids)
    facts.book.load(session, facts.campaigns, member_ids=[holder.member_id for holder in facts.holders.values()],
                    now=now)
    facts.reported_receipts = set(session.scalars(select(Purchase.receipt_id).where(
        Purchase.partner_id == partner_id, _one_of(session, Purchase.receipt_id, {item.receipt_id for item in items}))))
    if any(rule.per_member_day_cap_points is not None for rule in facts.rules):
        facts.days = _days_of(partner, facts.holders, in_window)
        facts.points_on_days = _read_points_on_days(session, partner_id, facts.days)
    return facts


def _read_partner(session: Session, partner_id: int, now: datetime) -> _Partner | None:
    """The partner with the issue price in force at ``now`` and the two accounts earns are funded from."""
    price = (select(PartnerPrice.issue_price_per_point)
             .where(PartnerPrice.partner_id == Partner.id, PartnerPrice.effective_from <= now)
             .order_by(PartnerPrice.effective_from.desc()).limit(1).scalar_subquery())
    issued = select(LedgerAccount.id).where(
        LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)).scalar_subquery()
    marketing = select(LedgerAccount.id).where(LedgerAccount.code == MARKETING_ACCOUNT_CODE).scalar_subquery()
    row = session.execute(
        select(Partner.id, Partner.code, Partner.status, Partner.currency, Partner.time_zone,
               Partner.return_window_days, price, issued, marketing, _CREDIT_STATE).where(Partner.id == partner_id)
    ).first()
    if row is None:
        return None
    return _Partner(row.id, row.code, row.status, row.currency, row.time_zone, row.return_window_days, row[6], row[7],
                    row[8], credit_over=row.credit_state == OVER_LIMIT)


def _read_campaigns(session: Session, partner_id: int, items: list[BatchItem]) -> list[Row[*tuple[Any, ...]]]:
    """The partner's and the alliance-wide campaigns running at some moment of the batch's span."""
    first = min(item.purchased_at for item in items)
    last = max(item.purchased_at for item in items)
    return list(session.execute(
        select(CampaignRow.id, CampaignRow.name, CampaignRow.funded_by, CampaignRow.multiplier,
               CampaignRow.bonus_points, CampaignRow.min_amount_minor, CampaignRow.starts_at, CampaignRow.ends_at,
               *_CAMPAIGN_REACH)
        .where((CampaignRow.partner_id == partner_id) | CampaignRow.partner_id.is_(None),
               CampaignRow.stopped_at.is_(None),
               CampaignRow.starts_at <= last, CampaignRow.ends_at > first)
        .order_by(CampaignRow.id)
    ).all())


def _lock_members(session: Session, card_numbers: list[str]) -> dict[int, dict[str, int]]:
    """Lock the accounts of every member behind the cards, in ascending member id then account id.

    That is the one global lock order (``ledger.lock_member``, ``purchases.lock_card_holders``),
    taken here in a single statement, so a batch and any other posting cannot deadlock.
    Returns each member's account ids by kind.
    """
    if not card_numbers:
        return {}
    rows = session.execute(
        select(LedgerAccount.member_id, LedgerAccount.kind, LedgerAccount.id)
        .where(LedgerAccount.member_id.in_(select(Card.member_id).where(_one_of(session, Card.card_number,
                                                                                 card_numbers))))
        .order_by(LedgerAccount.member_id, LedgerAccount.id)
        .with_for_update()
    ).all()
    accounts: dict[int, dict[str, int]] = defaultdict(dict)
    for member_id, kind, account_id in rows:
        # Member accounts, selected by their member: the column's None is for the others.
        accounts[cast(int, member_id)][kind] = account_id
    return accounts


def _read_holders(session: Session, card_numbers: list[str],
                  account_ids: dict[int, dict[str, int]]) -> dict[str, _Holder]:
    """The cards with their members, read after the lock so statuses and tiers are current."""
    if not card_numbers:
        return {}
    rows = session.execute(
        select(Card.card_number, Card.id, Card.status, Member.id, Member.status, Member.tier, Member.enrolled_at)
        .join(Member, Member.id == Card.member_id).where(_one_of(session, Card.card_number, card_numbers))
    ).all()
    holders = {}
    for card_number, card_id, card_status, member_id, member_status, tier, enrolled_at in rows:
        accounts = account_ids.get(member_id, {})
        holders[card_number] = _Holder(card_id, card_status, member_id, member_status, tier,
                                       accounts.get(AccountKind.MEMBER_AVAILABLE.value),
                                       accounts.get(AccountKind.MEMBER_PENDING.value), enrolled_at)
    return holders


def _one_of(session: Session, column: Any, values: Any) -> Any:
    """``column IN (values)`` in the form the database plans best for a thousand values."""
    return storage_for(session).one_of(column, values)


def _days_of(partner: _Partner, holders: dict[str, _Holder], items: list[BatchItem]) -> dict[int, list[_Day]]:
    """Each member's local days at the partner that the batch's purchases fall on."""
    days: dict[int, dict[date, _Day]] = defaultdict(dict)
    for item in items:
        holder = holders.get(item.card_number)
        if holder is None:
            continue
        day = local_day(item.purchased_at, partner.time_zone)
        if day.day not in days[holder.member_id]:
            days[holder.member_id][day.day] = _Day(holder.member_id, day.day, day.start, day.end)
    return {member_id: list(by_day.values()) for member_id, by_day in days.items()}


def _read_points_on_days(session: Session, partner_id: int, days: dict[int, list[_Day]]) -> dict[tuple[int, date], int]:
    """The partner points this partner already gave each member on each of those days, in one query."""
    points: dict[tuple[int, date], int] = {(day.member_id, day.local_day): 0
                                           for member_days in days.values() for day in member_days}
    if not days:
        return points
    every_day = [day for member_days in days.values() for day in member_days]
    rows = session.execute(
        select(Purchase.member_id, Purchase.purchased_at, Purchase.points_partner).where(
            Purchase.partner_id == partner_id, _one_of(session, Purchase.member_id, days.keys()),
            Purchase.purchased_at >= min(day.start for day in every_day),
            Purchase.purchased_at < max(day.end for day in every_day), Purchase.points_partner > 0)
    ).all()
    for member_id, purchased_at, points_partner in rows:
        _count_on_days(points, days.get(member_id, ()), purchased_at, points_partner)
    return points


def _count_on_days(points: dict[tuple[int, date], int], member_days: Sequence[_Day], purchased_at: datetime,
                   points_partner: int) -> None:
    # The same half-open ranges the single path sums over, so even a day that DST makes
    # 23 or 25 hours long (or a midnight that does not exist) counts the same purchases.
    for day in member_days:
        if day.start <= purchased_at < day.end:
            points[(day.member_id, day.local_day)] += points_partner


# ---------------------------------------------------------------- deciding each item, in order


@dataclass(frozen=True, slots=True)
class _Planned(Generic[_Item]):
    """An item that will be applied: what it earns and where its points go."""

    index: int
    item: _Item
    terminal_id: int | None
    holder: _Holder
    breakdown: EarnBreakdown
    breakdown_stored: dict[str, Any]
    pending_until: datetime | None
    # The risk decision holding its points for review (``risk``), once decided.
    risk: Decided | None = None
    # A bonus or multiplier coupon presented with it, judged usable (``coupons.present``).
    coupon: coupons.Grant | None = None

    @property
    def coupon_points(self) -> int:
        """The points its coupon adds, posted apart from its earn (``_coupon_posting``)."""
        return self.coupon.points if self.coupon is not None else 0

    @property
    def held(self) -> bool:
        """Whether its points wait, pending, for a risk reviewer."""
        return self.risk is not None and self.risk.held


def _decide_all(facts: _Facts, items: Sequence[BatchItem], terminals: list[int | None | AllianceError],
                now: datetime, expires_at: datetime) -> list[_Planned[BatchItem] | AllianceError]:
    """Every item's decision in batch order; an applied item's receipt and day points count for later ones."""
    receipts_taken = set(facts.reported_receipts)
    points_on_days = dict(facts.points_on_days)
    facts.book.reset()
    decisions: list[_Planned[BatchItem] | AllianceError] = []
    # One terminal per item (``_resolve_terminals``).
    for index, (item, terminal) in enumerate(zip(items, terminals, strict=True)):
        if isinstance(terminal, AllianceError):
            decisions.append(terminal)
            continue
        try:
            planned = _decide(facts, index, item, terminal, receipts_taken, points_on_days, now, expires_at)
        except AllianceError as error:
            decisions.append(error)
            continue
        receipts_taken.add(item.receipt_id)
        if planned.breakdown.partner_points:
            _count_on_days(points_on_days, facts.days.get(planned.holder.member_id, ()), item.purchased_at,
                           planned.breakdown.partner_points)
        decisions.append(planned)
    return decisions


def _decide(facts: _Facts, index: int, item: BatchItem, terminal_id: int | None, receipts_taken: set[str],
            points_on_days: dict[tuple[int, date], int], now: datetime, expires_at: datetime) -> _Planned[BatchItem]:
    """One item of a batch, with the facts the batch read and what its earlier items changed."""
    partner = facts.partner
    holder = facts.holders.get(item.card_number)
    rule = _rule_at(facts, item.purchased_at) if partner is not None else None
    earned_today = 0
    if partner is not None and holder is not None and rule is not None and rule.per_member_day_cap_points is not None:
        # Read only for items inside the reporting window; any other is refused before its points count.
        earned_today = points_on_days.get((holder.member_id, local_day(item.purchased_at, partner.time_zone).day), 0)
    return plan(partner, PurchaseFacts(
        partner_id=facts.partner_id, partner=partner.reporting if partner is not None else None,
        receipt_reported=item.receipt_id in receipts_taken, card=holder.card if holder is not None else None,
        rule=rule, campaigns=_campaigns_at(facts, item.purchased_at), partner_points_today=earned_today,
        tier_schedule=facts.tier_schedule),
        index, item, terminal_id, holder, now, expires_at, book=facts.book)


def plan(partner: _Partner | None, facts: PurchaseFacts, index: int, item: _Item,
         terminal_id: int | None, holder: _Holder | None, now: datetime, expires_at: datetime, *,
         book: CampaignBook | None = None) -> _Planned[_Item]:
    """One purchase decided by ``decide_purchase``; raises its first refusal.

    Then what the ledger refuses before it writes, in its order: the partner's posting
    first, then the hub's.
    """
    if book is not None and holder is not None and facts.campaigns:
        facts = replace(facts, campaigns=book.for_member(facts.campaigns, member_id=holder.member_id, tier=holder.tier,
                                                         enrolled_at=holder.enrolled_at, moment=item.purchased_at))
    decision = decide_purchase(item, facts, now)
    assert partner is not None and holder is not None, "decide_purchase refuses an unknown partner or card"
    while book is not None and (over := book.over_budget(decision.breakdown, partner.id)
                                | book.funders_over_credit_limit(decision.breakdown)):
        # An award that would pass what is left of a campaign's budget, or a joint one with a funder past its
        # credit limit, is skipped (see campaigns).
        facts = replace(facts, campaigns=[campaign for campaign in facts.campaigns
                                          if campaign.campaign_id not in over])
        decision = decide_purchase(item, facts, now)
    if holder.available_id is None or holder.pending_id is None:
        raise NotFound("the card's member has no ledger accounts")
    breakdown = decision.breakdown
    if breakdown.partner_points and partner.credit_over:
        # Its unsettled issuance reached its credit limit (``settlement.credit``); a purchase earning only
        # hub or joint points still goes through.
        raise CreditLimitReached()
    if breakdown.partner_points:
        ledger.check_earn(breakdown.partner_points, now, expires_at)
        if partner.issue_price_per_point is None:
            raise InvalidState(f"the partner has no price in force at {now.isoformat()}")
        if partner.issued_account_id is None:
            raise NotFound("the partner has no points-issued account")
    if breakdown.hub_points:
        ledger.check_earn(breakdown.hub_points, now, expires_at)
        if partner.marketing_account_id is None:
            raise NotFound(f"no ledger account {MARKETING_ACCOUNT_CODE}")
    if book is not None:
        if breakdown.joint_points:
            ledger.check_earn(breakdown.joint_points, now, expires_at)
            book.check_funders(breakdown)
        book.spend(breakdown, partner.id)
    return _Planned(index, item, terminal_id, holder, breakdown, breakdown.to_dict(), decision.pending_until)


def _with_coupon(session: Session, partner: _Partner, planned: _Planned[_Item], code: str, now: datetime,
                 expires_at: datetime) -> _Planned[_Item]:
    """A planned purchase with the coupon presented with it, judged (``coupons.present``) on the purchase's
    moment and rule points; its line joins the breakdown. Refused whole (``CouponInvalid``) if it may not apply."""
    grant = coupons.present(session, code=code, member_id=planned.holder.member_id, partner_id=partner.id,
                            partner_currency=partner.currency, moment=planned.item.purchased_at, call=Call.PURCHASE,
                            now=now, base_points=planned.breakdown.rule_points,
                            marketing_account_id=partner.marketing_account_id)
    if grant.points <= 0:
        raise CouponInvalid(f"coupon {grant.code!r} adds no points to a purchase earning "
                            f"{planned.breakdown.rule_points} base points; it is kept for another purchase")
    ledger.check_earn(grant.points, now, expires_at)
    return replace(planned, coupon=grant, breakdown_stored={**planned.breakdown_stored, "coupon": grant.breakdown()})


def _rule_at(facts: _Facts, moment: datetime) -> EarnRule | None:
    """The rule in force at ``moment`` (the latest that took effect at or before it), validated once per batch."""
    position = next((position for position, row in enumerate(facts.rules) if row.effective_from <= moment), None)
    if position is None:
        return None
    rule = facts.earn_rules.get(position)
    if rule is None:
        row = facts.rules[position]
        rule = EarnRule.from_stored(row.base_points_per_unit, row.amount_ladder, row.per_purchase_cap_points,
                                    row.per_member_day_cap_points)
        facts.earn_rules[position] = rule
    return rule


def _campaigns_at(facts: _Facts, moment: datetime) -> list[Campaign]:
    """The campaigns running at ``moment``, each validated once per batch."""
    running = []
    for row in facts.campaigns:
        if row.starts_at <= moment < row.ends_at:
            campaign = facts.campaign_terms.get(row.id)
            if campaign is None:
                campaign = facts.campaign_terms[row.id] = facts.book.rule(row)
            running.append(campaign)
    return running


# ---------------------------------------------------------------- writing every applied item at once


def _write(session: Session, partner: _Partner | None, planned: list[_Planned[_Item]], now: datetime,
           expires_at: datetime, book: CampaignBook | None = None) -> WrittenEarns:
    """Write the applied items through the ledger's one earn writer, the partner's posting before the hub's.

    Raises ``_ReceiptsTaken`` when a receipt turned out to be reported meanwhile.
    """
    assert partner is not None
    # Deciding lets a receipt through once; a second row would be skipped by ON CONFLICT unseen.
    assert len({decision.item.receipt_id for decision in planned}) == len(planned), "a receipt planned twice"
    postings = []
    joint_keys: dict[tuple[int, int, int], int] = {}
    for decision in planned:
        target, receipt_id = decision.holder.target, decision.item.receipt_id
        if decision.breakdown.partner_points:
            assert partner.issued_account_id is not None
            postings.append(ledger.earn_posting(
                target, item=decision.index, bonus=False, partner_id=partner.id,
                price_per_point=partner.issue_price_per_point, currency=partner.currency, memo=f"receipt {receipt_id}",
                funding_account_id=partner.issued_account_id, points=decision.breakdown.partner_points, now=now,
                pending_until=decision.pending_until, held=decision.held))
        if decision.breakdown.hub_points:
            assert partner.marketing_account_id is not None
            postings.append(ledger.earn_posting(
                target, item=decision.index, bonus=True, partner_id=None, price_per_point=None, currency=None,
                memo=f"campaign bonus, receipt {receipt_id}", funding_account_id=partner.marketing_account_id,
                points=decision.breakdown.hub_points, now=now, pending_until=decision.pending_until,
                held=decision.held))
        postings += _joint_postings(book, decision, joint_keys, now)
        if decision.coupon is not None:
            postings.append(_coupon_posting(decision, joint_keys, now))
    written = ledger.write_earns(session, postings, [
        PurchaseRow(item=decision.index, partner_id=partner.id, receipt_id=decision.item.receipt_id,
                    member_id=decision.holder.member_id, card_id=decision.holder.card_id,
                    terminal_id=decision.terminal_id, amount_minor=decision.item.amount_minor,
                    currency=partner.currency, purchased_at=decision.item.purchased_at,
                    points_partner=decision.breakdown.partner_points,
                    # Points not funded by the reporting partner's earn: the hub's campaigns, joint campaigns' shares
                    # and a coupon's points.
                    points_hub=decision.breakdown.hub_points + decision.breakdown.joint_points
                    + decision.coupon_points,
                    pending_until=decision.pending_until, breakdown=decision.breakdown_stored)
        for decision in planned], now=now, expires_at=expires_at)
    taken = {decision.item.receipt_id for decision in planned} - written.purchase_ids.keys()
    if taken:
        raise _ReceiptsTaken(taken)
    if book is not None:
        _record_campaign_awards(session, book, partner.id, planned, written, joint_keys, now)
    _record_coupon_uses(session, partner.id, planned, written, joint_keys, now)
    _keep_risk_decisions(session, planned, written, joint_keys)
    return written


def _notify_large_earns(session: Session, partner: _Partner | None, planned: Sequence[_Planned[_Item]],
                        now: datetime, threshold: int) -> None:
    """Tell each member who earned at least ``threshold`` points at once (``member.points_earned``).

    Points held for a risk review wait for the reviewer and are not announced. An ordinary
    earn stays below the threshold and costs nothing here.
    """
    large = [decision for decision in planned if not decision.held and _points_of(decision) >= threshold]
    if not large or partner is None:
        return
    numbers = {row.id: row.member_number for row in session.execute(select(Member.id, Member.member_number).where(
        Member.id.in_({decision.holder.member_id for decision in large})))}
    for decision in large:
        webhooks.emit(session, event_type="member.points_earned", now=now, data={
            "member_number": numbers[decision.holder.member_id], "points": _points_of(decision),
            "partner": partner.code})


def _points_of(decision: _Planned[_Item]) -> int:
    """Every point an applied purchase earns: the partner's, the campaigns', joint shares and a coupon's."""
    breakdown = decision.breakdown
    return (breakdown.partner_points + breakdown.hub_points + breakdown.joint_points
            + decision.coupon_points)


def _assess_risk(session: Session, partner: _Partner, planned: Sequence[_Planned[_Item]],
                 now: datetime, carried: risk.Carried | None = None) -> list[_Planned[_Item] | AllianceError]:
    """Each planned purchase under the risk policy, in order: as planned (held if so decided) or its refusal.

    A single report's refusal keeps its record although the report is taken back; a batch
    keeps its items' refusals once the batch is written (``_keep_refusals``).
    """
    decided = risk.decide_all(session, measure=Measure.EARN, now=now, carried=carried, operations=[risk.Operation(
        risk.Subject(partner_id=partner.id, partner_code=partner.code, terminal_id=decision.terminal_id,
                     member_id=decision.holder.member_id, card_id=decision.holder.card_id, tier=decision.holder.tier),
        decision.breakdown.partner_points + decision.breakdown.hub_points + decision.breakdown.joint_points,
        decision.item.receipt_id) for decision in planned])
    assessed: list[_Planned[_Item] | AllianceError] = []
    for decision, outcome in zip(planned, decided, strict=True):
        refusal = outcome.refusal()
        if refusal is not None:
            refusal.kept = _keeper(outcome)
            assessed.append(refusal)
        else:
            assessed.append(replace(decision, risk=outcome) if outcome.record is not None else decision)
    return risk_patterns.on_earns(session, partner_id=partner.id, partner_code=partner.code, planned=planned,
                                  assessed=assessed, now=now)


def _keeper(outcome: risk.Decided) -> Callable[[Session], None]:
    def kept(session: Session) -> None:
        risk.keep(session, outcome)
    return kept


def _with_risk(session: Session, partner: _Partner, decisions: list[_Planned[BatchItem] | AllianceError],
               now: datetime) -> list[_Planned[BatchItem] | AllianceError]:
    """A batch's decisions with the planned items decided under the risk policy (refused ones become errors)."""
    planned = [decision for decision in decisions if isinstance(decision, _Planned)]
    assessed = iter(_assess_risk(session, partner, planned, now))
    return [next(assessed) if isinstance(decision, _Planned) else decision for decision in decisions]


def _keep_refusals(session: Session, decisions: Sequence[_Planned[BatchItem] | AllianceError]) -> None:
    """Keep the records of a written batch's items the risk controls refused."""
    for decision in decisions:
        if isinstance(decision, AllianceError) and decision.kept is not None:
            decision.kept(session)


def _keep_risk_decisions(session: Session, planned: Sequence[_Planned[_Item]], written: WrittenEarns,
                         joint_keys: dict[tuple[int, int, int], int]) -> None:
    """Keep the flags and holds of written purchases; a held purchase's lots are listed under its decision."""
    for decision in planned:
        if decision.risk is None:
            continue
        decision_id = risk.keep(session, decision.risk)
        if decision.held and decision_id is not None:
            keys = [(decision.index, False), (decision.index, True)] + [
                (key, True) for (index, _, _), key in joint_keys.items() if index == decision.index]
            risk.hold_lots(session, decision_id=decision_id,
                           lot_ids=[written.lot_ids[key] for key in keys if key in written.lot_ids])


def _joint_postings(book: CampaignBook | None, decision: _Planned[_Item], joint_keys: dict[tuple[int, int, int], int],
                    now: datetime) -> list[ledger.EarnPosting]:
    """A joint campaign's shares, each its own earn posting from its funder's points-issued account at the funder's
    issue price; keyed by negative items, which no purchase uses, in ``joint_keys`` by (item, campaign, position)."""
    postings = []
    for line in decision.breakdown.campaigns:
        for position, (partner_id, points) in enumerate(line.paid_by):
            assert book is not None, "a joint line comes from a campaign the book read"
            terms = book.funder_terms[partner_id]
            assert terms.issued_account_id is not None, "checked while planning"
            key = joint_keys[(decision.index, line.campaign_id, position)] = -1 - len(joint_keys)
            postings.append(ledger.earn_posting(
                decision.holder.target, item=key, bonus=True, partner_id=partner_id,
                price_per_point=terms.price_per_point, currency=terms.currency,
                memo=f"campaign {line.campaign_id} share, receipt {decision.item.receipt_id}",
                funding_account_id=terms.issued_account_id, points=points, now=now,
                pending_until=decision.pending_until, kind=TransactionKind.CAMPAIGN_SHARE, held=decision.held))
    return postings


# A coupon's posting is keyed among the joint shares' (``joint_keys``) under this line, which no campaign has,
# so a held purchase's coupon lot is held with its other lots (``_keep_risk_decisions``).
_COUPON_LINE = -1


def _coupon_posting(decision: _Planned[_Item], joint_keys: dict[tuple[int, int, int], int],
                    now: datetime) -> ledger.EarnPosting:
    """A coupon's points: their own earn posting, from the funder's points-issued account at its issue price in
    force, or from the hub's marketing account at no price."""
    grant = decision.coupon
    assert grant is not None and grant.funding_account_id is not None
    key = joint_keys[(decision.index, _COUPON_LINE, 0)] = -1 - len(joint_keys)
    return ledger.earn_posting(
        decision.holder.target, item=key, bonus=True, partner_id=grant.funder_partner_id,
        price_per_point=grant.price_per_point, currency=grant.currency,
        memo=f"coupon {grant.series_code}, receipt {decision.item.receipt_id}",
        funding_account_id=grant.funding_account_id, points=grant.points, now=now,
        pending_until=decision.pending_until, kind=TransactionKind.COUPON_BONUS, held=decision.held)


def _record_coupon_uses(session: Session, partner_id: int, planned: list[_Planned[_Item]], written: WrittenEarns,
                        joint_keys: dict[tuple[int, int, int], int], now: datetime) -> None:
    """Count each coupon's use and record it beside its purchase and its points' posting."""
    for decision in planned:
        if decision.coupon is None:
            continue
        coupons.use(session, decision.coupon, member_id=decision.holder.member_id, partner_id=partner_id, now=now,
                    purchase_id=written.purchase_ids[decision.item.receipt_id],
                    transaction_id=written.transaction_ids.get((joint_keys[(decision.index, _COUPON_LINE, 0)], True)))


def _record_campaign_awards(session: Session, book: CampaignBook, partner_id: int, planned: list[_Planned[_Item]],
                            written: WrittenEarns, joint_keys: dict[tuple[int, int, int], int], now: datetime) -> None:
    """Which campaign gave which points on each purchase and who paid them, and the budgets they spent."""
    rows = []
    for decision in planned:
        if not decision.breakdown.campaigns:
            continue
        for award in awards_of(decision.breakdown, partner_id):
            joint_key = joint_keys.get((decision.index, award.campaign_id, award.position))
            key = ((joint_key, True) if joint_key is not None
                   else (decision.index, award.funder_partner_id is None))
            rows.append({"member_id": decision.holder.member_id,
                         "purchase_id": written.purchase_ids[decision.item.receipt_id],
                         "campaign_id": award.campaign_id, "position": award.position,
                         "funder_partner_id": award.funder_partner_id, "points": award.points,
                         "transaction_id": written.transaction_ids.get(key), "awarded_at": now})
    if rows or book.spent:
        record_awards(session, rows, book.spent)


def _terminal_codes(session: Session, decisions: list[_Planned[BatchItem] | AllianceError]) -> dict[int, str]:
    """The code of every terminal an applied item acts for: those the items named, and one query for the rest.

    The rest are the terminals of keys bound to one, when an item named none.
    """
    codes = {decision.terminal_id: decision.item.terminal for decision in decisions
             if isinstance(decision, _Planned) and decision.terminal_id is not None and decision.item.terminal}
    unnamed = {decision.terminal_id for decision in decisions
               if isinstance(decision, _Planned) and decision.terminal_id is not None} - codes.keys()
    if unnamed:
        codes.update((terminal_id, code) for terminal_id, code in session.execute(
            select(Terminal.id, Terminal.code).where(Terminal.id.in_(unnamed))))
    return codes


def _outcomes(decisions: list[_Planned[BatchItem] | AllianceError], written: WrittenEarns,
              terminal_codes: dict[int, str], now: datetime) -> list[BatchOutcome]:
    """Each item's outcome in batch order."""
    outcomes = []
    for decision in decisions:
        if isinstance(decision, AllianceError):
            outcomes.append(BatchOutcome(error=decision))
            continue
        terminal_code = terminal_codes.get(decision.terminal_id) if decision.terminal_id is not None else None
        outcomes.append(BatchOutcome(purchase=_reported(decision, written, card_number=decision.item.card_number,
                                                        terminal_code=terminal_code, now=now)))
    return outcomes


def _reported(decision: _Planned[_Item], written: WrittenEarns, *, card_number: str, terminal_code: str | None,
              now: datetime) -> ReportedPurchase:
    """The stored purchase as the reply presents it, whichever path stored it."""
    item, holder, breakdown = decision.item, decision.holder, decision.breakdown
    # Stored timestamps come back in UTC; the presentation must not depend on the path taken.
    pending_until = decision.pending_until.astimezone(timezone.utc) if decision.pending_until else None
    return ReportedPurchase(
        receipt_id=item.receipt_id, card_id=holder.card_id, card_number=card_number, member_id=holder.member_id,
        terminal_id=decision.terminal_id, terminal_code=terminal_code, amount_minor=item.amount_minor,
        currency=item.currency, purchased_at=item.purchased_at.astimezone(timezone.utc), reported_at=now,
        points_partner=breakdown.partner_points,
        points_hub=breakdown.hub_points + breakdown.joint_points + decision.coupon_points,
        earn_transaction_id=written.transaction_ids.get((decision.index, False)),
        bonus_transaction_id=written.transaction_ids.get((decision.index, True)),
        pending_until=pending_until, breakdown=decision.breakdown_stored,
        id=written.purchase_ids.get(item.receipt_id), held_for_review=decision.held)


# ---------------------------------------------------------------- refunds and look-ups


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
    purchase = session.scalar(
        select(Purchase).where(Purchase.partner_id == partner_id, Purchase.receipt_id == receipt_id))
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
    # Joint campaigns' shares and a coupon's points are their own earns (``_joint_postings``,
    # ``_coupon_posting``); the rest of points_hub is the hub's campaigns'.
    joint = joint_shares_of_purchase(session, member_id=purchase.member_id, purchase_id=purchase.id)
    joint += coupons.points_of_purchase(session, member_id=purchase.member_id, purchase_id=purchase.id)
    for points_earned, transaction_id in ((purchase.points_partner, purchase.earn_transaction_id),
                                          (purchase.points_hub - sum(points for points, _ in joint),
                                           purchase.bonus_transaction_id), *joint):
        share = (clawback_target(points_earned=points_earned, amount_minor=purchase.amount_minor,
                                 refunded_amount_minor_total=refunded_after)
                 - clawback_target(points_earned=points_earned, amount_minor=purchase.amount_minor,
                                   refunded_amount_minor_total=refunded_before))
        if share and transaction_id is not None:
            result = ledger.clawback_earn(session, earn_transaction_id=transaction_id, points=share, now=now)
            recovered += result.points_recovered
            unrecovered += result.points_unrecovered
    risk_patterns.on_refund(session, purchase=purchase, refund_id=refund_id, points_recovered=recovered,
                            points_unrecovered=unrecovered, now=now)
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
    webhooks.emit(session, event_type="purchase.refunded", partner_id=partner_id, now=now,
                  data={"receipt_id": receipt_id, "refund_id": refund_id, "points_clawed_back": recovered})
    session.refresh(purchase)
    return RefundOutcome(refund=session.get_one(PurchaseRefund, refund_row_id), purchase=purchase)


def _partner_points_on_day(session: Session, partner: ReportingPartner, member_id: int, moment: datetime) -> int:
    """Points this partner gave this member on the purchase's local calendar day."""
    day = local_day(moment, partner.time_zone)
    return session.scalar(
        select(integer_sum(Purchase.points_partner)).where(
            Purchase.partner_id == partner.id, Purchase.member_id == member_id,
            Purchase.purchased_at >= day.start, Purchase.purchased_at < day.end,
        )
    ) or 0
