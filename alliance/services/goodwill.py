"""Goodwill credits and corrections by customer service, with four eyes above a threshold.

A **credit** gives a member points as goodwill, tied to one of that member's complaints,
funded by the hub (an earn from the hub's marketing account, as a welcome bonus is) or
charged to a named partner (an earn from the partner's issued account at its issue price
in force, so its next statement carries the points on its issuance line, as any earn's).
A **correction** (debit) takes a member's spendable points away, soonest expiry first,
naming a complaint or a written reference; each lot it takes from is clawed back to the
earn that issued it, so the issuer is credited back at the price it paid
(``ledger.debit_correction``). Up to the approval threshold (points) a request is posted
at once; above it, it waits until a second person (not the requester, whichever
credential either of them used: ``staff_people.same_person``) approves it, and is posted
only then. Every request, decision and posting is in the audit log; the ledger's
postings carry the memo ``goodwill:<request id>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Row, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from alliance.domain.clock import add_months
from alliance.domain.credit import OVER_LIMIT, CreditLimitReached
from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.domain.ledger import TransactionKind
from alliance.models import Complaint, GoodwillRequest, JournalTransaction, Member, Partner, PartnerCredit
from alliance.services import audit_log, ledger, staff_people

if TYPE_CHECKING:
    from alliance.config import Settings

DIRECTIONS = ("credit", "debit")
STATUSES = ("pending", "posted", "rejected")
DECISIONS = {"approve": "posted", "reject": "rejected"}
HUB = "hub"
MAX_POINTS = 10**9
MAX_REASON_CHARACTERS = 500
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/#-]{0,63}\Z")
MAX_LIST = 500


class SameRequester(Conflict):
    """The person who requested a goodwill credit or correction tried to decide it."""

    code = "same_approver"


class AlreadyDecided(Conflict):
    """A goodwill request was already approved (and posted) or rejected."""

    code = "already_decided"


@dataclass(frozen=True, slots=True)
class GoodwillPolicy:
    """The settings goodwill works under: the approval threshold and how long credited points live."""

    approval_threshold_points: int
    expiry_months: int

    @classmethod
    def from_settings(cls, settings: Settings) -> GoodwillPolicy:
        """The policy the hub's settings give: ``goodwill_approval_threshold_points`` and the points' expiry."""
        return cls(approval_threshold_points=settings.goodwill_approval_threshold_points,
                   expiry_months=settings.points_expiry_months)


@dataclass(frozen=True, slots=True)
class GoodwillView:
    """A goodwill request as staff read it."""

    request_id: int
    member_number: str
    direction: str
    points: int
    reason: str
    complaint_id: int | None
    reference: str | None
    funded_by: str | None
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    posted_at: datetime | None
    transaction_ids: tuple[int, ...]

    @property
    def memo(self) -> str:
        """The memo of the request's ledger postings."""
        return memo_of(self.request_id)


MEMO_PREFIX = "goodwill:"


def memo_of(request_id: int) -> str:
    """The memo every ledger posting of a goodwill request carries."""
    return f"{MEMO_PREFIX}{request_id}"


def request_goodwill(
    session: Session, *, member_number: str, direction: str, points: int, reason: str, policy: GoodwillPolicy,
    now: datetime, actor: str, complaint_id: int | None = None, reference: str | None = None,
    funded_by: str | None = None,
) -> GoodwillView:
    """Credit or debit a member's points with a reason: posted at once up to the threshold, else requested.

    A credit names a complaint of the member and who funds it (``hub`` or a partner code;
    the hub when not given); a debit names a complaint or a written reference, and no funder
    (its points go back to whoever issued them).
    """
    if direction not in DIRECTIONS:
        raise ValidationFailed("direction must be credit or debit", fields={"direction": ["unknown"]})
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= MAX_POINTS:
        raise ValidationFailed(f"points must be a whole number from 1 to {MAX_POINTS:,}",
                               fields={"points": ["out of range"]})
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_CHARACTERS:
        raise ValidationFailed(f"the reason must be 1-{MAX_REASON_CHARACTERS} characters",
                               fields={"reason": ["length"]})
    reference = (reference or "").strip() or None
    if reference is not None and not REFERENCE.match(reference):
        raise ValidationFailed("a reference is 1-64 letters, digits, spaces or . _ : / # -, starting with a letter "
                               "or digit", fields={"reference": ["malformed"]})
    member = session.scalar(select(Member).where(Member.member_number == member_number))
    if member is None:
        raise NotFound(f"no member {member_number!r}")
    if complaint_id is not None:
        complaint_member = session.scalar(select(Complaint.member_id).where(Complaint.id == complaint_id))
        if complaint_member != member.id:
            raise ValidationFailed(f"complaint #{complaint_id} is not a complaint of member {member_number}",
                                   fields={"complaint_id": ["not this member's"]})
    elif direction == "credit":
        raise ValidationFailed("a goodwill credit names the member's complaint it answers",
                               fields={"complaint_id": ["required"]})
    elif reference is None:
        raise ValidationFailed("a correction names a complaint of the member or a written reference",
                               fields={"reference": ["required without a complaint"]})
    partner_id = _funder(session, direction, funded_by)
    _refuse_past_credit_limit(session, partner_id)
    request_id = session.execute(insert(GoodwillRequest).values(
        member_id=member.id, direction=direction, points=points, reason=reason, complaint_id=complaint_id,
        reference=reference, partner_id=partner_id, status="pending", requested_by=actor, requested_at=now,
    ).returning(GoodwillRequest.id)).scalar_one()
    audit_log.append(session, actor=actor, action="goodwill.request", subject=f"goodwill:{request_id}", now=now,
                     after={"member": member_number, "direction": direction, "points": points,
                            "complaint_id": complaint_id, "reference": reference,
                            "funded_by": _funder_code(session, direction, partner_id), "status": "pending",
                            "needs_approval": points > policy.approval_threshold_points})
    if points <= policy.approval_threshold_points:
        _post(session, request_id, policy=policy, now=now, actor=actor)
    return goodwill_by_id(session, request_id)


