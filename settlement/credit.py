"""Partners' credit exposure: what a partner owes the hub unsettled, its limit, and the snapshot earns read.

A partner is charged for the points it issues on its next statement and pays later, so
the hub carries its credit until then. The **exposure** of a partner, in exact minor
units of its currency, is

- what it still owes on its closed statements: for each one whose net is owed to the
  hub (> 0), the net minus the payments recorded on it (``StatementEvent`` rows of kind
  ``paid``), never below zero; plus
- the issuance of its open period: the points it issued since the end of its last
  closed cycle (``ISSUING_KINDS``) minus the points taken back (``TAKE_BACK_KINDS``),
  each at the price its posting recorded, exactly, then rounded **up** to a whole minor
  unit (the hub never under-counts). Never below zero;
- minus its **prepaid balance**: the money it paid ahead for blocks of points
  (``partner_prepaid_blocks``) that no statement has been paid from yet.

The sum is never below zero: a partner whose blocks cover more than it owes has an
exposure of 0. Its state, though, compares the uncovered figure with the limit before it
is floored at zero, so a partner on prepaid terms (a limit of 0) is ``ok`` while money of
its blocks is left over, and reaches its limit (``over``, new issuance refused) once what
it issued and owes uses up its blocks; buying another block brings it back.

Redemption credits of the open period are not netted against it: the limit is on
issuance charged but not yet paid, and what the hub will owe the partner for its
redemptions is settled on the statement, not lent against.

The request path never computes this. ``partner_credit`` keeps a snapshot per partner
(limit, exposure, state), which the signed earn reads inside a read it already makes and
refuses new issuance from when the state is ``over``. The snapshot is rewritten by the
``refresh-credit-exposure`` job every minute, and in the same transaction when a payment
is recorded, a cycle of the partner closes, or a limit is set or approved. A partner may
therefore pass its limit by what it issues between two refreshes: the price of not making
every earn of a partner update (and so queue behind) one row.

Limits: lowering a limit, or setting a first one, only reduces risk and applies at
once; raising or removing one waits for a second person (``staff_people.same_person``).

Prepaid blocks (``buy_block``): finance records that a partner paid for a block of
points ahead, with its receipt reference (unique per partner). The block is priced at the
partner's issue price in force when it is recorded, points x price rounded **up** to a
whole minor unit, exactly. The money then pays the partner's statements: when a statement
it owes (net > 0) is invoiced (``finance.mark_invoiced``), what is left of its blocks pays
it, oldest block first, up to what is outstanding, in the invoicing's transaction;
``apply_to_statement`` does the same by hand (a block bought after the invoice). Each
block drawn on is one ordinary ``paid`` statement event that names the block
(``statement_events.prepaid_block_id``). A column that names the block, rather than a
``source`` flag, was chosen because it keeps every cent traceable to the receipt it came
from and makes the foreign key the proof that a prepaid payment has money behind it; what
is left of a block is its amount minus the payments naming it, and the balance is the sum
of that. Paid events stay paid events, so every report of paid and unpaid statements reads
them unchanged. Buying a block and drawing on it refresh the partner's snapshot in the
same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Iterable, cast

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import ISSUING_KINDS, TAKE_BACK_KINDS, AccountKind, account_code
from alliance.domain.money import minor_units_per_unit
from alliance.models import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    Partner,
    PartnerCredit,
    PartnerCreditAlert,
    PartnerCreditLimitChange,
    SettlementRun,
    SettlementStatement,
    StatementEvent,
)
from alliance.models.credit import PartnerPrepaidBlock
from alliance.services import audit_log, staff_people
from alliance.services.jobs import Job
from alliance.services.price_schedule import price_in_force
from settlement.locking import lock_partner_settlement
from settlement.netting import EXACT, MAX_AMOUNT_MINOR, REFERENCE_PATTERN

DEFAULT_WARNING_PERCENT = 80
MAX_REASON_LENGTH = 500
DECISIONS = {"approve": "approved", "reject": "rejected"}
MAX_ALERTS = 50
# Most points one prepaid block may hold: a billion points is far beyond any partner's year.
MAX_BLOCK_POINTS = 1_000_000_000


class SameApprover(Conflict):
    """The person who asked for a limit change tried to decide it."""

    code = "same_approver"


class AlreadyDecided(Conflict):
    """A limit change was already approved or rejected."""

    code = "already_decided"


class ChangePending(Conflict):
    """A raise or removal is already waiting for a second person."""

    code = "limit_change_pending"


class DuplicatePrepaidReference(Conflict):
    """The partner already has a prepaid block with this receipt reference."""

    code = "duplicate_reference"


class NoPrepaidBalance(InvalidState):
    """Prepaid money was to pay a statement, but none of the partner's blocks is left."""

    code = "no_prepaid_balance"


