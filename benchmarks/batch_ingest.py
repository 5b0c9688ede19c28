"""Batch ingest: signed batches of purchases through POST /partner/v1/purchases/batch.

The hub's first batch warms up the worker that serves the connection (its statements are
built and prepared on first use) and is not timed. The floors write the same rows into the
same tables of the same database with psycopg 3 and no hub code at all: for every purchase
the hub stored, a journal transaction, its two entries, the lot and the purchase (fresh
receipt ids, same members, amounts, points and breakdowns), one transaction per batch,
once with ``executemany`` and once with ``COPY``. The ledger's own triggers run on those
rows as on the hub's.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

from benchmarks import common

BENCHMARK = "batch ingest"
SIZES = {"full": {"members": 5000, "batches": 6, "batch_size": 1000},
         "quick": {"members": 300, "batches": 2, "batch_size": 200}}
PATH = "/partner/v1/purchases/batch"
WARM_UP_BATCHES = 1
TARGET_SHARE = 0.75
TRANSACTION_COLUMNS = ("id", "kind", "member_id", "partner_id", "posted_at", "price_per_point", "currency", "memo")
ENTRY_COLUMNS = ("transaction_id", "account_id", "amount_points")
LOT_COLUMNS = ("member_id", "partner_id", "funding_account_id", "earn_transaction_id", "state", "points_earned",
               "points_remaining", "earned_at", "expires_at")
PURCHASE_COLUMNS = ("partner_id", "receipt_id", "member_id", "card_id", "amount_minor", "currency", "purchased_at",
                    "reported_at", "points_partner", "points_hub", "earn_transaction_id", "breakdown",
                    "refunded_amount_minor")


def _batches(partner, members, sizes: dict) -> list[common.PreparedRequest]:  # type: ignore[no-untyped-def, type-arg]
    from partners_sdk.signing import RequestSigner

    signer = RequestSigner(partner.key_id, partner.private_key)
    purchased_at = common.recent()
    batches = []
    for batch_number in range(sizes["batches"] + WARM_UP_BATCHES):
        items = []
        for index in range(sizes["batch_size"]):
            number = batch_number * sizes["batch_size"] + index
            card_number = members[number % len(members)][1]
            items.append(common.purchase_payload(f"batch-{number}-{uuid.uuid4().hex[:8]}", card_number,
                                                 1_000 + (number % 50) * 100, purchased_at))
        batches.append(common.signed_post(signer, PATH, {"purchases": items}, f"batch-{uuid.uuid4().hex}"))
    return batches


def _send_batches(base_url: str, batches: list[common.PreparedRequest]) -> tuple[int, float]:
    """Send each batch in turn on one connection, the first untimed; (purchases applied after it, seconds)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    applied = 0
    started = time.perf_counter()
    for number, batch in enumerate(batches):
        if number == WARM_UP_BATCHES:
            applied, started = 0, time.perf_counter()
        connection.request(batch.method, batch.path, body=batch.body, headers=batch.headers)
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"batch refused: {reply.status} {body[:300]!r}")
        result = json.loads(body)
        if result["rejected"]:
            first = next(item for item in result["results"] if item["status"] == "rejected")
            raise RuntimeError(f"{result['rejected']} purchases rejected, first: {first['problem']}")
        applied += result["applied"]
    elapsed = time.perf_counter() - started
    connection.close()
    return applied, elapsed


def _stored_rows(connection: psycopg.Connection) -> list[tuple]:  # type: ignore[type-arg]
    """The hub's purchases with their earn transaction, entries and lot, in receipt order."""
    return connection.execute("""
        SELECT p.partner_id, p.member_id, p.card_id, p.amount_minor, p.currency, p.purchased_at, p.reported_at,
               p.points_partner, p.breakdown::text, t.price_per_point, l.funding_account_id, l.expires_at,
               (SELECT account_id FROM journal_entries e WHERE e.transaction_id = t.id AND e.amount_points > 0)
        FROM purchases p JOIN journal_transactions t ON t.id = p.earn_transaction_id
        JOIN point_lots l ON l.earn_transaction_id = t.id
        WHERE p.receipt_id LIKE 'batch-%' ORDER BY p.id
    """).fetchall()


