"""Risk pattern rules: an operator's terms for each pattern, the sightings counted across cards, amount profiles.

A pattern without a row in ``risk_pattern_rules`` runs on its built-in terms
(``alliance.domain.risk_patterns.PATTERNS``). ``risk_pattern_sightings`` keeps one row
each time a pattern counted across cards saw its scheme (``subject`` names what it is
counted per, such as a pair of tills). ``partner_amount_profiles`` is a partner's purchase
amounts over the last 90 days, as the daily ``profile-partner-amounts`` job computed them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class RiskPatternRule(Base):
    """An operator's terms, action and switch for one pattern, and who changed them last."""

    __tablename__ = "risk_pattern_rules"
    __table_args__ = (CheckConstraint("action IN ('flag', 'hold', 'refuse')", name="action"),)

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    terms: Mapped[dict] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String(10))
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class RiskPatternSighting(Base):
    """One time a pattern saw its scheme on a card, counted per ``subject`` (such as a pair of tills)."""

    __tablename__ = "risk_pattern_sightings"
    __table_args__ = (Index("ix_risk_pattern_sightings_subject_seen", "pattern", "subject", "seen_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    pattern: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(100))
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PartnerAmountProfile(Base):
    """A partner's purchase amounts over the profile's window: how many, their mean and standard deviation."""

    __tablename__ = "partner_amount_profiles"
    __table_args__ = (CheckConstraint("purchases >= 0", name="purchases_not_negative"),)

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    purchases: Mapped[int] = mapped_column(Integer)
    mean_minor: Mapped[int] = mapped_column(BigInteger)
    stddev_minor: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
