"""Member birthdays: the birth date on the profile, and the birthday bonuses awarded.

Why: each tier of the tier policy carries a birthday bonus, but the member profile had
no birth date, so nothing was awarded. The profile gains ``birth_date_encrypted`` (the
full date, encrypted under the PII key ring like the name, phone and e-mail address) and
``birthday``, the month and day in clear as MMDD (1231 for 31 December), indexed, so the
daily ``award-birthday-bonuses`` job finds today's birthdays without decrypting every
profile: a month and day alone do not identify a person, while the year, which would,
stays encrypted. ``birthday_awards`` records each bonus once per member and year (its
natural key), with the journal transaction that posted it, so the job can run twice, or
on two hosts at once, without paying twice.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("member_profiles") as batch:
        batch.add_column(sa.Column("birth_date_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("birthday", sa.SmallInteger(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_member_profiles_birthday"),
            "birthday IS NULL OR (birthday BETWEEN 101 AND 1231 AND birthday % 100 BETWEEN 1 AND 31)")
    op.create_index(op.f("ix_member_profiles_birthday"), "member_profiles", ["birthday"], unique=False)
    op.create_table(
        "birthday_awards",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=20), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("policy_version_id", ID, nullable=False),
        sa.Column("transaction_id", ID, nullable=False),
        sa.Column("awarded_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_birthday_awards_points_positive")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_birthday_awards_member_id_members")),
        sa.ForeignKeyConstraint(["policy_version_id"], ["tier_policy_versions.id"],
                                name=op.f("fk_birthday_awards_policy_version_id_tier_policy_versions")),
        sa.ForeignKeyConstraint(["transaction_id"], ["journal_transactions.id"],
                                name=op.f("fk_birthday_awards_transaction_id_journal_transactions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_birthday_awards")),
        sa.UniqueConstraint("member_id", "year", name=op.f("uq_birthday_awards_member_id_year")),
    )


def downgrade() -> None:
    op.drop_table("birthday_awards")
    op.drop_index(op.f("ix_member_profiles_birthday"), table_name="member_profiles")
    with op.batch_alter_table("member_profiles") as batch:
        batch.drop_constraint(op.f("ck_member_profiles_birthday"), type_="check")
        batch.drop_column("birthday")
        batch.drop_column("birth_date_encrypted")