class StatementNotInvoiced(InvalidState):
    """Prepaid money was to pay a statement not invoiced yet."""

    code = "not_invoiced"


class NothingOutstanding(InvalidState):
    """Prepaid money was to pay a statement the partner owes nothing on (its net is not owed, or it is paid)."""

    code = "nothing_owed"


@dataclass(frozen=True, slots=True)
class Exposure:
    """A partner's exposure: owed on closed statements, issued in the open period, less its prepaid balance."""

    closed_minor: int
    open_minor: int
    prepaid_minor: int = 0

    @property
    def uncovered_minor(self) -> int:
        """Owed and issued minus the prepaid balance; below zero while prepaid money is left over."""
        return self.closed_minor + self.open_minor - self.prepaid_minor

    @property
    def total_minor(self) -> int:
        """The exposure: what is uncovered, never below zero."""
        return max(self.uncovered_minor, 0)


@dataclass(frozen=True, slots=True)
class LimitChangeView:
    id: int
    partner: str
    limit_minor: int | None
    reason: str
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreditView:
    """A partner's credit as the back office sees it: the snapshot and the changes waiting for a second person."""

    partner: str
    currency: str
    limit_minor: int | None
    warning_minor: int | None
    exposure_minor: int
    state: str
    computed_at: datetime | None
    pending_changes: list[LimitChangeView]
    # The prepaid money no statement was paid from yet, now (already taken off the exposure).
    prepaid_minor: int


@dataclass(frozen=True, slots=True)
class CreditAlertView:
    id: int
    partner: str
    state: str
    exposure_minor: int
    limit_minor: int
    currency: str
    raised_at: datetime


@dataclass(frozen=True, slots=True)
class PrepaidBlockView:
    id: int
    partner: str
    points: int
    price_per_point: Decimal
    amount_minor: int
    currency: str
    reference: str
    paid_on: date
    recorded_by: str
    recorded_at: datetime
    # What of the block paid statements, and what is left of it.
    applied_minor: int
    left_minor: int


@dataclass(frozen=True, slots=True)
class PrepaidView:
    """A partner's prepaid blocks, oldest first, and the balance left of them."""

    partner: str
    currency: str
    balance_minor: int
    blocks: list[PrepaidBlockView]


@dataclass(frozen=True, slots=True)
class BlockBought:
    """A block just recorded, the partner's prepaid balance after it and its refreshed credit."""

    block: PrepaidBlockView
    balance_minor: int
    credit: CreditView


@dataclass(frozen=True, slots=True)
class PrepaidPayment:
    """A statement paid from prepaid money: what was drawn now, where the statement stands, the balance left."""

    statement_id: int
    partner: str
    currency: str
    net_minor: int
    applied_minor: int
    paid_minor: int
    outstanding_minor: int
    paid: bool
    balance_minor: int


# ---------------------------------------------------------------- the arithmetic (pure)


def exposure_of(closed: Iterable[tuple[int, int]], open_postings: Iterable[tuple[int, Decimal]],
                minor_units: int, prepaid_minor: int = 0) -> Exposure:
    """The exposure from closed statements' (net, paid), the open period's (points charged, price) rows and the
    prepaid balance.

    A closed statement counts only when the partner owes its net (> 0), for what is not
    paid yet, never below zero. The open period's points charged are positive for points
    issued and negative for points taken back; their exact value is rounded up to a whole
    minor unit, and never counts below zero. The prepaid balance (minor units, >= 0) is
    taken off their sum, which never counts below zero (``Exposure.total_minor``).
    """
    closed_minor = sum(max(net - paid, 0) for net, paid in closed if net > 0)
    exact = Decimal(0)
    for points, price in open_postings:
        exact = EXACT.add(exact, EXACT.multiply(EXACT.multiply(Decimal(points), price), Decimal(minor_units)))
    open_minor = max(int(exact.to_integral_value(rounding=ROUND_CEILING)), 0)
    return Exposure(closed_minor=closed_minor, open_minor=open_minor, prepaid_minor=max(prepaid_minor, 0))