def decide_goodwill(session: Session, *, request_id: int, decision: str, policy: GoodwillPolicy, now: datetime,
                    actor: str) -> GoodwillView:
    """Approve (and so post) or reject a pending request; the person who requested it may not decide it."""
    if decision not in DECISIONS:
        raise ValidationFailed("decision must be approve or reject", fields={"decision": ["unknown"]})
    request = session.execute(
        select(GoodwillRequest).where(GoodwillRequest.id == request_id).with_for_update()
    ).scalar_one_or_none()
    if request is None:
        raise NotFound(f"no goodwill request {request_id}")
    # Four eyes means two people: a back-office client and a console login of one person are one pair of eyes.
    if staff_people.same_person(session, request.requested_by, actor):
        raise SameRequester("a goodwill credit or correction must be decided by another person than the one who "
                            "requested it (whether through a back-office client or a console login)")
    if request.status != "pending":
        raise AlreadyDecided(f"goodwill request {request_id} is already {request.status}")
    changed = cast("CursorResult[*tuple[Any, ...]]", session.execute(
        update(GoodwillRequest).where(GoodwillRequest.id == request_id, GoodwillRequest.status == "pending")
        .values(status="rejected" if decision == "reject" else "pending", decided_by=actor, decided_at=now)
        .execution_options(synchronize_session=False)
    )).rowcount
    if changed != 1:
        raise AlreadyDecided(f"goodwill request {request_id} was decided meanwhile")
    session.expire(request)
    audit_log.append(session, actor=actor, action=f"goodwill.{decision}", subject=f"goodwill:{request_id}",
                     now=now, before={"status": "pending"}, after={"status": DECISIONS[decision]})
    if decision == "approve":
        _post(session, request_id, policy=policy, now=now, actor=actor)
    return goodwill_by_id(session, request_id)


def goodwill_by_id(session: Session, request_id: int) -> GoodwillView:
    """One goodwill request."""
    rows = _views(session, select_where=GoodwillRequest.id == request_id, limit=1)
    if not rows:
        raise NotFound(f"no goodwill request {request_id}")
    return rows[0]


