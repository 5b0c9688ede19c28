"""A batch of purchase reports, set-based, each item decided exactly as ``report_purchase`` decides it.

The single path costs about fourteen round trips per purchase. A batch reads what it
needs once: the partner with its issue price and the accounts that fund earns, all of
its earn rules, the campaigns overlapping the batch's time span, the cards with their
members, the receipts already reported and, under a per-member-day cap, the points of
the days the batch touches. It locks the members' accounts in one ordered statement,
then decides every item in batch order with the single path's own decision
(``alliance.domain.purchases.decide_purchase``), so two items of one member and day
share the cap exactly as two single reports would. Every journal transaction, entry, lot and purchase is then written
in one statement on PostgreSQL (a few multi-row inserts on SQLite); the ledger's
triggers check those rows as they check the single path's, and partner and hub account
rows are only ever read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import any_, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from alliance.domain.cards import is_valid_card_number
from alliance.domain.clock import add_months
from alliance.domain.earning import Campaign, EarnBreakdown, EarnRule
from alliance.domain.errors import AllianceError, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, LotState, TransactionKind, account_code, require_positive_points
from alliance.domain.purchases import (
    CardFacts,
    PurchaseFacts,
    ReportingPartner,
    decide_purchase,
    in_report_window,
    local_day,
)
from alliance.models import Campaign as CampaignRow
from alliance.models import (
    Card,
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    Member,
    Partner,
    PartnerEarnRule,
    PartnerPrice,
    PointLot,
    Purchase,
    Terminal,
)
from alliance.observability import metrics

# The partner API's limit; the service keeps its own so no caller can hand it more.
MAX_BATCH_PURCHASES = 1000
MARKETING_ACCOUNT_CODE = account_code(AccountKind.HUB_MARKETING)

TerminalResolver = Callable[[str | None], int | None]


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
class BatchPurchase:
    """A purchase the batch stored: its stored columns, and its card's number and terminal's code for the reply."""

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


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item's outcome: the stored purchase, or the error ``report_purchase`` would have raised."""

    purchase: BatchPurchase | None = None
    error: AllianceError | None = None


def report_purchases(
    session: Session, *, partner_id: int, items: Sequence[BatchItem], resolve_terminal: TerminalResolver,
    now: datetime, expiry_months: int,
) -> list[BatchOutcome]:
    """Report a batch of purchases in order; each item is applied or rejected as ``report_purchase`` would.

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
        planned = [decision for decision in decisions if isinstance(decision, _Planned)]
        try:
            # A savepoint, so a receipt another request stored meanwhile undoes only this write.
            with session.begin_nested():
                transaction_ids = _write(session.connection(), facts, planned, now, expires_at)
        except _ReceiptsTaken as taken:
            assert not taken.receipt_ids & facts.reported_receipts, "a known receipt was planned again"
            # Those items are now "already reported"; deciding again also gives their day
            # points back to the member's later items, as the single path's savepoint would.
            facts.reported_receipts.update(taken.receipt_ids)
            continue
        metrics.count_posting(session, TransactionKind.EARN.value, sum(
            decision.breakdown.partner_points + decision.breakdown.hub_points for decision in planned),
            postings=len(transaction_ids))
        return _outcomes(decisions, transaction_ids, _terminal_codes(session, decisions), now)
    raise AssertionError("a retry rejects at least one more item, so the batch cannot need more retries than items")


class _ReceiptsTaken(Exception):
    """Receipts another transaction reported between this batch's check and its insert."""

    def __init__(self, receipt_ids: set[str]) -> None:
        super().__init__(f"{len(receipt_ids)} receipts were reported meanwhile")
        self.receipt_ids = receipt_ids


def _resolve_terminals(items: Sequence[BatchItem], resolve_terminal: TerminalResolver) -> list[int | None | AllianceError]:
    """Each item's terminal id, or the error naming it raised; one resolution per distinct code."""
    resolved: dict[str | None, int | None | AllianceError] = {}
    for code in dict.fromkeys(item.terminal for item in items):
        try:
            resolved[code] = resolve_terminal(code)
        except AllianceError as error:
            resolved[code] = error
    return [resolved[item.terminal] for item in items]


