"""A partner's fixed cycle fee is charged once on each statement, at its exact amount."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
from tests.factories import make_partner


def test_each_statement_charges_the_cycle_fee_once(hub):
    created = datetime(2025, 12, 31, tzinfo=timezone.utc)
    partner_id = make_partner(hub, now=created, code="feed", cycle_fee_minor=250)
    signer_key = Ed25519PrivateKey.generate()
    nets = []
    for day in (1, 2):
        cycle = Cycle("feed", Frequency.DAILY, datetime(2026, 1, day, tzinfo=timezone.utc),
                      datetime(2026, 1, day + 1, tzinfo=timezone.utc))
        with hub.unit_of_work() as uow:
            closed = settlement_closing.close_cycle(uow.session, partner_id=partner_id, cycle=cycle,
                                                    now=datetime(2026, 2, 1, tzinfo=timezone.utc),
                                                    signing_key=signer_key, key_id="stmt-test", payment_terms_days=14)
            uow.commit()
        document = json.loads(closed.document_json)
        nets.append((closed.net_minor, closed.closing_balance_minor))
        fee_lines = [line for line in document["lines"] if line["line_kind"] == "fee"]
        assert [line["amount_minor"] for line in fee_lines] == [250]
    assert nets == [(250, 250), (250, 500)]
