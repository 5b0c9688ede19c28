"""Reconciliation: a partner's own file for a cycle against the hub's records, over both APIs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from alliance.extensions import hub_state
from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
from tests.back_office_support import BackOffice
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

HEADER = "receipt_id,amount_minor,currency,occurred_on\r\n"


def close_current_window(app, partner) -> int:  # type: ignore[no-untyped-def]
    """Close a cycle that covers the purchases just reported, so there is a statement to reconcile."""
    now = datetime.now(timezone.utc)
    signer = hub_state(app).statement_signer
    cycle = Cycle(partner.code, Frequency.DAILY, now - timedelta(hours=1), now + timedelta(seconds=1))
    with hub_state(app).unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=partner.partner_id, cycle=cycle, now=now + timedelta(seconds=2),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return closed.statement_id


def test_planted_discrepancies_are_all_found_and_nothing_else_is_flagged(app):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    rival = make_signing_partner(hub, now=wall_clock_partner_time(), code="rival")
    member = make_member_with_pin(hub, now=wall_clock_partner_time())
    client = SignedTestClient(app, shop)
    for receipt_id, amount in (("r-1", 1_000), ("r-2", 2_000), ("r-3", 3_000)):
        assert client.post("/partner/v1/purchases",
                           purchase_payload(receipt_id, member.card_number, amount)).status == 201
    statement_id = close_current_window(app, shop)
    # The hub dates purchases on the partner's local calendar (Europe/Paris in the factory).
    local_day = datetime.now(timezone.utc).astimezone(ZoneInfo("Europe/Paris")).date().isoformat()
    partner_file = (HEADER + f"r-1,1000,EUR,{local_day}\r\n" + f"r-2,2500,EUR,{local_day}\r\n"
                    + f"r-9,700,EUR,{local_day}\r\n").encode()

    uploaded = client.post(f"/partner/v1/statements/{statement_id}/reconciliations", partner_file,
                           headers={"Content-Type": "text/csv"})
    assert uploaded.status == 201, uploaded.body
    counts = uploaded.body["report"]["counts"]
    assert counts == {"matched": 1, "missing_at_hub": 1, "missing_at_partner": 1, "mismatched": 1}
    assert uploaded.body["discrepancies"] == 3
    assert "r-2" in uploaded.body["report_csv"] and "amount_minor" in uploaded.body["report_csv"]

    foreign = SignedTestClient(app, rival).post(f"/partner/v1/statements/{statement_id}/reconciliations",
                                                partner_file, headers={"Content-Type": "text/csv"})
    assert foreign.status == 404
    malformed = client.post(f"/partner/v1/statements/{statement_id}/reconciliations", b"not,a,valid\r\nfile",
                            headers={"Content-Type": "text/csv"})
    assert (malformed.status, malformed.body["code"]) == (422, "validation_failed")

    finance = BackOffice(app).post(f"/settlement/statements/{statement_id}/reconciliations",
                                   {"document": partner_file.decode()}, role="finance")
    assert finance.status == 201, finance.body
    assert finance.body["report"]["counts"] == counts