# ---------------------------------------------------------------- what the batch reads once


@dataclass(frozen=True, slots=True)
class _Partner:
    """The reporting partner and its earning terms at ``now`` (the price and accounts an earn posts with)."""

    id: int
    code: str
    status: str
    currency: str
    time_zone: str
    return_window_days: int
    issue_price_per_point: Decimal | None
    issued_account_id: int | None
    marketing_account_id: int | None

    @property
    def reporting(self) -> ReportingPartner:
        """The partner as ``decide_purchase`` sees it."""
        return ReportingPartner(id=self.id, code=self.code, status=self.status, currency=self.currency,
                                time_zone=self.time_zone, return_window_days=self.return_window_days)


@dataclass(frozen=True, slots=True)
class _Holder:
    """A card of the batch, its member, and the member's locked account ids."""

    card_id: int
    card_status: str
    member_id: int
    member_status: str
    tier: str
    available_id: int | None
    pending_id: int | None

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
    rules: list[Any] = field(default_factory=list)
    campaigns: list[Any] = field(default_factory=list)
    holders: dict[str, _Holder] = field(default_factory=dict)
    reported_receipts: set[str] = field(default_factory=set)
    days: dict[int, list[_Day]] = field(default_factory=dict)
    points_on_days: dict[tuple[int, date], int] = field(default_factory=dict)
    earn_rules: dict[int, EarnRule] = field(default_factory=dict)
    campaign_terms: dict[int, Campaign] = field(default_factory=dict)


def _read_facts(session: Session, partner_id: int, items: Sequence[BatchItem], now: datetime) -> _Facts:
    """Read the partner, its rules and campaigns, lock the members, read cards, receipts and day points."""
    partner = _read_partner(session, partner_id, now)
    facts = _Facts(partner_id=partner_id, partner=partner)
    if partner is None or partner.status != "active":
        return facts
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
               Partner.return_window_days, price, issued, marketing).where(Partner.id == partner_id)
    ).first()
    return None if row is None else _Partner(*row)


