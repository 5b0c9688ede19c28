"""Balance inquiry p99 with 1M members and 10M ledger entries in the database.

The data set is built with set-based SQL (generate_series): members, cards (numbered
exactly as the hub numbers them: issuer prefix, card id, Luhn digit), their three
accounts, and earn transactions of one partner, each with its two entries and its lot.
The ledger's triggers would apply 10M entries one row at a time, so the load runs with
``session_replication_role = replica`` (triggers and foreign-key checks off) and writes
what the triggers would have written in bulk: each member's available balance is the
GROUP BY of its entries, each lot starts full. ``alliance audit`` (every invariant,
recomputed from the entries) must then be green, which proves the shortcut exact.

Then wrk replays signed ``POST /partner/v1/balance-inquiries`` (card + PIN, the only
balance call of the partner API) against the hub under gunicorn. Two more figures
explain the result: the balance read alone in process, and the keyed PIN check alone.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

from benchmarks import common

BENCHMARK = "balance inquiry"
SIZES = {"full": {"members": 1_000_000, "entries": 10_000_000, "pinned": 3000, "min_requests": 5_000, "duration_s": 20},
         "quick": {"members": 10_000, "entries": 100_000, "pinned": 300, "min_requests": 600, "duration_s": 6}}
PIN = "2468"
CARD_PREFIX = "6390"
WARM_UP_REQUESTS = 60
LOAD_CONNECTIONS = 2
PIN_CHECK_SAMPLES = 1000
TARGET_P99_MS = 5

LUHN_FUNCTION = """
CREATE FUNCTION pg_temp.luhn_digit(body text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT ((10 - sum(CASE WHEN (length(body) - position) % 2 = 0
                         THEN (digit * 2) - CASE WHEN digit * 2 > 9 THEN 9 ELSE 0 END
                         ELSE digit END) % 10) % 10)::text
  FROM (SELECT position, substr(body, position, 1)::int AS digit
        FROM generate_series(1, length(body)) AS position) AS digits
$$
"""


def _load(connection: psycopg.Connection, partner_id: int, members: int, entries: int) -> None:  # type: ignore[type-arg]
    """Members, cards, accounts, earn transactions, entries and lots, set-based, in one transaction."""
    transactions = entries // 2
    ids = connection.execute("""
        SELECT (SELECT coalesce(max(id), 0) FROM members), (SELECT coalesce(max(id), 0) FROM cards),
               (SELECT coalesce(max(id), 0) FROM ledger_accounts),
               (SELECT coalesce(max(id), 0) FROM journal_transactions),
               (SELECT id FROM ledger_accounts WHERE code = %s)
    """, (f"partner:{partner_id}:issued",)).fetchone()
    member_base, card_base, account_base, transaction_base, issued_account = ids  # type: ignore[misc]
    parameters = {"members": members, "transactions": transactions, "member_base": member_base,
                  "card_base": card_base, "account_base": account_base, "transaction_base": transaction_base,
                  "issued": issued_account, "partner": partner_id, "prefix": CARD_PREFIX}
    connection.execute("SET session_replication_role = replica")
    connection.execute(LUHN_FUNCTION)
    statements = [
        """INSERT INTO members (id, member_number, status, tier, enrolled_at)
           SELECT %(member_base)s + g, 'bench' || lpad(g::text, 12, '0'), 'active', 'standard',
                  now() - interval '400 days'
           FROM generate_series(1, %(members)s) AS g""",
        """INSERT INTO cards (id, member_id, card_number, status, failed_pin_attempts, issued_at)
           SELECT %(card_base)s + g, %(member_base)s + g,
                  %(prefix)s || lpad((%(card_base)s + g)::text, 11, '0')
                      || pg_temp.luhn_digit(%(prefix)s || lpad((%(card_base)s + g)::text, 11, '0')),
                  'active', 0, now() - interval '400 days'
           FROM generate_series(1, %(members)s) AS g""",
        # Transaction t belongs to member ((t - 1) mod members) + 1 and earns 1 + t mod 97 points.
        """INSERT INTO journal_transactions (id, kind, member_id, partner_id, posted_at, price_per_point, currency,
                                             memo)
           SELECT %(transaction_base)s + t, 'earn', %(member_base)s + ((t - 1) %% %(members)s) + 1, %(partner)s,
                  now() - interval '300 days' + (t %% 86400) * interval '1 second', 0.0100, 'EUR', 'bench load'
           FROM generate_series(1, %(transactions)s) AS t""",
        """INSERT INTO journal_entries (transaction_id, account_id, amount_points)
           SELECT %(transaction_base)s + t, account, amount FROM generate_series(1, %(transactions)s) AS t,
           LATERAL (VALUES (%(issued)s, -(1 + t %% 97)),
                           (%(account_base)s + 3 * ((t - 1) %% %(members)s) + 1, 1 + t %% 97))
                   AS line(account, amount)""",
        """INSERT INTO point_lots (member_id, partner_id, funding_account_id, earn_transaction_id, state, points_earned,
                                   points_remaining, earned_at, expires_at)
           SELECT %(member_base)s + ((t - 1) %% %(members)s) + 1, %(partner)s, %(issued)s, %(transaction_base)s + t,
                  'active', 1 + t %% 97, 1 + t %% 97, now() - interval '300 days', now() + interval '400 days'
           FROM generate_series(1, %(transactions)s) AS t""",
        # The trigger would have added every entry to its account: the GROUP BY does it at once.
        """INSERT INTO ledger_accounts (id, code, kind, member_id, balance_points, created_at)
           SELECT %(account_base)s + 3 * (g - 1) + slot, 'member:' || (%(member_base)s + g) || ':' || kind,
                  'member_' || kind, %(member_base)s + g,
                  CASE WHEN slot = 1 THEN coalesce(earned.total, 0) ELSE 0 END, now() - interval '400 days'
           FROM generate_series(1, %(members)s) AS g
           CROSS JOIN (VALUES (1, 'available'), (2, 'pending'), (3, 'held')) AS slots(slot, kind)
           LEFT JOIN (SELECT ((t - 1) %% %(members)s) + 1 AS member, sum(1 + t %% 97) AS total
                      FROM generate_series(1, %(transactions)s) AS t GROUP BY 1) AS earned
             ON earned.member = g AND slot = 1""",
    ]
    for statement in statements:
        connection.execute(statement, parameters)
    for table in ("members", "cards", "ledger_accounts", "journal_transactions", "journal_entries", "point_lots"):
        connection.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    connection.execute("SET session_replication_role = DEFAULT")


def _pin_cards(connection: psycopg.Connection, count: int, members: int,  # type: ignore[type-arg]
               pin_hash: str) -> list[str]:
    """Give ``count`` random cards the benchmark PIN, hashed as ``pin_hash``; returns their numbers."""
    rows = connection.execute(
        "SELECT id, card_number FROM cards TABLESAMPLE BERNOULLI (%s) REPEATABLE (7) LIMIT %s",
        (min(100.0, count * 300.0 / members), count)).fetchall()
    # One hash for all of them: each check still computes the keyed hash in full.
    connection.execute("UPDATE cards SET pin_hash = %s WHERE id = ANY(%s)", (pin_hash, [row[0] for row in rows]))
    return [row[1] for row in rows]


def _in_process(hub, cards: list[str]) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Milliseconds of the balance read alone, and of the keyed PIN check alone."""
    from alliance.services.accounts import member_balances
    from alliance.services.member_verification import active_card_holder, hash_pin, pin_matches

    reads, pin_checks = [], []
    stored = hash_pin(PIN, hub.pin_key_ring)
    with hub.unit_of_work() as uow:
        for card in cards[:500]:
            started = time.perf_counter()
            member_balances(uow.session, active_card_holder(uow.session, card).member_id)
            reads.append((time.perf_counter() - started) * 1000)
    for _ in range(PIN_CHECK_SAMPLES):
        started = time.perf_counter()
        matched = pin_matches(PIN, stored, hub.pin_key_ring)
        pin_checks.append((time.perf_counter() - started) * 1000)
        if not matched:
            raise RuntimeError("the benchmark PIN does not match its own hash")
    return reads, pin_checks


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Build the data set, check it with the audit, then measure the signed balance inquiry."""
    from alliance.services.member_verification import hash_pin
    from partners_sdk.signing import RequestSigner

    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    app, environment = common.migrated_hub(context["postgres"], "bench_balance", artifacts)
    hub = app.extensions["alliance"]
    partner, = common.seed_partners(hub, 1, common.utc_now() - timedelta(days=400))
    url = hub.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(url) as connection:
        _load(connection, partner.partner_id, sizes["members"], sizes["entries"])
        cards = _pin_cards(connection, sizes["pinned"], sizes["members"], hash_pin(PIN, hub.pin_key_ring))
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        # The bulk load leaves gigabytes of dirty pages; flush them now, so the measured
        # minute is the steady state and not a checkpoint's disk traffic after a load.
        connection.execute("CHECKPOINT")
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    audit_green, audit_note = common.run_audit_ok(hub)
    audit_s = time.perf_counter() - started
    reads_ms, pin_check_ms = _in_process(hub, cards)
    signer = RequestSigner(partner.key_id, partner.private_key)
    chooser = random.Random(11)

    def make_requests(count: int, _tag: str) -> list[common.PreparedRequest]:
        return [common.signed_post(signer, "/partner/v1/balance-inquiries",
                                   {"card_number": chooser.choice(cards), "pin": PIN}, f"balance-{uuid.uuid4().hex}")
                for _ in range(count)]

    warm_up_file = artifacts / "balance-warm-up.requests"
    common.write_request_file(warm_up_file, make_requests(WARM_UP_REQUESTS, "warm-up"))
    with common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="balance") as server:
        # As the earn benchmark: every worker opens its connections before the measured run.
        common.run_wrk(server.base_url, warm_up_file, artifacts, duration_s=10, connections=4)
        rate_per_s = common.calibrated_rate(server.base_url, make_requests, artifacts, "balance",
                                            first_count=sizes["min_requests"])
        load = common.sized_load(server.base_url, make_requests, artifacts, "balance", duration_s=sizes["duration_s"],
                                 rate_per_s=rate_per_s, minimum=sizes["min_requests"], connections=LOAD_CONNECTIONS)
    hub.engine.dispose()
    data_note = (f"{sizes['members']:,} members, {sizes['entries']:,} entries; "
                 f"built in {common.decimal_text(build_s, 1)} s "
                 f"(set-based, triggers' effect in bulk), {audit_note} in {common.decimal_text(audit_s, 1)} s")
    return [
        common.figure(BENCHMARK, "signed balance inquiry p99 (HTTP)", load.p99_ms, "ms",
                      target=f"<= {TARGET_P99_MS} ms",
                      met=load.p99_ms <= TARGET_P99_MS and load.refused == 0 and not load.exhausted and audit_green,
                      note=f"p50 {common.decimal_text(load.p50_ms)} ms, {common.decimal_text(load.ok_per_s)} req/s "
                           f"at {LOAD_CONNECTIONS} connections; {load.errors_note()}; {data_note}"),
        common.figure(BENCHMARK, "balance read alone p99 (in process)", common.percentile(reads_ms, 0.99), "ms",
                      note=f"card lookup + member_balances, {len(reads_ms)} random members; "
                           f"p50 {common.decimal_text(common.median(reads_ms))} ms"),
        common.figure(BENCHMARK, "PIN check alone, median", common.median(pin_check_ms), "ms", places=4,
                      note=f"HMAC-SHA256 under ALLIANCE_PIN_KEYS (alliance/domain/pin_hashing.py); "
                           f"p99 {common.decimal_text(common.percentile(pin_check_ms, 0.99), 4)} ms "
                           f"over {len(pin_check_ms)} checks"),
    ]


if __name__ == "__main__":
    common.standalone(run)