def block_amount(points: int, price_per_point: Decimal, minor_units: int) -> int:
    """What a block of ``points`` costs at ``price_per_point`` (per point, in major units): exactly, rounded up to a
    whole minor unit."""
    exact = EXACT.multiply(EXACT.multiply(Decimal(points), price_per_point), Decimal(minor_units))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def warning_line(limit_minor: int, warning_percent: int) -> int:
    """Where the warning band of a limit starts: the percent of the limit, rounded up to a minor unit."""
    return -(-limit_minor * warning_percent // 100)


def credit_state(exposure_minor: int, limit_minor: int | None, warning_minor: int | None) -> str:
    """``over`` at or past the limit, ``warning`` at or past the warning line, else ``ok`` (always without a limit).

    ``exposure_minor`` is below zero while prepaid money is left over (``Exposure.uncovered_minor``).
    """
    if limit_minor is None:
        return "ok"
    if exposure_minor >= limit_minor:
        return "over"
    if warning_minor is not None and exposure_minor >= warning_minor:
        return "warning"
    return "ok"


# ---------------------------------------------------------------- the query


def partner_exposure(session: Session, *, partner_id: int) -> Exposure:
    """A partner's exposure now, from its closed statements, their payments and its open period's postings."""
    currency = session.scalar(select(Partner.currency).where(Partner.id == partner_id))
    if currency is None:
        raise NotFound(f"no partner {partner_id}")
    paid = (
        select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor).label("paid"))
        .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id).subquery()
    )
    closed = [(int(net), int(paid_minor)) for net, paid_minor in session.execute(
        select(SettlementStatement.net_minor, func.coalesce(paid.c.paid, 0))
        .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
        .where(SettlementStatement.partner_id == partner_id, SettlementStatement.net_minor > 0))]
    since = session.scalar(select(func.max(SettlementRun.cycle_ends_at)).where(SettlementRun.partner_id == partner_id))
    kinds = [kind.value for kind in ISSUING_KINDS | TAKE_BACK_KINDS]
    query = (
        select(JournalTransaction.price_per_point, func.sum(JournalEntry.amount_points))
        .join(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(JournalTransaction.partner_id == partner_id, JournalTransaction.kind.in_(kinds),
               JournalTransaction.price_per_point.is_not(None),
               LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id))
        .group_by(JournalTransaction.price_per_point)
    )
    if since is not None:
        query = query.where(JournalTransaction.posted_at >= since)
    # Issues debit the partner's points-issued account and take-backs credit it, so the
    # points charged are the entries' sum with its sign turned.
    open_postings = [(-int(signed), Decimal(price)) for price, signed in session.execute(query)
                     if signed and price is not None]
    return exposure_of(closed, open_postings, minor_units_per_unit(currency),
                       prepaid_balance(session, partner_id=partner_id))


# ---------------------------------------------------------------- the snapshot