def _read_campaigns(session: Session, partner_id: int, items: list[BatchItem]) -> list[Any]:
    """The partner's and the alliance-wide campaigns running at some moment of the batch's span."""
    first = min(item.purchased_at for item in items)
    last = max(item.purchased_at for item in items)
    return list(session.execute(
        select(CampaignRow.id, CampaignRow.name, CampaignRow.funded_by, CampaignRow.multiplier,
               CampaignRow.bonus_points, CampaignRow.min_amount_minor, CampaignRow.starts_at, CampaignRow.ends_at)
        .where((CampaignRow.partner_id == partner_id) | CampaignRow.partner_id.is_(None),
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
        accounts[member_id][kind] = account_id
    return accounts


def _read_holders(session: Session, card_numbers: list[str],
                  account_ids: dict[int, dict[str, int]]) -> dict[str, _Holder]:
    """The cards with their members, read after the lock so statuses and tiers are current."""
    if not card_numbers:
        return {}
    rows = session.execute(
        select(Card.card_number, Card.id, Card.status, Member.id, Member.status, Member.tier)
        .join(Member, Member.id == Card.member_id).where(_one_of(session, Card.card_number, card_numbers))
    ).all()
    holders = {}
    for card_number, card_id, card_status, member_id, member_status, tier in rows:
        accounts = account_ids.get(member_id, {})
        holders[card_number] = _Holder(card_id, card_status, member_id, member_status, tier,
                                       accounts.get(AccountKind.MEMBER_AVAILABLE.value),
                                       accounts.get(AccountKind.MEMBER_PENDING.value))
    return holders


def _one_of(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL one array parameter rather than a placeholder per value.

    A thousand placeholders make a new statement text every time, which the driver and the
    server then parse anew; ``= ANY(array)`` is one short statement, planned the same way.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


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
class _Planned:
    """An item that will be applied: what it earns and where its points go."""

    index: int
    item: BatchItem
    terminal_id: int | None
    holder: _Holder
    breakdown: EarnBreakdown
    breakdown_stored: dict[str, Any]
    pending_until: datetime | None


def _decide_all(facts: _Facts, items: Sequence[BatchItem], terminals: list[int | None | AllianceError],
                now: datetime, expires_at: datetime) -> list[_Planned | AllianceError]:
    """Every item's decision in batch order; an applied item's receipt and day points count for later ones."""
    receipts_taken = set(facts.reported_receipts)
    points_on_days = dict(facts.points_on_days)
    decisions: list[_Planned | AllianceError] = []
    for index, (item, terminal) in enumerate(zip(items, terminals)):
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
            points_on_days: dict[tuple[int, date], int], now: datetime, expires_at: datetime) -> _Planned:
    """One item, decided by ``decide_purchase`` as a single report is; raises its first refusal.

    Then what ``ledger.earn`` refuses before it writes, in its order: the partner's
    posting first, then the hub's.
    """
    partner = facts.partner
    holder = facts.holders.get(item.card_number)
    rule = _rule_at(facts, item.purchased_at) if partner is not None else None
    earned_today = 0
    if partner is not None and holder is not None and rule is not None and rule.per_member_day_cap_points is not None:
        # Read only for items inside the reporting window; any other is refused before its points count.
        earned_today = points_on_days.get((holder.member_id, local_day(item.purchased_at, partner.time_zone).day), 0)
    decision = decide_purchase(item, PurchaseFacts(
        partner_id=facts.partner_id, partner=partner.reporting if partner is not None else None,
        receipt_reported=item.receipt_id in receipts_taken, card=holder.card if holder is not None else None,
        rule=rule, campaigns=_campaigns_at(facts, item.purchased_at), partner_points_today=earned_today), now)
    assert partner is not None and holder is not None, "decide_purchase refuses an unknown partner or card"
    if holder.available_id is None or holder.pending_id is None:
        raise NotFound("the card's member has no ledger accounts")
    breakdown = decision.breakdown
    if breakdown.partner_points:
        _check_posting(breakdown.partner_points, now, expires_at)
        if partner.issue_price_per_point is None:
            raise InvalidState(f"the partner has no price in force at {now.isoformat()}")
        if partner.issued_account_id is None:
            raise NotFound("the partner has no points-issued account")
    if breakdown.hub_points:
        _check_posting(breakdown.hub_points, now, expires_at)
        if partner.marketing_account_id is None:
            raise NotFound(f"no ledger account {MARKETING_ACCOUNT_CODE}")
    return _Planned(index, item, terminal_id, holder, breakdown, breakdown.to_dict(), decision.pending_until)


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
                campaign = Campaign(campaign_id=row.id, name=row.name, funded_by=row.funded_by,
                                    multiplier=row.multiplier, bonus_points=row.bonus_points,
                                    min_amount_minor=row.min_amount_minor)
                facts.campaign_terms[row.id] = campaign
            running.append(campaign)
    return running


def _check_posting(points: int, now: datetime, expires_at: datetime) -> None:
    """What ``ledger.earn`` checks of every posting before it writes."""
    require_positive_points(points)
    if expires_at <= now:
        raise ValidationFailed("points must expire after they are earned", fields={"expires_at": ["in the past"]})


# ---------------------------------------------------------------- writing every applied item at once


@dataclass(frozen=True, slots=True)
class _Posting:
    """One earn transaction of the batch: its entries and lot follow from it."""

    index: int
    bonus: bool
    member_id: int
    partner_id: int | None
    price_per_point: Decimal | None
    currency: str | None
    memo: str
    funding_account_id: int
    target_account_id: int
    points: int
    state: str
    activates_at: datetime | None


def _postings(partner: _Partner, planned: list[_Planned], now: datetime) -> list[_Posting]:
    """The earn transactions of the applied items, in batch order, the partner's before the hub's."""
    postings = []
    for decision in planned:
        pending = decision.pending_until is not None and decision.pending_until > now
        target_account_id = decision.holder.pending_id if pending else decision.holder.available_id
        state = (LotState.PENDING if pending else LotState.ACTIVE).value
        activates_at = decision.pending_until if pending else None
        member_id, receipt_id = decision.holder.member_id, decision.item.receipt_id
        assert target_account_id is not None, "holders without accounts are refused while deciding"
        if decision.breakdown.partner_points:
            assert partner.issued_account_id is not None
            postings.append(_Posting(
                decision.index, False, member_id, partner.id, partner.issue_price_per_point, partner.currency,
                f"receipt {receipt_id}", partner.issued_account_id, target_account_id,
                decision.breakdown.partner_points, state, activates_at))
        if decision.breakdown.hub_points:
            assert partner.marketing_account_id is not None
            postings.append(_Posting(
                decision.index, True, member_id, None, None, None, f"campaign bonus, receipt {receipt_id}",
                partner.marketing_account_id, target_account_id, decision.breakdown.hub_points, state, activates_at))
    return postings


def _write(connection: Connection, facts: _Facts, planned: list[_Planned], now: datetime,
           expires_at: datetime) -> dict[tuple[int, bool], int]:
    """Write the applied items; returns the transaction id of each (item index, bonus) posting.

    Raises ``_ReceiptsTaken`` when a receipt turned out to be reported meanwhile.
    """
    if not planned:
        return {}
    partner = facts.partner
    assert partner is not None
    # Deciding lets a receipt through once; a second row would be skipped by ON CONFLICT unseen.
    assert len({decision.item.receipt_id for decision in planned}) == len(planned), "a receipt planned twice"
    postings = _postings(partner, planned, now)
    on_postgresql = connection.dialect.name == "postgresql"
    if on_postgresql:
        transaction_ids = _allocate_transaction_ids(connection, len(postings))
    else:
        transaction_ids = _insert_transactions(connection, postings, now)
    by_posting = {(posting.index, posting.bonus): transaction_id
                  for posting, transaction_id in zip(postings, transaction_ids)}
    write = _write_postgresql if on_postgresql else _write_sqlite
    stored = write(connection, partner, planned, postings, transaction_ids, by_posting, now, expires_at)
    taken = {decision.item.receipt_id for decision in planned} - stored
    if taken:
        raise _ReceiptsTaken(taken)
    return by_posting


def _allocate_transaction_ids(connection: Connection, count: int) -> list[int]:
    """Draw ``count`` journal transaction ids from the table's own sequence, ascending."""
    if not count:
        return []
    return sorted(connection.execute(text(
        "SELECT nextval(pg_get_serial_sequence('journal_transactions', 'id')) FROM generate_series(1, :count)"
    ), {"count": count}).scalars())


# One statement writes the whole batch: the transactions, their entries (in account id
# order within each transaction, the lock order), the lots, and last the purchases, whose
# ON CONFLICT names any receipt another request stored meanwhile. Row triggers run at the
# end of the statement and the balance check at commit, on exactly the rows the single
# path writes. The rows travel as two JSON documents: PostgreSQL parses them far faster
# than the driver can spell out two dozen arrays of a thousand quoted elements.
WRITE_BATCH = text("""
WITH postings AS MATERIALIZED (
    SELECT *
      FROM json_to_recordset(CAST(:postings AS json))
           AS posting (position integer, transaction_id bigint, member_id bigint, partner_id bigint,
                       price_per_point numeric, currency varchar, memo varchar, funding_account_id bigint,
                       target_account_id bigint, points bigint, state varchar, activates_at timestamptz)
), new_transactions AS (
    INSERT INTO journal_transactions (id, kind, member_id, partner_id, posted_at, price_per_point, currency, memo)
    SELECT transaction_id, :kind, member_id, partner_id, :now, price_per_point, currency, memo
      FROM postings ORDER BY position
), new_entries AS (
    INSERT INTO journal_entries (transaction_id, account_id, amount_points)
    SELECT postings.transaction_id, line.account_id, line.amount_points
      FROM postings
           CROSS JOIN LATERAL (VALUES (postings.funding_account_id, -postings.points),
                                      (postings.target_account_id, postings.points)) AS line (account_id, amount_points)
     ORDER BY postings.position, line.account_id
), new_lots AS (
    INSERT INTO point_lots (member_id, partner_id, funding_account_id, earn_transaction_id, origin_lot_id, state,
                            points_earned, points_remaining, earned_at, activates_at, expires_at)
    SELECT member_id, partner_id, funding_account_id, transaction_id, NULL, state, points, points, :now,
           activates_at, :expires_at
      FROM postings ORDER BY position
)
INSERT INTO purchases (partner_id, receipt_id, member_id, card_id, terminal_id, amount_minor, currency, purchased_at,
                       reported_at, points_partner, points_hub, earn_transaction_id, bonus_transaction_id,
                       pending_until, breakdown, refunded_amount_minor)
SELECT :partner_id, receipt_id, member_id, card_id, terminal_id, amount_minor, :currency, purchased_at, :now,
       points_partner, points_hub, earn_transaction_id, bonus_transaction_id, pending_until, breakdown, 0
  FROM json_to_recordset(CAST(:purchases AS json))
       AS purchase (position integer, receipt_id varchar, member_id bigint, card_id bigint, terminal_id bigint,
                    amount_minor bigint, purchased_at timestamptz, points_partner bigint, points_hub bigint,
                    earn_transaction_id bigint, bonus_transaction_id bigint, pending_until timestamptz,
                    breakdown json)
 ORDER BY position
    ON CONFLICT (partner_id, receipt_id) DO NOTHING
RETURNING receipt_id
""")


def _write_postgresql(connection: Connection, partner: _Partner, planned: list[_Planned], postings: list[_Posting],
                      transaction_ids: list[int], by_posting: dict[tuple[int, bool], int], now: datetime,
                      expires_at: datetime) -> set[str]:
    """PostgreSQL: the whole batch in one statement; returns the receipts it stored."""
    posting_rows = [
        {"position": position, "transaction_id": transaction_id, "member_id": posting.member_id,
         "partner_id": posting.partner_id, "price_per_point": _text(posting.price_per_point),
         "currency": posting.currency, "memo": posting.memo, "funding_account_id": posting.funding_account_id,
         "target_account_id": posting.target_account_id, "points": posting.points, "state": posting.state,
         "activates_at": _text(posting.activates_at)}
        for position, (posting, transaction_id) in enumerate(zip(postings, transaction_ids))
    ]
    purchase_rows = [
        {"position": position, "receipt_id": decision.item.receipt_id, "member_id": decision.holder.member_id,
         "card_id": decision.holder.card_id, "terminal_id": decision.terminal_id,
         "amount_minor": decision.item.amount_minor, "purchased_at": _text(decision.item.purchased_at),
         "points_partner": decision.breakdown.partner_points, "points_hub": decision.breakdown.hub_points,
         "earn_transaction_id": by_posting.get((decision.index, False)),
         "bonus_transaction_id": by_posting.get((decision.index, True)),
         "pending_until": _text(decision.pending_until), "breakdown": decision.breakdown_stored}
        for position, decision in enumerate(planned)
    ]
    stored = connection.execute(WRITE_BATCH, {
        "kind": TransactionKind.EARN.value, "now": now, "expires_at": expires_at, "partner_id": partner.id,
        "currency": partner.currency, "postings": json.dumps(posting_rows), "purchases": json.dumps(purchase_rows),
    }).scalars()
    return set(stored)


def _text(value: Decimal | datetime | None) -> str | None:
    """A price or moment as JSON carries it exactly: decimal text, or ISO 8601 in UTC."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else str(value)


def _insert_transactions(connection: Connection, postings: list[_Posting], now: datetime) -> list[int]:
    """SQLite: the batch's journal transactions in one multi-row insert; their ids in batch order."""
    if not postings:
        return []
    table = JournalTransaction.__table__
    rows = [{"kind": TransactionKind.EARN.value, "member_id": posting.member_id, "partner_id": posting.partner_id,
             "posted_at": now, "price_per_point": posting.price_per_point, "currency": posting.currency,
             "hold_id": None, "reverses_transaction_id": None, "transfer_id": None, "memo": posting.memo}
            for posting in postings]
    result = connection.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return list(result.scalars())


def _write_sqlite(connection: Connection, partner: _Partner, planned: list[_Planned], postings: list[_Posting],
                  transaction_ids: list[int], by_posting: dict[tuple[int, bool], int], now: datetime,
                  expires_at: datetime) -> set[str]:
    """SQLite: entries, lots and purchases as multi-row inserts; returns the receipts stored."""
    if postings:
        entries = []
        for posting, transaction_id in zip(postings, transaction_ids):
            lines = sorted([(posting.funding_account_id, -posting.points), (posting.target_account_id, posting.points)])
            entries += [{"transaction_id": transaction_id, "account_id": account_id, "amount_points": amount_points}
                        for account_id, amount_points in lines]
        connection.execute(insert(JournalEntry.__table__), entries)
        connection.execute(insert(PointLot.__table__), [
            {"member_id": posting.member_id, "partner_id": posting.partner_id,
             "funding_account_id": posting.funding_account_id, "earn_transaction_id": transaction_id,
             "origin_lot_id": None, "state": posting.state, "points_earned": posting.points,
             "points_remaining": posting.points, "earned_at": now, "activates_at": posting.activates_at,
             "expires_at": expires_at}
            for posting, transaction_id in zip(postings, transaction_ids)])
    purchases = Purchase.__table__
    stored = connection.execute(
        sqlite.insert(purchases).on_conflict_do_nothing(index_elements=["partner_id", "receipt_id"])
        .returning(purchases.c.receipt_id),
        [{"partner_id": partner.id, "receipt_id": decision.item.receipt_id, "member_id": decision.holder.member_id,
          "card_id": decision.holder.card_id, "terminal_id": decision.terminal_id,
          "amount_minor": decision.item.amount_minor, "currency": partner.currency,
          "purchased_at": decision.item.purchased_at, "reported_at": now,
          "points_partner": decision.breakdown.partner_points, "points_hub": decision.breakdown.hub_points,
          "earn_transaction_id": by_posting.get((decision.index, False)),
          "bonus_transaction_id": by_posting.get((decision.index, True)),
          "pending_until": decision.pending_until, "breakdown": decision.breakdown_stored,
          "refunded_amount_minor": 0}
         for decision in planned],
    ).scalars()
    return set(stored)


def _terminal_codes(session: Session, decisions: list[_Planned | AllianceError]) -> dict[int, str]:
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


def _outcomes(decisions: list[_Planned | AllianceError], by_posting: dict[tuple[int, bool], int],
              terminal_codes: dict[int, str], now: datetime) -> list[BatchOutcome]:
    """Each item's outcome in batch order, the stored purchases as the single path returns them."""
    outcomes = []
    for decision in decisions:
        if isinstance(decision, AllianceError):
            outcomes.append(BatchOutcome(error=decision))
            continue
        item, holder, breakdown = decision.item, decision.holder, decision.breakdown
        # Stored timestamps come back in UTC; the presentation must not depend on the path taken.
        pending_until = decision.pending_until.astimezone(timezone.utc) if decision.pending_until else None
        outcomes.append(BatchOutcome(purchase=BatchPurchase(
            receipt_id=item.receipt_id, card_id=holder.card_id, card_number=item.card_number,
            member_id=holder.member_id, terminal_id=decision.terminal_id,
            terminal_code=terminal_codes.get(decision.terminal_id) if decision.terminal_id is not None else None,
            amount_minor=item.amount_minor, currency=item.currency,
            purchased_at=item.purchased_at.astimezone(timezone.utc), reported_at=now,
            points_partner=breakdown.partner_points, points_hub=breakdown.hub_points,
            earn_transaction_id=by_posting.get((decision.index, False)),
            bonus_transaction_id=by_posting.get((decision.index, True)),
            pending_until=pending_until, breakdown=decision.breakdown_stored,
        )))
    return outcomes
