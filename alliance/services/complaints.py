"""Complaints against partners: filed by customer service, investigated, then resolved or rejected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import SQLColumnExpression, case, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.models import Complaint, Member, Partner, Purchase, RedemptionHold
from alliance.services import audit_log
from alliance.services.console_reports import Page, Sort, paged
from alliance.services.member_admin import member_by_number
from alliance.services.partner_admin import partner_by_code

CATEGORIES = ("points_missing", "wrong_points", "redemption_refused", "redemption_error", "staff_conduct",
              "product_or_service", "other")
TRANSITIONS = {"open": {"investigating"}, "investigating": {"resolved", "rejected"}}
MAX_DESCRIPTION_CHARACTERS = 4000
MAX_PAGE_SIZE = 200


def file_complaint(
    session: Session, *, partner_code: str, category: str, description: str, member_number: str | None,
    receipt_id: str | None, redemption_reference: str | None, now: datetime, actor: str,
) -> Complaint:
    """Open a complaint, optionally tied to a member and one purchase or redemption."""
    if category not in CATEGORIES:
        raise ValidationFailed(f"category must be one of {', '.join(CATEGORIES)}", fields={"category": ["unknown"]})
    if not description.strip() or len(description) > MAX_DESCRIPTION_CHARACTERS:
        raise ValidationFailed("describe the complaint in 1-4000 characters", fields={"description": ["length"]})
    partner = partner_by_code(session, partner_code)
    member_id = member_by_number(session, member_number).id if member_number else None
    purchase_id = _linked(session, Purchase, Purchase.receipt_id, receipt_id, partner.id, "purchase")
    hold_id = _linked(session, RedemptionHold, RedemptionHold.reference, redemption_reference, partner.id,
                      "redemption")
    for model, row_id, what in ((Purchase, purchase_id, "purchase"), (RedemptionHold, hold_id, "redemption")):
        if member_id is not None and row_id is not None:
            owner = session.scalar(select(model.member_id).where(model.id == row_id))
            if owner != member_id:
                raise ValidationFailed(f"the {what} belongs to another member",
                                       fields={"member": [f"not the {what}'s member"]})
    complaint_id = session.execute(insert(Complaint).values(
        partner_id=partner.id, member_id=member_id, purchase_id=purchase_id, hold_id=hold_id, category=category,
        description=description.strip(), status="open", opened_by=actor, opened_at=now,
    ).returning(Complaint.id)).scalar_one()
    audit_log.append(session, actor=actor, action="complaint.open", subject=f"complaint:{complaint_id}", now=now,
                     after={"partner": partner_code, "category": category, "status": "open"})
    return session.get_one(Complaint, complaint_id)


def transition(session: Session, *, complaint_id: int, status: str, note: str | None, now: datetime,
               actor: str) -> Complaint:
    """Move a complaint along open → investigating → resolved or rejected."""
    complaint = session.scalar(select(Complaint).where(Complaint.id == complaint_id).with_for_update())
    if complaint is None:
        raise NotFound(f"no complaint {complaint_id}")
    if status not in TRANSITIONS.get(complaint.status, set()):
        raise InvalidState(f"a complaint that is {complaint.status} cannot become {status}")
    values: dict[str, object] = {"status": status}
    if status == "investigating":
        values["investigating_at"] = now
    else:
        if not note or not note.strip():
            raise ValidationFailed("closing a complaint needs a resolution note", fields={"note": ["required"]})
        values.update(closed_at=now, resolution_note=note.strip())
    before = complaint.status
    session.execute(update(Complaint).where(Complaint.id == complaint_id).values(**values))
    audit_log.append(session, actor=actor, action="complaint.transition", subject=f"complaint:{complaint_id}",
                     now=now, before={"status": before}, after={"status": status})
    session.refresh(complaint)
    return complaint


def list_complaints(session: Session, *, status: str | None, partner_code: str | None, page: int,
                    page_size: int) -> tuple[list[Complaint], int]:
    """One page of complaints, newest first, and the total matching."""
    query = select(Complaint)
    if status:
        query = query.where(Complaint.status == status)
    if partner_code:
        query = query.where(Complaint.partner_id == partner_by_code(session, partner_code).id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
    rows = session.scalars(query.order_by(Complaint.opened_at.desc(), Complaint.id.desc())
                           .offset((max(page, 1) - 1) * page_size).limit(page_size)).all()
    return list(rows), total


def _linked(session: Session, model: type[Purchase] | type[RedemptionHold], column: SQLColumnExpression[str | None],
            value: str | None, partner_id: int, what: str) -> int | None:
    if value is None:
        return None
    row_id = session.scalar(select(model.id).where(column == value, model.partner_id == partner_id))
    if row_id is None:
        raise NotFound(f"this partner has no {what} {value!r}")
    return row_id


def file_for_member(
    session: Session, *, member_number: str, partner_code: str | None, category: str, description: str,
    purchase_id: int | None, redemption_reference: str | None, now: datetime, actor: str,
) -> Complaint:
    """Open a complaint for a member, about one of their purchases (chosen from their own) or a redemption.

    With a purchase the partner is the purchase's; a partner named as well must be that one.
    """
    if purchase_id is not None and redemption_reference:
        raise ValidationFailed("a complaint concerns a purchase or a redemption, not both",
                               fields={"purchase": ["or redemption"]})
    receipt_id = None
    if purchase_id is not None:
        member = member_by_number(session, member_number)
        bought = session.execute(select(Purchase.receipt_id, Partner.code)
                                 .join(Partner, Partner.id == Purchase.partner_id)
                                 .where(Purchase.id == purchase_id, Purchase.member_id == member.id)).first()
        if bought is None:
            raise NotFound(f"member {member_number} has no such purchase")
        receipt_id, purchase_partner = bought
        if partner_code and partner_code != purchase_partner:
            raise ValidationFailed(f"purchase {receipt_id} was made at {purchase_partner}, not {partner_code}",
                                   fields={"partner": ["not the purchase's partner"]})
        partner_code = purchase_partner
    if not partner_code:
        raise ValidationFailed("name the partner the complaint is about (or choose a purchase)",
                               fields={"partner": ["required"]})
    return file_complaint(session, partner_code=partner_code, category=category, description=description,
                          member_number=member_number, receipt_id=receipt_id,
                          redemption_reference=redemption_reference or None, now=now, actor=actor)


@dataclass(frozen=True, slots=True)
class ComplaintRow:
    """A complaint as the queue shows it: the member and the purchase or redemption it concerns, in words."""

    id: int
    partner: str
    category: str
    description: str
    status: str
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    resolution_note: str | None
    member_number: str | None
    receipt_id: str | None
    purchased_at: datetime | None
    amount_minor: int | None
    currency: str | None
    redemption_reference: str | None
    redeemed_at: datetime | None
    points_held: int | None

    @property
    def category_words(self) -> str:
        """The category as a person writes it."""
        return self.category.replace("_", " ")


QUEUE_SORTS = ("opened", "status", "partner")


def queue_page(session: Session, *, status: str | None, partner_code: str | None, member_number: str | None,
               sort: Sort, page: int, page_size: int) -> Page[ComplaintRow]:
    """One page of the complaints queue, filtered and in ``sort``'s order (opened, status or partner)."""
    query = (
        select(Complaint.id, Partner.code, Complaint.category, Complaint.description, Complaint.status,
               Complaint.opened_by, Complaint.opened_at, Complaint.closed_at, Complaint.resolution_note,
               Member.member_number, Purchase.receipt_id, Purchase.purchased_at, Purchase.amount_minor,
               Purchase.currency, RedemptionHold.reference, RedemptionHold.created_at, RedemptionHold.points_held)
        .join(Partner, Partner.id == Complaint.partner_id)
        .outerjoin(Member, Member.id == Complaint.member_id)
        .outerjoin(Purchase, Purchase.id == Complaint.purchase_id)
        .outerjoin(RedemptionHold, RedemptionHold.id == Complaint.hold_id)
    )
    if status:
        query = query.where(Complaint.status == status)
    if partner_code:
        query = query.where(Partner.code == partner_code)
    if member_number:
        query = query.where(Member.member_number == member_number)
    # The lifecycle's order, not the alphabet's: open, investigating, then the closed ones.
    lifecycle = case({"open": 0, "investigating": 1, "resolved": 2, "rejected": 3}, value=Complaint.status, else_=4)
    columns: dict[str, Any] = {"opened": Complaint.opened_at, "status": lifecycle, "partner": Partner.code}
    tie = Complaint.id.desc() if sort.descending else Complaint.id.asc()
    rows, total = paged(session, query, page, page_size, *sort.order(columns, Complaint.opened_at.desc(), tie))
    return Page([ComplaintRow(*tuple(row)) for row in rows], total, page, page_size)