def _raw_rows(stored: list[tuple], transaction_ids: list[int], tag: str) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    rows: dict[str, list[tuple]] = {"transactions": [], "entries": [], "lots": [], "purchases": []}  # type: ignore[type-arg]
    for row, transaction_id in zip(stored, transaction_ids, strict=True):
        (partner_id, member_id, card_id, amount_minor, currency, purchased_at, reported_at, points, breakdown,
         price, funding_account_id, expires_at, member_account_id) = row
        receipt_id = f"{tag}-{transaction_id}"
        rows["transactions"].append((transaction_id, "earn", member_id, partner_id, reported_at, price, currency,
                                     f"receipt {receipt_id}"))
        rows["entries"] += [(transaction_id, funding_account_id, -points), (transaction_id, member_account_id, points)]
        rows["lots"].append((member_id, partner_id, funding_account_id, transaction_id, "active", points, points,
                             reported_at, expires_at))
        rows["purchases"].append((partner_id, receipt_id, member_id, card_id, amount_minor, currency, purchased_at,
                                  reported_at, points, 0, transaction_id, breakdown, 0))
    return rows


TABLES = (("journal_transactions", "transactions", TRANSACTION_COLUMNS), ("journal_entries", "entries", ENTRY_COLUMNS),
          ("point_lots", "lots", LOT_COLUMNS), ("purchases", "purchases", PURCHASE_COLUMNS))


def _write_raw(url: str, stored: list[tuple], batch_size: int, method: str) -> float:  # type: ignore[type-arg]
    """Write the rows of every stored purchase again, one transaction per batch; seconds taken."""
    elapsed = 0.0
    with psycopg.connect(url) as connection:
        for start in range(0, len(stored), batch_size):
            chunk = stored[start:start + batch_size]
            ids = [row[0] for row in connection.execute(
                "SELECT nextval(pg_get_serial_sequence('journal_transactions', 'id')) FROM generate_series(1, %s)",
                (len(chunk),)).fetchall()]
            connection.commit()
            rows = _raw_rows(chunk, ids, f"raw-{method}")
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for table, key, columns in TABLES:
                    column_list = ", ".join(columns)
                    if method == "executemany":
                        placeholders = ", ".join(["%s"] * len(columns))
                        cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows[key])
                    else:
                        with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                            for values in rows[key]:
                                copy.write_row(values)
            connection.commit()
            elapsed += time.perf_counter() - started
    return elapsed


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Purchases/s through the hub's batch endpoint against raw executemany and COPY."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    app, environment = common.migrated_hub(context["postgres"], "bench_batch", artifacts)
    hub = app.extensions["alliance"]
    seeded_at = common.utc_now() - timedelta(hours=1)
    partner, = common.seed_partners(hub, 1, seeded_at)
    members = common.seed_members(hub, sizes["members"], seeded_at)
    with common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="batch") as server:
        applied, hub_seconds = _send_batches(server.base_url, _batches(partner, members, sizes))
    url = hub.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as connection:
        stored = _stored_rows(connection)
    executemany_seconds = _write_raw(url, stored, sizes["batch_size"], "executemany")
    copy_seconds = _write_raw(url, stored, sizes["batch_size"], "copy")
    audit_green, audit_note = common.run_audit_ok(hub)
    hub.engine.dispose()
    hub_rate, executemany_rate, copy_rate = (applied / hub_seconds, len(stored) / executemany_seconds,
                                             len(stored) / copy_seconds)
    note = (f"{sizes['batches']} signed batches of {sizes['batch_size']} over HTTP, one at a time, after "
            f"{WARM_UP_BATCHES} untimed; {applied} applied; {audit_note}")
    ratio = hub_rate / executemany_rate
    return [
        common.figure(BENCHMARK, "hub batch endpoint", hub_rate, "purchases/s", floor="raw executemany",
                      floor_value=executemany_rate, ratio=ratio, target=f">= {TARGET_SHARE:.0%} of raw executemany",
                      met=ratio >= TARGET_SHARE and audit_green, note=note),
        common.figure(BENCHMARK, "raw COPY of the same rows", copy_rate, "purchases/s", floor="raw executemany",
                      floor_value=executemany_rate, ratio=copy_rate / executemany_rate, target="", note=
                      "transactions, entries, lots, purchases; ledger triggers on"),
    ]


if __name__ == "__main__":
    common.standalone(run)
