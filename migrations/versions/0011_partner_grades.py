"""Partner grades: grading periods, grades with their explanation, overrides and alerts.

Why: partner managers grade merchants each period by volume, complaints and settlement
behaviour and act on the grades (docs/design.md, "Who works with the hub"). A grade
must be explainable later, so each row keeps its metrics, breakdown and the
configuration it was computed with; a manager's override is a separate append-only row
(triggers refuse UPDATE and DELETE), so the computed grade stays visible beside every
override.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grade_periods",
        sa.Column("id", ID, nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("starts_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("graded_count", sa.Integer(), nullable=False),
        sa.Column("not_graded_count", sa.Integer(), nullable=False),
        sa.Column("computed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("computed_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint("starts_at < ends_at", name=op.f("ck_grade_periods_bounds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grade_periods")),
        sa.UniqueConstraint("period", name=op.f("uq_grade_periods_period")),
    )
    op.create_table(
        "partner_grades",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("period_id", ID, nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=True),
        sa.Column("score", ExactDecimal(9, 4), nullable=True),
        sa.Column("not_graded_reason", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("breakdown", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("computed_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('graded', 'not_graded')", name=op.f("ck_partner_grades_status")),
        sa.CheckConstraint(
            "(status = 'graded' AND grade IN ('A', 'B', 'C', 'D') AND score IS NOT NULL)"
            " OR (status = 'not_graded' AND grade IS NULL AND score IS NULL AND not_graded_reason IS NOT NULL)",
            name=op.f("ck_partner_grades_grade_matches_status"),
        ),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_partner_grades_partner_id_partners")),
        sa.ForeignKeyConstraint(["period_id"], ["grade_periods.id"],
                                name=op.f("fk_partner_grades_period_id_grade_periods")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_grades")),
        sa.UniqueConstraint("partner_id", "period_id", name=op.f("uq_partner_grades_partner_id_period_id")),
    )
    op.create_index("ix_partner_grades_period_id", "partner_grades", ["period_id"])
    op.create_table(
        "grade_overrides",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_grade_id", ID, nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name=op.f("ck_grade_overrides_grade")),
        sa.CheckConstraint("length(reason) > 0", name=op.f("ck_grade_overrides_reason_given")),
        sa.ForeignKeyConstraint(["partner_grade_id"], ["partner_grades.id"],
                                name=op.f("fk_grade_overrides_partner_grade_id_partner_grades")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grade_overrides")),
    )
    op.create_index("ix_grade_overrides_partner_grade_id", "grade_overrides", ["partner_grade_id"])
    op.create_table(
        "grade_alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_grade_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raised_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('downgrade', 'complaint_rate')", name=op.f("ck_grade_alerts_kind")),
        sa.CheckConstraint("(acknowledged_by IS NULL) = (acknowledged_at IS NULL)",
                           name=op.f("ck_grade_alerts_acknowledged_together")),
        sa.ForeignKeyConstraint(["partner_grade_id"], ["partner_grades.id"],
                                name=op.f("fk_grade_alerts_partner_grade_id_partner_grades")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grade_alerts")),
        sa.UniqueConstraint("partner_grade_id", "kind", name=op.f("uq_grade_alerts_partner_grade_id_kind")),
    )
    _install_append_only_guard()


def downgrade() -> None:
    op.drop_table("grade_alerts")
    op.drop_index("ix_grade_overrides_partner_grade_id", table_name="grade_overrides")
    op.drop_table("grade_overrides")
    op.drop_index("ix_partner_grades_period_id", table_name="partner_grades")
    op.drop_table("partner_grades")
    op.drop_table("grade_periods")


def _install_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER trg_grade_overrides_append_only BEFORE UPDATE OR DELETE ON grade_overrides "
                   "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
        op.execute("CREATE TRIGGER trg_grade_overrides_no_truncate BEFORE TRUNCATE ON grade_overrides "
                   "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()")
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"""CREATE TRIGGER trg_grade_overrides_no_{operation.lower()} BEFORE {operation} ON grade_overrides
            BEGIN SELECT RAISE(ABORT, 'grade overrides are never edited: {operation} on grade_overrides is refused');
            END""")
