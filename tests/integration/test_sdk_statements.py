"""The SDK lists and fetches signed statements, verifies them offline, and uploads reconciliations."""

from __future__ import annotations

import base64
import json
import urllib.request
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from partners_sdk import AllianceClient, public_key_from_raw, verify_statement
from tests.integration.test_reconciliation import HEADER, close_current_window
from tests.sdk_support import make_shop, serve_in_thread


def test_a_till_reconciles_and_verifies_its_statement_over_real_http(pg_app, pg_hub):
    shop = make_shop(pg_hub)
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key)
        for receipt_id, amount in (("r-1", 1_000), ("r-2", 2_000)):
            client.report_purchase(receipt_id=receipt_id, card_number=shop.card_number, amount_minor=amount,
                                   currency="EUR")
        statement_id = close_current_window(pg_app, shop.partner)
        listed = client.list_statements()
        assert [item.statement_id for item in listed] == [statement_id]
        document = client.get_statement(statement_id)
        signature = client.get_statement(statement_id, format="json-signature")
        with urllib.request.urlopen(f"{base_url}/settlement/v1/statement-keys", timeout=10) as response:
            published = json.load(response)["keys"]
        keys = {key["key_id"]: public_key_from_raw(base64.b64decode(key["public_key_b64"])) for key in published}
        assert verify_statement(document, signature, keys) == listed[0].key_id
        local_day = datetime.now(timezone.utc).astimezone(ZoneInfo("Europe/Paris")).date().isoformat()
        report = client.upload_reconciliation(statement_id, (HEADER + f"r-1,1000,EUR,{local_day}\r\n").encode())
    assert report["report"]["counts"] == {"matched": 1, "missing_at_hub": 0, "missing_at_partner": 1,
                                          "mismatched": 0}


def test_statements_come_a_page_at_a_time_and_the_sdk_fetches_every_page(pg_app, pg_hub, monkeypatch):
    from datetime import timedelta

    import partners_sdk.client
    from settlement.closing import close_due_cycles
    from tests.back_office_support import BackOffice
    from tests.factories import make_signing_partner

    now = datetime.now(timezone.utc)
    partner = make_signing_partner(pg_hub, now=now - timedelta(days=6), code="daily", settlement_cycle="daily",
                                   time_zone="UTC")
    closed = close_due_cycles(pg_hub.session_factory, now=now, signer=pg_hub.statement_signer)
    assert len(closed) >= 5
    bo = BackOffice(pg_app)
    first = bo.get("/settlement/statements", role="finance", query={"partner": "daily", "page_size": "2"})
    assert (first.body["total"], len(first.body["statements"])) == (len(closed), 2)
    assert bo.get("/settlement/statements", role="finance",
                  query={"partner": "daily", "page_size": "201"}).status == 422
    monkeypatch.setattr(partners_sdk.client, "STATEMENT_PAGE_SIZE", 2)
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, partner.key_id, partner.private_key)
        listed = client.list_statements()
    assert [item.statement_id for item in listed] == [item.statement_id for item in
                                                       sorted(closed, key=lambda item: item.cycle_starts_at)]
