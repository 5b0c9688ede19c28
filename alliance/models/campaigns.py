"""Rows behind campaigns beyond their terms: joint funders, segment members and awards."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class CampaignFunder(Base):
    """One partner paying a stated share (in basis points) of a joint campaign's bonus."""

    __tablename__ = "campaign_funders"
    __table_args__ = (
        UniqueConstraint("campaign_id", "partner_id"),
        CheckConstraint("share_bp > 0 AND share_bp <= 10000", name="share"),
        CheckConstraint("position >= 0", name="position"),
    )

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    # The order the funders were named in: ties of the remainder rule go to the lowest.
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    share_bp: Mapped[int] = mapped_column(Integer)


class CampaignSegmentMember(Base):
    """A member of a campaign's segment: the named list of members the operator uploaded."""

    __tablename__ = "campaign_segment_members"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)


class CampaignAward(Base):
    """Points one campaign gave on one purchase, and who paid them (a partner, or the hub when none).

    ``purchase_id`` and ``transaction_id`` (the earn posting that carries these points) are
    plain ids: the purchase and its postings live on the member's shard (alliance/models/distribution.py).
    """

    __tablename__ = "campaign_awards"
    __table_args__ = (CheckConstraint("points > 0", name="points_positive"),)

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    purchase_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True, index=True)
    # The funder's position among a joint campaign's funders; 0 for a campaign with one payer.
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    funder_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[int | None] = mapped_column(IdType)
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime)