def goodwill_requests(session: Session, *, status: str | None = None, member_number: str | None = None,
                      limit: int = MAX_LIST) -> list[GoodwillView]:
    """Goodwill requests, newest first, optionally of one status or one member."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed("status must be pending, posted or rejected", fields={"status": ["unknown"]})
    conditions = []
    if status is not None:
        conditions.append(GoodwillRequest.status == status)
    if member_number is not None:
        conditions.append(Member.member_number == member_number)
    return _views(session, select_where=conditions, limit=min(max(limit, 1), MAX_LIST))


def decidable_by(session: Session, views: list[GoodwillView], actor: str) -> set[int]:
    """The ids of the pending requests ``actor`` may approve or reject: those another person requested."""
    return {view.request_id for view in views if view.status == "pending"
            and not staff_people.same_person(session, view.requested_by, actor)}


def _views(session: Session, *, select_where: Any, limit: int) -> list[GoodwillView]:
    funder = aliased(Partner)
    statement = (
        select(GoodwillRequest, Member.member_number, funder.code.label("funder_code"))
        .join(Member, Member.id == GoodwillRequest.member_id)
        .outerjoin(funder, funder.id == GoodwillRequest.partner_id)
        .order_by(GoodwillRequest.requested_at.desc(), GoodwillRequest.id.desc())
        .limit(limit)
    )
    for condition in select_where if isinstance(select_where, list) else [select_where]:
        statement = statement.where(condition)
    rows = session.execute(statement).all()
    postings = _postings(session, [row[0].id for row in rows])
    return [_view(row, postings.get(row[0].id, ())) for row in rows]


def _postings(session: Session, request_ids: list[int]) -> dict[int, tuple[int, ...]]:
    if not request_ids:
        return {}
    memos = {memo_of(request_id): request_id for request_id in request_ids}
    found: dict[int, list[int]] = {}
    for transaction_id, memo in session.execute(
        select(JournalTransaction.id, JournalTransaction.memo)
        .where(JournalTransaction.memo.in_(list(memos))).order_by(JournalTransaction.id)
    ):
        found.setdefault(memos[str(memo)], []).append(transaction_id)
    return {request_id: tuple(ids) for request_id, ids in found.items()}


def _view(row: Row[GoodwillRequest, str, str], transaction_ids: tuple[int, ...]) -> GoodwillView:
    request: GoodwillRequest = row[0]
    funded_by = None if request.direction == "debit" else (row.funder_code or HUB)
    return GoodwillView(
        request_id=request.id, member_number=row.member_number, direction=request.direction, points=request.points,
        reason=request.reason, complaint_id=request.complaint_id, reference=request.reference, funded_by=funded_by,
        status=request.status, requested_by=request.requested_by, requested_at=request.requested_at,
        decided_by=request.decided_by, decided_at=request.decided_at, posted_at=request.posted_at,
        transaction_ids=transaction_ids,
    )


def _funder(session: Session, direction: str, funded_by: str | None) -> int | None:
    """The partner a credit is charged to (None: the hub); a debit names no funder."""
    funded_by = (funded_by or "").strip() or None
    if direction == "debit":
        if funded_by not in (None, HUB):
            raise ValidationFailed("a correction names no funder: its points go back to whoever issued them",
                                   fields={"funded_by": ["not for a debit"]})
        return None
    if funded_by is None or funded_by == HUB:
        return None
    partner = session.scalar(select(Partner).where(Partner.code == funded_by))
    if partner is None:
        raise NotFound(f"no partner {funded_by!r} to charge the goodwill to")
    if partner.status != "active":
        raise ValidationFailed(f"partner {partner.code} is {partner.status}; only an active partner can fund goodwill",
                               fields={"funded_by": ["not active"]})
    return partner.id


def _funder_code(session: Session, direction: str, partner_id: int | None) -> str | None:
    if direction == "debit":
        return None
    if partner_id is None:
        return HUB
    return session.scalar(select(Partner.code).where(Partner.id == partner_id))


def _refuse_past_credit_limit(session: Session, partner_id: int | None) -> None:
    """Refuse a credit charged to a partner whose unsettled issuance reached its credit limit (nothing is stored)."""
    if partner_id is not None and session.scalar(
            select(PartnerCredit.state).where(PartnerCredit.partner_id == partner_id)) == OVER_LIMIT:
        raise CreditLimitReached()


def _post(session: Session, request_id: int, *, policy: GoodwillPolicy, now: datetime, actor: str) -> None:
    """Move the request's points in the ledger and mark it posted, audited."""
    request = session.execute(select(GoodwillRequest).where(GoodwillRequest.id == request_id)).scalar_one()
    memo = memo_of(request_id)
    if request.direction == "credit":
        _refuse_past_credit_limit(session, request.partner_id)
        earned = ledger.earn(session, member_id=request.member_id, partner_id=request.partner_id,
                             points=request.points, now=now, expires_at=add_months(now, policy.expiry_months),
                             memo=memo, kind=TransactionKind.GOODWILL_CREDIT)
        transaction_ids = [earned.transaction_id]
    else:
        transaction_ids = [posting.transaction_id for posting in ledger.debit_correction(
            session, member_id=request.member_id, points=request.points, now=now, memo=memo)]
    session.execute(update(GoodwillRequest).where(GoodwillRequest.id == request_id)
                    .values(status="posted", posted_at=now).execution_options(synchronize_session=False))
    audit_log.append(session, actor=actor, action="goodwill.post", subject=f"goodwill:{request_id}", now=now,
                     before={"status": "pending"},
                     after={"status": "posted", "direction": request.direction, "points": request.points,
                            "transactions": transaction_ids})
    session.expire(request)


def pending_count(session: Session) -> int:
    """How many goodwill requests wait for a second person."""
    return session.scalar(select(func.count()).select_from(GoodwillRequest)
                          .where(GoodwillRequest.status == "pending")) or 0
