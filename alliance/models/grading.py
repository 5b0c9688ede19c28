"""Partner grades: one computation per period, one grade per (partner, period), overrides and alerts.

A grade row keeps everything needed to explain it later, even after the weights change:
the metrics, the breakdown (weight, normalised value, contribution per metric), what
moved since the previous period and the scoring configuration in force. Recomputing a
period rewrites the computed part of its rows; overrides are a separate append-only
table, so the computed grade and every override stay visible side by side.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime

GRADES = ("A", "B", "C", "D")


class GradePeriod(Base):
    """One computation of a grading period (a month by default) and the configuration it used."""

    __tablename__ = "grade_periods"
    __table_args__ = (CheckConstraint("starts_at < ends_at", name="bounds"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    period: Mapped[str] = mapped_column(String(7), unique=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    config: Mapped[dict] = mapped_column(JSON)
    graded_count: Mapped[int] = mapped_column(Integer)
    not_graded_count: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    computed_by: Mapped[str] = mapped_column(String(200))


class PartnerGrade(Base):
    """A partner's computed grade for a period, with its metrics and explanation."""

    __tablename__ = "partner_grades"
    __table_args__ = (
        UniqueConstraint("partner_id", "period_id"),
        CheckConstraint("status IN ('graded', 'not_graded')", name="status"),
        CheckConstraint(
            "(status = 'graded' AND grade IN ('A', 'B', 'C', 'D') AND score IS NOT NULL)"
            " OR (status = 'not_graded' AND grade IS NULL AND score IS NULL AND not_graded_reason IS NOT NULL)",
            name="grade_matches_status",
        ),
        Index("ix_partner_grades_period_id", "period_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    period_id: Mapped[int] = mapped_column(ForeignKey("grade_periods.id"))
    status: Mapped[str] = mapped_column(String(12))
    grade: Mapped[str | None] = mapped_column(String(1))
    score: Mapped[Decimal | None] = mapped_column(ExactDecimal(9, 4))
    not_graded_reason: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON)
    breakdown: Mapped[list] = mapped_column(JSON)
    changes: Mapped[dict] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GradeOverride(Base):
    """A manager's override of a grade, with the required reason. Append-only: the newest one counts."""

    __tablename__ = "grade_overrides"
    __table_args__ = (
        CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name="grade"),
        CheckConstraint("length(reason) > 0", name="reason_given"),
        Index("ix_grade_overrides_partner_grade_id", "partner_grade_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_grade_id: Mapped[int] = mapped_column(ForeignKey("partner_grades.id"))
    grade: Mapped[str] = mapped_column(String(1))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class GradeAlert(Base):
    """A flag for the partner manager: a downgrade of two bands or more, or a high complaint rate."""

    __tablename__ = "grade_alerts"
    __table_args__ = (
        UniqueConstraint("partner_grade_id", "kind"),
        CheckConstraint("kind IN ('downgrade', 'complaint_rate')", name="kind"),
        CheckConstraint("(acknowledged_by IS NULL) = (acknowledged_at IS NULL)", name="acknowledged_together"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_grade_id: Mapped[int] = mapped_column(ForeignKey("partner_grades.id"))
    kind: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