def refresh(session: Session, *, partner_id: int, now: datetime, warning_percent: int | None = None) -> PartnerCredit:
    """Compute a partner's exposure and rewrite its snapshot; an entry into ``warning`` or ``over`` raises an alert.

    ``warning_percent`` redraws the warning line from the limit (the job and limit changes
    pass the setting); without it the line stored with the limit is kept.
    """
    figures = partner_exposure(session, partner_id=partner_id)
    exposure = figures.total_minor
    snapshot = session.execute(select(PartnerCredit).where(PartnerCredit.partner_id == partner_id)
                               .with_for_update()).scalar_one_or_none()
    if snapshot is None:
        currency = session.scalar(select(Partner.currency).where(Partner.id == partner_id))
        assert currency is not None, "partner_exposure found the partner"
        session.execute(insert(PartnerCredit).values(partner_id=partner_id, limit_minor=None, warning_minor=None,
                                                     currency=currency, exposure_minor=exposure, state="ok",
                                                     computed_at=now))
        return session.get_one(PartnerCredit, partner_id)
    if warning_percent is not None and snapshot.limit_minor is not None:
        snapshot.warning_minor = warning_line(snapshot.limit_minor, warning_percent)
    before = snapshot.state
    state = credit_state(figures.uncovered_minor, snapshot.limit_minor, snapshot.warning_minor)
    snapshot.exposure_minor = exposure
    snapshot.state = state
    snapshot.computed_at = now
    if _rank(state) > _rank(before):
        assert snapshot.limit_minor is not None, "only a limit leaves the ok state"
        snapshot.warned_at = now
        session.add(PartnerCreditAlert(partner_id=partner_id, state=state, exposure_minor=exposure,
                                       limit_minor=snapshot.limit_minor, currency=snapshot.currency, raised_at=now))
        audit_log.append(session, actor="system:credit", action=f"partner_credit.{state}",
                         subject=f"partner:{partner_id}", now=now, before={"state": before},
                         after={"state": state, "exposure_minor": exposure, "limit_minor": snapshot.limit_minor})
    session.flush()
    return snapshot


def refresh_if_tracked(session: Session, *, partner_id: int, now: datetime) -> None:
    """Refresh a partner's snapshot if it has one (a payment or a closing changed what it owes)."""
    if session.scalar(select(PartnerCredit.partner_id).where(PartnerCredit.partner_id == partner_id)) is not None:
        refresh(session, partner_id=partner_id, now=now)


def refresh_all(session: Session, *, now: datetime, limit: int, warning_percent: int) -> int:
    """Refresh every partner with a credit limit (up to ``limit`` of them, longest unrefreshed first); returns how
    many were refreshed."""
    partner_ids = list(session.scalars(
        select(PartnerCredit.partner_id).where(PartnerCredit.limit_minor.is_not(None))
        .order_by(PartnerCredit.computed_at, PartnerCredit.partner_id).limit(limit)))
    for partner_id in partner_ids:
        refresh(session, partner_id=partner_id, now=now, warning_percent=warning_percent)
    return len(partner_ids)


def credit_job(warning_percent: int) -> Job:
    """Recompute every limited partner's exposure and state (every minute)."""
    def run(session: Session, *, now: datetime, limit: int) -> int:
        return refresh_all(session, now=now, limit=limit, warning_percent=warning_percent)

    return Job("refresh-credit-exposure", 60, run, "partners refreshed")


def _rank(state: str) -> int:
    return ("ok", "warning", "over").index(state)


# ---------------------------------------------------------------- limits, four eyes


def _partner(session: Session, partner_code: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == partner_code))
    if partner is None:
        raise NotFound(f"no partner {partner_code!r}")
    return partner


def _check_change(limit_minor: object, reason: object) -> None:
    if limit_minor is not None and (isinstance(limit_minor, bool) or not isinstance(limit_minor, int)
                                    or not 0 <= limit_minor <= MAX_AMOUNT_MINOR):
        raise ValidationFailed("limit_minor must be a whole number of minor units from 0, or null to remove the limit",
                               fields={"limit_minor": ["invalid"]})
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LENGTH:
        raise ValidationFailed(f"reason must be 1 to {MAX_REASON_LENGTH} characters",
                               fields={"reason": ["1 to 500 characters"]})


