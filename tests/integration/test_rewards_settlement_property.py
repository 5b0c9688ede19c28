"""On random activity (earns, redemptions and reward orders that are fulfilled, failed, left to expire or
returned), every supplier's statement carries exactly the reimbursement of the items it supplied, and the
partners' nets sum to the hub's margin recomputed independently from the activity itself."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.domain.errors import InsufficientPoints, InvalidState
from alliance.services import ledger, rewards
from settlement.closing import close_cycle, cycle_summary
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
from tests.factories import make_member, make_partner
from tests.http_server import assert_audit_green

EXAMPLES = itertools.count()
ISSUE_PRICES = (Decimal("0.0125"), Decimal("0.0100"))
REDEMPTION_PRICES = (Decimal("0.0080"), Decimal("0.0095"))
# Each reward: (kind, points per item, reimbursement per item in cents).
REWARDS = {"mug": ("goods", 700, 550), "bill": ("bill_credit", 100, 100)}
operation_strategy = st.tuples(
    st.sampled_from(["earn", "earn", "redeem", "order", "order", "order"]),
    st.integers(min_value=0, max_value=1),  # partner (issuer or redeemer) / member
    st.integers(min_value=1, max_value=900),  # points, or items for an order
    st.sampled_from(["fulfil", "fail", "expire", "return", "leave"]),  # what becomes of an order
    st.sampled_from(sorted(REWARDS)),
)


def run(hub, operation, **arguments):
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation_strategy, min_size=1, max_size=14))
def test_suppliers_are_reimbursed_per_item_and_the_nets_sum_to_the_hub_margin(pg_hub, operations):
    hub = pg_hub
    example = next(EXAMPLES)
    # Each example lives in its own month, far from the others.
    month = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=62 * example)
    start = month.replace(day=1) + timedelta(days=1)
    codes = [f"p{example}-{index}" for index in range(2)] + [f"s{example}"]
    partners = [make_partner(hub, now=start - timedelta(days=1), code=code, settlement_cycle="monthly",
                             time_zone="UTC", issue_price_per_point=ISSUE_PRICES[index % 2],
                             redemption_price_per_point=REDEMPTION_PRICES[index % 2])
                for index, code in enumerate(codes)]
    supplier = partners[2]
    members = [make_member(hub, now=start - timedelta(days=1)).member_id for _ in range(2)]
    for name, (kind, points_price, unit) in REWARDS.items():
        with hub.unit_of_work() as uow:
            rewards.propose_reward(uow.session, supplier=codes[2], code=f"{name}-{example}", kind=kind, title=name,
                                   points_price=points_price, unit_price_minor=unit,
                                   stock=10_000 if kind == "goods" else None, fulfilment_days=2,
                                   return_days=0 if kind == "bill_credit" else 10, actor="console:pam",
                                   now=start - timedelta(days=1))
            rewards.approve_reward(uow.session, code=f"{name}-{example}", actor="console:paul",
                                   now=start - timedelta(days=1))
            uow.commit()
    expected_exact = {code: Decimal(0) for code in codes}  # in cents, from the partner's side
    supplied: dict[str, int] = {}
    at = start
    for number, (kind, index, amount, outcome, reward) in enumerate(operations):
        at += timedelta(hours=12)
        member = members[index]
        try:
            if kind == "earn":
                run(hub, ledger.earn, member_id=member, partner_id=partners[index], points=amount, now=at,
                    expires_at=at + timedelta(days=400))
                expected_exact[codes[index]] += amount * ISSUE_PRICES[index] * 100
            elif kind == "redeem":
                hold = run(hub, ledger.authorize_hold, member_id=member, partner_id=partners[index], points=amount,
                           now=at, ttl_s=600)
                run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=amount, now=at + timedelta(seconds=1))
                expected_exact[codes[index]] -= amount * REDEMPTION_PRICES[index] * 100
            else:
                items = 1 + amount % 3
                reference = f"o{example}-{number}"
                code = f"{reward}-{example}"
                run(hub, rewards.place_order, reward_code=code, member_id=member, items=items,
                    channel=rewards.BACK_OFFICE_CHANNEL, reference=reference, actor="console:cass",
                    key_ring=hub.key_ring, now=at)
                by = {"channel": rewards.BACK_OFFICE_CHANNEL, "reference": reference, "actor": "console:cass"}
                reimbursed = items * REWARDS[reward][2]
                if outcome in ("fulfil", "return"):
                    run(hub, rewards.fulfil_order, supplier_id=supplier, note=None, now=at + timedelta(hours=1), **by)
                    expected_exact[codes[2]] -= reimbursed
                    supplied[code] = supplied.get(code, 0) + items
                    if outcome == "return" and REWARDS[reward][0] == "goods":
                        run(hub, rewards.return_order, supplier_id=None, reason="returned", now=at + timedelta(hours=2),
                            **by)
                        expected_exact[codes[2]] += reimbursed
                elif outcome == "fail":
                    run(hub, rewards.fail_order, supplier_id=supplier, reason="cannot", now=at + timedelta(hours=1),
                        **by)
                elif outcome == "expire":
                    run(hub, rewards.expire_orders, now=at + timedelta(days=2))
        except (InsufficientPoints, InvalidState):
            pass
    # Orders left placed carry no money; close the month for every partner, expiring the rest first.
    month_end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    run(hub, rewards.expire_orders, now=month_end - timedelta(hours=1))
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    statements = {}
    for partner_id, code in zip(partners, codes, strict=True):
        cycle = cycle_containing(start, partner_code=code, frequency="monthly", time_zone="UTC",
                                 cutoff_local=time(0, 0))
        assert cycle.ends_at == month_end
        statements[code] = run(hub, close_cycle, partner_id=partner_id, cycle=cycle, now=month_end + timedelta(hours=1),
                               signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
    with hub.unit_of_work() as uow:
        summary = cycle_summary(uow.session, cycle_ends_at=month_end, currency="EUR")
    nets = {net.partner_code: net for net in summary.partner_nets if net.partner_code in codes}
    for code in codes:
        exact = nets[code].exact_net_minor if code in nets else Decimal(0)
        assert exact == expected_exact[code], code
    # The reward lines are whole cents: items × price per item, nothing rounded.
    supplier_net = nets.get(codes[2])
    assert (supplier_net.net_minor if supplier_net else 0) == expected_exact[codes[2]]
    assert summary.hub_margin_exact_minor == sum(
        (net.exact_net_minor for net in summary.partner_nets), Decimal(0))
    assert sum(net.net_minor for net in summary.partner_nets) == summary.hub_margin_minor
    # Every point spent on a reward is traced from its issuer to the supplier.
    spent_on_rewards = sum(items * REWARDS[code.rsplit("-", 1)[0]][1] for code, items in supplied.items())
    traced = sum(flow.points for flow in summary.issuer_redeemer_matrix if flow.redeemer_partner_code == codes[2])
    assert traced == spent_on_rewards
    assert_audit_green(hub)
