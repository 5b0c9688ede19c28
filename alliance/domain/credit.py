"""The refusal of new issuance by a partner past its credit limit (``settlement.credit`` keeps the exposure).

Here, apart from settlement, so that every service that issues points (purchases,
behaviour events, goodwill, joint campaigns) can raise it without loading settlement.
"""

from __future__ import annotations

from alliance.domain.errors import Conflict

# The state of ``partner_credit`` in which a partner's new issuance is refused.
OVER_LIMIT = "over"
# What a till is told: no figures (the till is not the place), and what lets the partner issue again.
REFUSAL_DETAIL = ("the partner's unsettled issuance has reached its credit limit; it can issue points again once it "
                  "pays what it owes the hub, buys a prepaid block of points, or its credit limit is raised")


class CreditLimitReached(Conflict):
    """New issuance by (or charged to) a partner whose unsettled issuance has reached its credit limit."""

    code = "credit_limit_reached"
    title = "Credit limit reached"

    def __init__(self, detail: str = REFUSAL_DETAIL, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail, fields=fields)