def request_limit_change(session: Session, *, partner_code: str, limit_minor: int | None, reason: str, actor: str,
                         now: datetime, warning_percent: int = DEFAULT_WARNING_PERCENT) -> LimitChangeView:
    """Ask for a partner's credit limit to change (``None``: remove it).

    A first limit or a lower one applies at once and refreshes the snapshot; a raise or a
    removal waits for a second person (one such change at a time per partner).
    """
    _check_change(limit_minor, reason)
    partner = _partner(session, partner_code)
    snapshot = session.execute(select(PartnerCredit).where(PartnerCredit.partner_id == partner.id)
                               .with_for_update()).scalar_one_or_none()
    current = snapshot.limit_minor if snapshot is not None else None
    if limit_minor is None and current is None:
        raise InvalidState(f"{partner.code} has no credit limit to remove")
    at_once = limit_minor is not None and (current is None or limit_minor <= current)
    if not at_once and session.scalar(select(PartnerCreditLimitChange.id).where(
            PartnerCreditLimitChange.partner_id == partner.id, PartnerCreditLimitChange.status == "pending")):
        raise ChangePending(f"a change of {partner.code}'s credit limit already waits for a second person")
    change_id = session.execute(insert(PartnerCreditLimitChange).values(
        partner_id=partner.id, limit_minor=limit_minor, reason=reason, requested_by=actor, requested_at=now,
        decided_by=actor if at_once else None, decided_at=now if at_once else None,
        status="approved" if at_once else "pending").returning(PartnerCreditLimitChange.id)).scalar_one()
    audit_log.append(session, actor=actor, action="partner_credit.limit_requested",
                     subject=f"partner_credit_limit_change:{change_id}", now=now, before={"limit_minor": current},
                     after={"partner": partner.code, "limit_minor": limit_minor,
                            "status": "approved" if at_once else "pending"})
    if at_once:
        _apply_limit(session, partner, limit_minor, now=now, warning_percent=warning_percent)
    return limit_change_by_id(session, change_id)


def decide_limit_change(session: Session, *, change_id: int, decision: str, actor: str, now: datetime,
                        partner_code: str | None = None,
                        warning_percent: int = DEFAULT_WARNING_PERCENT) -> LimitChangeView:
    """Approve (apply) or reject a pending raise or removal; the person who asked for it cannot.

    ``partner_code``, when given, must be the change's partner (else NotFound).
    """
    if decision not in DECISIONS:
        raise ValidationFailed("decision must be approve or reject", fields={"decision": ["unknown"]})
    change = session.execute(select(PartnerCreditLimitChange).where(PartnerCreditLimitChange.id == change_id)
                             .with_for_update()).scalar_one_or_none()
    if change is not None and partner_code is not None and change.partner_id != _partner(session, partner_code).id:
        change = None
    if change is None:
        raise NotFound(f"no credit limit change {change_id}")
    if staff_people.same_person(session, change.requested_by, actor):
        raise SameApprover("a raise or removal of a credit limit must be decided by another person than the one "
                           "who asked for it (whether through a back-office client or a console login)")
    if change.status != "pending":
        raise AlreadyDecided(f"credit limit change {change_id} is already {change.status}")
    status = DECISIONS[decision]
    changed = cast("CursorResult[Any]", session.execute(
        update(PartnerCreditLimitChange)
        .where(PartnerCreditLimitChange.id == change_id, PartnerCreditLimitChange.status == "pending")
        .values(status=status, decided_by=actor, decided_at=now).execution_options(synchronize_session=False)
    )).rowcount
    if changed != 1:
        raise AlreadyDecided(f"credit limit change {change_id} was decided meanwhile")
    session.expire(change)
    audit_log.append(session, actor=actor, action=f"partner_credit.limit_{status}",
                     subject=f"partner_credit_limit_change:{change_id}", now=now, before={"status": "pending"},
                     after={"status": status, "limit_minor": change.limit_minor})
    if status == "approved":
        partner = session.get_one(Partner, change.partner_id)
        _apply_limit(session, partner, change.limit_minor, now=now, warning_percent=warning_percent)
    return limit_change_by_id(session, change_id)


def _apply_limit(session: Session, partner: Partner, limit_minor: int | None, *, now: datetime,
                 warning_percent: int) -> None:
    """Write the limit into the snapshot, then refresh it: a state the new limit raises alerts, as any entry does."""
    snapshot = refresh(session, partner_id=partner.id, now=now)
    snapshot.limit_minor = limit_minor
    snapshot.warning_minor = warning_line(limit_minor, warning_percent) if limit_minor is not None else None
    if limit_minor is None:
        snapshot.state = "ok"
        snapshot.warned_at = None
    session.flush()
    refresh(session, partner_id=partner.id, now=now)


# ---------------------------------------------------------------- reads


def limit_change_by_id(session: Session, change_id: int) -> LimitChangeView:
    """One limit change, or NotFound."""
    found = _changes(session, PartnerCreditLimitChange.id == change_id)
    if not found:
        raise NotFound(f"no credit limit change {change_id}")
    return found[0]


