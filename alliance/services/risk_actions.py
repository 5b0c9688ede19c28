"""Acting on what a risk decision found: block its card, revoke its till's keys, open a complaint with its partner.

Apart from ``alliance.services.risk`` because a complaint is filed through the complaints
service, which reaches (through the grading reports and their jobs) back to card
verification and so to the risk controls themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.models import Card, Member, Partner, PartnerKey, RiskDecision
from alliance.services import audit_log, complaints, partner_keys
from alliance.services.risk import MAX_REASON_CHARACTERS

CASE_ACTIONS = ("block_card", "revoke_terminal_keys", "open_complaint")


def act(session: Session, *, decision_id: int, action: str, note: str, now: datetime, actor: str) -> dict[str, Any]:
    """Act on what a decision found, whatever its review: block the card it came from, revoke the keys bound to
    its till, or open a complaint with its partner; audited with the note. Answers what was done."""
    if action not in CASE_ACTIONS:
        raise ValidationFailed("the action is " + ", ".join(CASE_ACTIONS), fields={"action": list(CASE_ACTIONS)})
    note = note.strip()
    if not note or len(note) > MAX_REASON_CHARACTERS:
        raise ValidationFailed(f"say why, in 1 to {MAX_REASON_CHARACTERS} characters",
                               fields={"note": [f"1 to {MAX_REASON_CHARACTERS} characters"]})
    row = session.get(RiskDecision, decision_id)
    if row is None:
        raise NotFound(f"no risk decision {decision_id}")
    done: dict[str, Any]
    if action == "block_card":
        if row.card_id is None:
            raise InvalidState("the decision names no card", fields={"action": ["no card"]})
        blocked = session.execute(update(Card).where(Card.id == row.card_id, Card.status == "active")
                                  .values(status="blocked", blocked_at=now))
        if not blocked.rowcount:  # type: ignore[attr-defined]
            raise InvalidState("the card is not active any more", fields={"action": ["card not active"]})
        done = {"card_blocked": True}
    elif action == "revoke_terminal_keys":
        if row.terminal_id is None:
            raise InvalidState("the decision names no till", fields={"action": ["no terminal"]})
        keys = list(session.scalars(select(PartnerKey.key_id).where(
            PartnerKey.terminal_id == row.terminal_id, PartnerKey.status == "active").order_by(PartnerKey.key_id)))
        if not keys:
            raise InvalidState("no active key is bound to the till", fields={"action": ["no key to revoke"]})
        for key_id in keys:
            partner_keys.revoke_key(session, key_id=key_id, now=now)
        done = {"keys_revoked": keys}
    else:
        if row.partner_id is None:
            raise InvalidState("the decision names no partner", fields={"action": ["no partner"]})
        partner_code = session.scalar(select(Partner.code).where(Partner.id == row.partner_id))
        member_number = (session.scalar(select(Member.member_number).where(Member.id == row.member_id))
                         if row.member_id is not None else None)
        # A refused purchase or redemption was never recorded: there is nothing to tie the complaint to.
        reference = row.reference if row.operation in ("earn", "redeem") and row.action != "refuse" else None
        complaint = complaints.file_complaint(
            session, partner_code=str(partner_code), category="other", member_number=member_number,
            description=f"Risk decision {row.token} ({row.operation}, {row.action}): {note}",
            receipt_id=reference if row.operation == "earn" else None,
            redemption_reference=reference if row.operation == "redeem" else None, now=now, actor=actor)
        done = {"complaint_id": complaint.id}
    audit_log.append(session, actor=actor, action=f"risk.act.{action}", subject=f"risk-decision:{decision_id}",
                     now=now, before=None, after={**done, "note": note})
    return done
