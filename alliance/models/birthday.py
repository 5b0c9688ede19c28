"""Birthday bonuses awarded: one row per member and year, with the journal transaction that posted it.

The tier policy gives each tier a birthday bonus; the daily ``award-birthday-bonuses``
job credits it on the member's birthday (``alliance.services.birthday_bonus``). The
pair (member, year) is the natural key, so a second run, or a run on a second host at
the same moment, cannot pay a member twice in one year.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class BirthdayAward(Base):
    """A member's birthday bonus for one year: the tier and policy version it followed, and its transaction."""

    __tablename__ = "birthday_awards"
    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        UniqueConstraint("member_id", "year"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    year: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(20))
    points: Mapped[int] = mapped_column(BigInteger)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("tier_policy_versions.id"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"))
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime)