def _changes(session: Session, *conditions: Any) -> list[LimitChangeView]:
    return [LimitChangeView(change.id, code, change.limit_minor, change.reason, change.status, change.requested_by,
                            change.requested_at, change.decided_by, change.decided_at)
            for change, code in session.execute(
                select(PartnerCreditLimitChange, Partner.code)
                .join(Partner, Partner.id == PartnerCreditLimitChange.partner_id)
                .where(*conditions).order_by(PartnerCreditLimitChange.id))]


def credit_of(session: Session, *, partner_code: str) -> CreditView:
    """A partner's limit, its last computed exposure and state, and the limit changes waiting for a second person.

    A partner never refreshed (no limit ever set) shows its exposure computed now.
    """
    partner = _partner(session, partner_code)
    snapshot = session.get(PartnerCredit, partner.id)
    pending = _changes(session, PartnerCreditLimitChange.partner_id == partner.id,
                       PartnerCreditLimitChange.status == "pending")
    prepaid = prepaid_balance(session, partner_id=partner.id)
    if snapshot is None:
        exposure = partner_exposure(session, partner_id=partner.id).total_minor
        return CreditView(partner.code, partner.currency, None, None, exposure, "ok", None, pending, prepaid)
    return CreditView(partner.code, snapshot.currency, snapshot.limit_minor, snapshot.warning_minor,
                      snapshot.exposure_minor, snapshot.state, snapshot.computed_at, pending, prepaid)


def credit_alerts(session: Session, *, partner_code: str | None = None,
                  limit: int = MAX_ALERTS) -> list[CreditAlertView]:
    """The latest credit alerts, newest first, of one partner or all."""
    query = (select(PartnerCreditAlert, Partner.code).join(Partner, Partner.id == PartnerCreditAlert.partner_id)
             .order_by(PartnerCreditAlert.raised_at.desc(), PartnerCreditAlert.id.desc()).limit(limit))
    if partner_code is not None:
        query = query.where(Partner.code == partner_code)
    return [CreditAlertView(alert.id, code, alert.state, alert.exposure_minor, alert.limit_minor, alert.currency,
                            alert.raised_at) for alert, code in session.execute(query)]


def limited_partners(session: Session) -> list[CreditView]:
    """Every partner with a credit limit, its snapshot and pending changes, by partner code."""
    codes = session.scalars(select(Partner.code).join(PartnerCredit, PartnerCredit.partner_id == Partner.id)
                            .where(PartnerCredit.limit_minor.is_not(None)).order_by(Partner.code))
    return [credit_of(session, partner_code=code) for code in codes]


# ---------------------------------------------------------------- prepaid point blocks


def prepaid_balance(session: Session, *, partner_id: int) -> int:
    """The partner's prepaid money no statement was paid from yet, in minor units: bought minus applied."""
    bought = session.scalar(select(func.coalesce(func.sum(PartnerPrepaidBlock.amount_minor), 0))
                            .where(PartnerPrepaidBlock.partner_id == partner_id))
    applied = session.scalar(
        select(func.coalesce(func.sum(StatementEvent.amount_minor), 0))
        .join(PartnerPrepaidBlock, PartnerPrepaidBlock.id == StatementEvent.prepaid_block_id)
        .where(PartnerPrepaidBlock.partner_id == partner_id, StatementEvent.kind == "paid"))
    # PostgreSQL widens SUM(bigint) to numeric: a whole Decimal.
    return int(bought or 0) - int(applied or 0)


def _block_views(session: Session, partner_id: int) -> list[PrepaidBlockView]:
    applied = (
        select(StatementEvent.prepaid_block_id, func.sum(StatementEvent.amount_minor).label("applied"))
        .where(StatementEvent.prepaid_block_id.is_not(None), StatementEvent.kind == "paid")
        .group_by(StatementEvent.prepaid_block_id).subquery()
    )
    views = []
    for block, code, applied_minor in session.execute(
            select(PartnerPrepaidBlock, Partner.code, func.coalesce(applied.c.applied, 0))
            .join(Partner, Partner.id == PartnerPrepaidBlock.partner_id)
            .outerjoin(applied, applied.c.prepaid_block_id == PartnerPrepaidBlock.id)
            .where(PartnerPrepaidBlock.partner_id == partner_id).order_by(PartnerPrepaidBlock.id)):
        used = int(applied_minor)
        views.append(PrepaidBlockView(block.id, code, block.points, block.price_per_point, block.amount_minor,
                                      block.currency, block.reference, block.paid_on, block.recorded_by,
                                      block.recorded_at, used, block.amount_minor - used))
    return views


