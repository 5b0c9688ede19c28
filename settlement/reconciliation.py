"""Reconciling a statement: the partner's own file for the cycle against the hub's purchases and the reward
orders it supplied."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alliance.models import JournalTransaction, Partner, Purchase, ReconciliationReport, RewardOrder
from alliance.services import audit_log
from settlement.closing import statement_by_id
from settlement.matching import HubRecord, parse_partner_csv, reconcile, render_report_csv, render_report_json


def supplied_order_key(channel: str, reference: str) -> str:
    """How a supplier's file names a reward order it fulfilled: ``<channel>:<reference>`` (``back-office:BILL-7``)."""
    return f"{channel}:{reference}"


def reconcile_statement(
    session: Session, *, statement_id: int, document: bytes, source: str, actor: str, now: datetime,
    partner_id: int | None = None,
) -> ReconciliationReport:
    """Match a partner's CSV for a statement's cycle against the hub's records; store the report.

    The hub's side is every purchase the partner reported inside the cycle, and every
    reward order it supplied that was fulfilled inside the cycle (a bill credit the
    operator applied, say), each dated on the partner's local calendar. A purchase is
    keyed by its receipt id, at its amount; an order by ``<channel>:<reference>``, at the
    amount the hub reimburses for it (``supplied_order_key``).
    """
    closed = statement_by_id(session, statement_id=statement_id, partner_id=partner_id)
    partner_records = parse_partner_csv(document)
    partner = session.get_one(Partner, closed.partner_id)
    zone = ZoneInfo(partner.time_zone)
    hub_records = [
        HubRecord(receipt_id=receipt_id, amount_minor=amount_minor, currency=currency,
                  occurred_on=purchased_at.astimezone(zone).date())
        for receipt_id, amount_minor, currency, purchased_at in session.execute(
            select(Purchase.receipt_id, Purchase.amount_minor, Purchase.currency, Purchase.purchased_at).where(
                Purchase.partner_id == closed.partner_id, Purchase.reported_at >= closed.cycle_starts_at,
                Purchase.reported_at < closed.cycle_ends_at))
    ]
    hub_records += [
        HubRecord(receipt_id=supplied_order_key(channel, reference), amount_minor=amount_minor, currency=currency,
                  occurred_on=posted_at.astimezone(zone).date())
        for channel, reference, amount_minor, currency, posted_at in session.execute(
            select(RewardOrder.channel, RewardOrder.reference, RewardOrder.amount_minor, RewardOrder.currency,
                   JournalTransaction.posted_at)
            .join(JournalTransaction, JournalTransaction.id == RewardOrder.capture_transaction_id)
            .where(RewardOrder.supplier_partner_id == closed.partner_id,
                   JournalTransaction.posted_at >= closed.cycle_starts_at,
                   JournalTransaction.posted_at < closed.cycle_ends_at))
    ]
    report = reconcile(partner_records, hub_records)
    report_id = session.execute(insert(ReconciliationReport).values(
        statement_id=statement_id, partner_id=closed.partner_id, source=source, uploaded_by=actor, uploaded_at=now,
        discrepancies=report.discrepancies, report_json=render_report_json(report).decode("utf-8"),
        report_csv=render_report_csv(report).decode("utf-8"),
    ).returning(ReconciliationReport.id)).scalar_one()
    audit_log.append(session, actor=actor, action="statement.reconcile", subject=f"statement:{statement_id}",
                     now=now, after={"report": report_id, "discrepancies": report.discrepancies,
                                     "partner_rows": len(partner_records), "hub_rows": len(hub_records)})
    return session.get_one(ReconciliationReport, report_id)
