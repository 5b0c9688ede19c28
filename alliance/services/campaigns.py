"""Campaigns: extra points in a period, with the funder stated."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.orm import Session

from alliance.domain.earning import Campaign as CampaignRule
from alliance.domain.errors import ValidationFailed
from alliance.domain.money import MULTIPLIER_PRECISION, MULTIPLIER_SCALE, exact_decimal_problem
from alliance.models import Campaign


def create_campaign(
    session: Session, *, name: str, funded_by: str, partner_id: int | None, multiplier: Decimal, bonus_points: int,
    min_amount_minor: int, starts_at: datetime, ends_at: datetime,
) -> int:
    """Create a campaign after checking its terms with the earning rules; returns its id."""
    if funded_by == "partner" and partner_id is None:
        raise ValidationFailed("a partner-funded campaign must name its partner", fields={"partner": ["required"]})
    if ends_at <= starts_at:
        raise ValidationFailed("a campaign must end after it starts", fields={"ends_at": ["before starts_at"]})
    problem = exact_decimal_problem(multiplier, scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
    if problem:
        raise ValidationFailed(f"multiplier {problem}", fields={"multiplier": [problem]})
    # The domain type validates multiplier, bonus and minimum the same way earning will. It takes
    # the funder as given and refuses anything but "partner" or "hub"; its field is typed as the
    # Funder it normalises that to, so a plain string does not type-check.
    CampaignRule(campaign_id=1, name=name, funded_by=funded_by,  # type: ignore[arg-type]
                 multiplier=multiplier, bonus_points=bonus_points, min_amount_minor=min_amount_minor)
    return session.execute(insert(Campaign).values(
        partner_id=partner_id, name=name, funded_by=funded_by, multiplier=multiplier, bonus_points=bonus_points,
        min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at,
    ).returning(Campaign.id)).scalar_one()