def prepaid_blocks(session: Session, *, partner_code: str) -> PrepaidView:
    """A partner's prepaid blocks, oldest first, with what each paid and has left, and the balance."""
    partner = _partner(session, partner_code)
    blocks = _block_views(session, partner.id)
    return PrepaidView(partner.code, partner.currency, sum(block.left_minor for block in blocks), blocks)


def buy_block(session: Session, *, partner_code: str, points: int, reference: str, paid_on: date, actor: str,
              now: datetime) -> BlockBought:
    """Record a block of points the partner paid for ahead, at its issue price in force now; refreshes its credit.

    Refused: points not a whole number from 1 to ``MAX_BLOCK_POINTS``, a malformed reference,
    a payment day after tomorrow (422); an unknown partner (404); a partner without an
    issue price in force, or a zero one (409 ``invalid_state``); a reference the partner's
    blocks already carry (409 ``duplicate_reference``).
    """
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= MAX_BLOCK_POINTS:
        raise ValidationFailed(f"points must be a whole number from 1 to {MAX_BLOCK_POINTS}",
                               fields={"points": ["invalid"]})
    if not isinstance(reference, str) or not REFERENCE_PATTERN.match(reference):
        raise ValidationFailed("reference must be 1-64 letters, digits or . _ : / -, starting with a letter or digit",
                               fields={"reference": ["malformed"]})
    # A day's slack: the day the money arrived may be tomorrow in UTC for a partner east of it.
    if isinstance(paid_on, datetime) or not isinstance(paid_on, date) or paid_on > (now + timedelta(days=1)).date():
        raise ValidationFailed("paid_on must be the day the money was paid, not a day to come",
                               fields={"paid_on": ["invalid"]})
    partner = _partner(session, partner_code)
    # A partner's prepaid money moves under its settlement lock, as its statements' payments do.
    lock_partner_settlement(session, partner.id)
    price = session.scalars(price_in_force(partner.id, now)).first()
    if price is None:
        raise InvalidState(f"{partner.code} has no issue price in force to price a block at")
    if price.issue_price_per_point <= 0:
        raise InvalidState(f"{partner.code}'s issue price is zero: a block would pay for nothing")
    if session.scalar(select(PartnerPrepaidBlock.id).where(PartnerPrepaidBlock.partner_id == partner.id,
                                                           PartnerPrepaidBlock.reference == reference)) is not None:
        raise DuplicatePrepaidReference(f"{partner.code} already has a prepaid block with reference {reference!r}")
    amount = block_amount(points, price.issue_price_per_point, minor_units_per_unit(partner.currency))
    if amount > MAX_AMOUNT_MINOR:
        raise ValidationFailed("the block would cost more than the books hold", fields={"points": ["too many"]})
    block_id = session.execute(insert(PartnerPrepaidBlock).values(
        partner_id=partner.id, points=points, price_per_point=price.issue_price_per_point, amount_minor=amount,
        currency=partner.currency, reference=reference, paid_on=paid_on, recorded_by=actor, recorded_at=now,
    ).returning(PartnerPrepaidBlock.id)).scalar_one()
    audit_log.append(session, actor=actor, action="partner_prepaid.bought", subject=f"partner_prepaid_block:{block_id}",
                     now=now, after={"partner": partner.code, "points": points,
                                     "price_per_point": str(price.issue_price_per_point), "amount_minor": amount,
                                     "currency": partner.currency, "reference": reference,
                                     "paid_on": paid_on.isoformat()})
    # What covers the partner's issuance grew: its credit snapshot follows in this transaction.
    refresh_if_tracked(session, partner_id=partner.id, now=now)
    block = next(view for view in _block_views(session, partner.id) if view.id == block_id)
    return BlockBought(block, prepaid_balance(session, partner_id=partner.id),
                       credit_of(session, partner_code=partner.code))


