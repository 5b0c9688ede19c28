"""The behaviour points rules page for partner managers and administrators: read-only.

Each event type's rule (what it is worth, who funds it, caps, who is eligible, when it is
in force) as ``behaviour_points.rules`` reads it; rules are changed through the
back-office API or ``alliance behaviour rules set``, both audited.
"""

from __future__ import annotations

from flask import render_template

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import query_sort, sorted_rows
from alliance.domain.behaviour import EVENT_TYPES
from alliance.extensions import hub_state
from alliance.services import behaviour_points

RULE_READER_ROLES = security.PARTNER_MANAGER_ROLES
EVENT_TYPE_NAMES = {"sign_in": "Daily sign-in", "referral": "Referral of a new member", "survey": "Survey completed",
                    "self_service": "Self-service used", "recharge": "Recharge", "bill_payment": "Bill payment"}
FUNDER_NAMES = {"hub": "the hub", "reporter": "the reporting partner"}
SORTS = ("event", "points", "funder")

navigation_item("Partners", "Behaviour rules", "console.behaviour_rules", roles=RULE_READER_ROLES, order=23,
                summary="points for sign-ins, referrals, surveys, self-service, recharges and bill payments")


@console.route("/partners/behaviour-rules")
@security.requires(*RULE_READER_ROLES)
def behaviour_rules() -> str:
    """Every event type's behaviour points rule, sortable by event type, points or funder."""
    sort = query_sort(SORTS, "event")
    with hub_state().read_only_unit_of_work() as uow:
        rules = behaviour_points.rules(uow.session)
    rows = sorted_rows(rules, sort, {
        "event": lambda rule: EVENT_TYPES.index(rule.event_type),
        "points": lambda rule: (rule.points, rule.event_type),
        "funder": lambda rule: (FUNDER_NAMES.get(rule.funded_by, rule.funded_by), rule.event_type),
    })
    missing = [EVENT_TYPE_NAMES[event_type] for event_type in EVENT_TYPES
               if event_type not in {rule.event_type for rule in rules}]
    return render_template("console/partners/behaviour_rules.html", rules=rows, sort=sort, missing=missing,
                           event_names=EVENT_TYPE_NAMES, funder_names=FUNDER_NAMES)
