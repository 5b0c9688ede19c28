"""Complaints against partners: filed by customer service, investigated, then resolved or rejected."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import SQLColumnExpression, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.models import Complaint, Purchase, RedemptionHold
from alliance.services import audit_log
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