def apply_to_statement(session: Session, *, statement_id: int, actor: str, now: datetime) -> PrepaidPayment:
    """Pay an invoiced statement the partner owes from its prepaid balance, up to what is outstanding and left.

    Refused (409): the statement is not invoiced (``not_invoiced``), its net is not owed
    to the hub or it is paid already (``nothing_owed``), or no prepaid money is left
    (``no_prepaid_balance``); unknown statement: 404.
    """
    partner_id = session.scalar(select(SettlementStatement.partner_id).where(SettlementStatement.id == statement_id))
    if partner_id is None:
        raise NotFound(f"no statement {statement_id}")
    lock_partner_settlement(session, partner_id)
    if session.scalar(select(StatementEvent.id).where(StatementEvent.statement_id == statement_id,
                                                      StatementEvent.kind == "invoiced").limit(1)) is None:
        raise StatementNotInvoiced(f"statement {statement_id} is not invoiced yet")
    applied = _draw_prepaid(session, statement_id=statement_id, actor=actor, now=now, required=True)
    return _prepaid_payment(session, statement_id, applied)


def apply_on_invoicing(session: Session, *, statement_id: int, actor: str, now: datetime) -> int:
    """Pay a statement just invoiced from its partner's prepaid balance, if it owes and has some; what was drawn.

    ``finance.mark_invoiced`` calls it in its transaction, under the partner's settlement lock.
    """
    return _draw_prepaid(session, statement_id=statement_id, actor=actor, now=now, required=False)


def _draw_prepaid(session: Session, *, statement_id: int, actor: str, now: datetime, required: bool) -> int:
    """Draw on the partner's blocks, oldest first, for what the statement has outstanding; one ``paid`` event per
    block drawn on. ``required``: refuse when nothing can be drawn, rather than draw nothing."""
    statement = session.get_one(SettlementStatement, statement_id)
    paid = int(session.scalar(select(func.coalesce(func.sum(StatementEvent.amount_minor), 0)).where(
        StatementEvent.statement_id == statement_id, StatementEvent.kind == "paid")) or 0)
    outstanding = statement.net_minor - paid
    if statement.net_minor <= 0 or outstanding <= 0:
        if required:
            raise NothingOutstanding(f"statement {statement_id} has nothing owed to the hub outstanding")
        return 0
    left = [block for block in _block_views(session, statement.partner_id) if block.left_minor > 0]
    if not left:
        if required:
            raise NoPrepaidBalance(f"{_code(session, statement.partner_id)} has no prepaid money left")
        return 0
    drawn: list[dict[str, Any]] = []
    remaining = outstanding
    for block in left:
        if remaining == 0:
            break
        amount = min(block.left_minor, remaining)
        session.execute(insert(StatementEvent).values(
            statement_id=statement_id, kind="paid", amount_minor=amount, paid_on=now.date(), reference=block.reference,
            actor=actor, at=now, prepaid_block_id=block.id))
        drawn.append({"block": block.id, "reference": block.reference, "amount_minor": amount})
        remaining -= amount
    applied = outstanding - remaining
    audit_log.append(session, actor=actor, action="partner_prepaid.applied", subject=f"statement:{statement_id}",
                     now=now, before={"paid_minor": paid},
                     after={"paid_minor": paid + applied, "amount_minor": applied, "blocks": drawn})
    # What the partner owes and what it has prepaid both fell: its snapshot follows in this transaction.
    refresh_if_tracked(session, partner_id=statement.partner_id, now=now)
    return applied


def _code(session: Session, partner_id: int) -> str:
    return session.get_one(Partner, partner_id).code


def _prepaid_payment(session: Session, statement_id: int, applied: int) -> PrepaidPayment:
    statement, code = session.execute(
        select(SettlementStatement, Partner.code).join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementStatement.id == statement_id)).one()
    paid = int(session.scalar(select(func.coalesce(func.sum(StatementEvent.amount_minor), 0)).where(
        StatementEvent.statement_id == statement_id, StatementEvent.kind == "paid")) or 0)
    return PrepaidPayment(statement_id, code, statement.currency, statement.net_minor, applied, paid,
                          statement.net_minor - paid, paid == statement.net_minor,
                          prepaid_balance(session, partner_id=statement.partner_id))
