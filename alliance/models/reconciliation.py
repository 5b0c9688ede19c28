"""Reconciliation reports: a partner's own file for a cycle, matched against the hub's records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class ReconciliationReport(Base):
    """One upload and what matching it found; kept as rendered, never changed."""

    __tablename__ = "reconciliation_reports"
    __table_args__ = (CheckConstraint("source IN ('partner', 'back_office')", name="source"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    source: Mapped[str] = mapped_column(String(12))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    discrepancies: Mapped[int] = mapped_column(Integer)
    report_json: Mapped[str] = mapped_column(Text)
    report_csv: Mapped[str] = mapped_column(Text)
