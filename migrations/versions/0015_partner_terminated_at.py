"""Partners record when they were terminated.

Why: a terminated partner's cycles keep closing while anything is still posted against
it (a late refund, a redemption refund), so that every posted entry lands in a closed
statement. The fixed cycle fee is owed only for cycles the partner was a member in:
closing needs the moment of termination to leave the fee off the cycles that start
after it. A partner terminated before this revision takes the time of its status
change from the audit log, or else the time of the upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("partners", sa.Column("terminated_at", UTCDateTime(timezone=True), nullable=True))
    partners = sa.table("partners", sa.column("id"), sa.column("code"), sa.column("status"),
                        sa.column("terminated_at", UTCDateTime()))
    audit_log = sa.table("audit_log", sa.column("action"), sa.column("subject"),
                         sa.column("occurred_at", UTCDateTime()))
    bind = op.get_bind()
    terminated = bind.execute(sa.select(partners.c.id, partners.c.code).where(partners.c.status == "terminated")).all()
    for partner_id, code in terminated:
        changed_at = bind.execute(
            sa.select(sa.func.max(audit_log.c.occurred_at))
            .where(audit_log.c.action == "partner.status", audit_log.c.subject == f"partner:{code}")
        ).scalar()
        bind.execute(sa.update(partners).where(partners.c.id == partner_id)
                     .values(terminated_at=changed_at if changed_at is not None else datetime.now(timezone.utc)))


def downgrade() -> None:
    op.drop_column("partners", "terminated_at")
