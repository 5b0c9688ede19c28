"""Builders for test data: partners and members with sensible defaults."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from alliance.extensions import HubState
from alliance.services.members import Enrolment, enrol_member
from alliance.services.partners import PartnerTerms, create_partner


def default_terms(**overrides: object) -> PartnerTerms:
    """Terms of an ordinary partner; override any field."""
    values: dict[str, object] = {
        "currency": "EUR", "time_zone": "Europe/Paris", "settlement_cycle": "monthly",
        "issue_price_per_point": Decimal("0.0100"), "redemption_price_per_point": Decimal("0.0080"),
        "base_points_per_unit": Decimal("1"),
    }
    values.update(overrides)
    return PartnerTerms(**values)  # type: ignore[arg-type]


def make_partner(hub: HubState, *, now: datetime, code: str = "shop", status: str = "active", **terms: object) -> int:
    """Create and commit a partner; returns its id."""
    with hub.unit_of_work() as uow:
        partner_id = create_partner(uow.session, code=code, name=code.title(), terms=default_terms(**terms),
                                    now=now, status=status)
        uow.commit()
    return partner_id


def make_member(hub: HubState, *, now: datetime) -> Enrolment:
    """Enrol and commit a member."""
    with hub.unit_of_work() as uow:
        enrolment = enrol_member(uow.session, now=now)
        uow.commit()
    return enrolment
