"""Which of a partner's prices is in force at a moment: the one statement of that rule.

Prices are rows in force from their ``effective_from`` on; the price in force at a
moment is the partner's latest row that took effect by then. The ledger records what
this selects on every posting, and ``alliance audit`` prices every posting again with
the same select, correlated to each posting's partner and time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, SQLColumnExpression, select

from alliance.models import PartnerPrice


def price_in_force(partner_id: SQLColumnExpression[int | None] | int,
                   at: SQLColumnExpression[datetime] | datetime) -> Select[PartnerPrice]:
    """The partner's price row in force at ``at``: the latest to take effect by then.

    ``partner_id`` and ``at`` may be values or columns of an enclosing query, which
    makes this a correlated lookup (one index probe per row on the unique
    ``(partner_id, effective_from)``).
    """
    return (
        select(PartnerPrice)
        .where(PartnerPrice.partner_id == partner_id, PartnerPrice.effective_from <= at)
        .order_by(PartnerPrice.effective_from.desc())
        .limit(1)
    )
