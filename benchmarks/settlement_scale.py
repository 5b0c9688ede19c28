"""Settlement at scale: closing every cycle over 1M, 3M and 10M ledger entries, against a raw GROUP BY.

Each size gets its own fresh database with 1,000 partners (monthly cycles in UTC, a
price change mid-month) and 100,000 members, and one month of activity built by
set-based SQL: blocks of three earns and one redemption (hold, then a full capture),
ten journal entries per block, with the lots, the hold and its lot consumption. The
rows are inserted with triggers off (``session_replication_role = replica``); what the
triggers would have maintained (member balances, lot remainders) is derived in the
same statements, and ``alliance audit`` must be green on the result.

Then, side by side on the same rows: the real closer (``close_due_cycles``: lock,
aggregate, build, render, sign twice and store each statement, a few cycles per
commit) and the floor, one raw ``GROUP BY`` per partner, kind and price. The closer's
lines must equal the floor's aggregates, or the run fails.

The floor is measured in the closer's cache state: one untimed ``GROUP BY`` warms the
cache, then floor, closer, floor run back to back, and the ratio is taken against the
faster of the two bracketing floors (both are printed). A floor timed alone right
after the build, as this module once did, ran in whatever state the build and
``VACUUM ANALYZE`` left (at 10M once 1.5 s per million entries against 0.6 at 1M and 3M),
and its slowness flattered the ratio. ``EXPLAIN (ANALYZE, BUFFERS)`` of the floor after
the closer says how much of it came from PostgreSQL's buffers and how much was read.
Target: the closer within 1.5x the floor at every size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from alliance.config import Settings
from alliance.db import make_engine, make_session_factory
from alliance.services.audit import run_audit
from benchmarks.core_support import decimal_text, drop_database, figure, fresh_database, run_alone
from settlement.closing import close_due_cycles
from settlement.keys import StatementSigner, statement_key_id
from tests.postgres_server import PostgresServer

BENCHMARK = "settlement"
UTC = timezone.utc
MONTH_STARTS_AT = datetime(2026, 10, 1, tzinfo=UTC)
PRICE_CHANGES_AT = datetime(2026, 10, 16, tzinfo=UTC)
MONTH_ENDS_AT = datetime(2026, 11, 1, tzinfo=UTC)
# Closing waits five minutes past a cut-off; an hour later every October cycle is due.
CLOSING_AT = MONTH_ENDS_AT + timedelta(hours=1)
ENTRIES_PER_BLOCK = 10
SETTLING_KINDS = ("earn", "clawback", "capture", "redemption_refund")
SIZES = {
    "full": {"partners": 1000, "members": 100_000, "entries": (1_000_000, 3_000_000, 10_000_000)},
    "quick": {"partners": 40, "members": 2_000, "entries": (10_000, 30_000, 100_000)},
}
# ``BENCH_SETTLEMENT_ENTRIES=1000000`` (comma-separated) runs only those sizes of the scale, to iterate on one.
SIZES_VARIABLE = "BENCH_SETTLEMENT_ENTRIES"
RATIO_TARGET = Decimal("1.5")
# Linear growth: seconds per million entries may not rise by more than this between sizes.
GROWTH_TOLERANCE = Decimal("1.25")

BUILD_REFERENCE_DATA = [
    # Partner p owns accounts 2p+2 (issued) and 2p+3 (redeemed); the hub's three come first.
    """INSERT INTO partners (id, code, name, status, currency, time_zone, settlement_cycle, settlement_cutoff_local,
                             return_window_days, created_at, cycle_fee_minor)
       SELECT p, 'bench-' || p, 'Bench partner ' || p, 'active', 'EUR', 'UTC', 'monthly', '00:00', 0,
              :month_starts_at, 0
         FROM generate_series(1, :partners) AS p""",
    """INSERT INTO ledger_accounts (id, code, kind, partner_id, balance_points, created_at)
       SELECT 2 * p + 2 + side, 'partner:' || p || CASE side WHEN 0 THEN '\\:issued' ELSE '\\:redeemed' END,
              CASE side WHEN 0 THEN 'partner_issued' ELSE 'partner_redeemed' END, p, NULL, :month_starts_at
         FROM generate_series(1, :partners) AS p, generate_series(0, 1) AS side""",
    # Two prices per partner: one from the start of the month, one from the 16th.
    """INSERT INTO partner_prices (partner_id, effective_from, issue_price_per_point, redemption_price_per_point)
       SELECT p, CASE half WHEN 0 THEN CAST(:month_starts_at AS timestamptz) ELSE :price_changes_at END,
              0.0100 + (p % 50) * 0.0001 + half * 0.0005, 0.0080 + (p % 40) * 0.0001 + half * 0.0003
         FROM generate_series(1, :partners) AS p, generate_series(0, 1) AS half""",
    """INSERT INTO partner_earn_rules (partner_id, effective_from, base_points_per_unit, amount_ladder)
       SELECT p, :month_starts_at, 1, '[]' FROM generate_series(1, :partners) AS p""",
    """INSERT INTO members (id, member_number, status, tier, enrolled_at)
       SELECT m, lpad(to_hex(m), 16, '0'), 'active', 'standard', :month_starts_at
         FROM generate_series(1, :members) AS m""",
]

# One row per block b: who, where, when, and how many points. Everything below derives
# its ids from b, so each table is one INSERT … SELECT with no joins.
BLOCKS = """
CREATE TEMPORARY VIEW bench_blocks AS
SELECT b,
       1 + mod(b, :members) AS member_id,
       3 + 2 * :partners + 3 * (1 + mod(b, :members)) - 2 AS available_id,
       3 + 2 * :partners + 3 * (1 + mod(b, :members)) AS held_id,
       1 + mod(b * 7 + 13, :partners) AS redeemer_id,
       CAST(:month_starts_at AS timestamptz) + make_interval(secs => b * (2592000.0 / :blocks)) AS posted_at,
       CAST((20 + mod(b * 31, 480)) / 2 AS bigint) AS redeemed_points
  FROM generate_series(0, :blocks - 1) AS b
"""
EARNS = """
CREATE TEMPORARY VIEW bench_earns AS
SELECT k.*, j, 3 * b + j + 1 AS lot_id, 5 * b + j + 1 AS transaction_id,
       1 + mod(b * 3 + j, :partners) AS partner_id, 2 * (1 + mod(b * 3 + j, :partners)) + 2 AS issued_id,
       CAST(20 + mod(b * 31 + j * 17, 480) AS bigint) AS points
  FROM bench_blocks AS k, generate_series(0, 2) AS j
"""
# The price in force at posting: each partner's first price until the 16th, its second after.
PRICE_JOIN = """JOIN partner_prices AS price ON price.partner_id = {partner}
     AND price.effective_from = CASE WHEN posted_at < :price_changes_at THEN CAST(:month_starts_at AS timestamptz)
                                     ELSE :price_changes_at END"""
BUILD_LEDGER = [
    f"""INSERT INTO journal_transactions (id, kind, member_id, partner_id, posted_at, price_per_point, currency, memo)
        SELECT transaction_id, 'earn', member_id, bench_earns.partner_id, posted_at, price.issue_price_per_point,
               'EUR', 'receipt bench-' || transaction_id
          FROM bench_earns {PRICE_JOIN.format(partner='bench_earns.partner_id')}""",
    """INSERT INTO redemption_holds (id, member_id, partner_id, status, points_held, points_captured, points_refunded,
                                     created_at, expires_at, closed_at, reference)
       SELECT b + 1, member_id, redeemer_id, 'captured', redeemed_points, redeemed_points, 0,
              posted_at + interval '1 second', posted_at + interval '901 seconds', posted_at + interval '2 seconds',
              'bench-' || b
         FROM bench_blocks""",
    f"""INSERT INTO journal_transactions (id, kind, member_id, partner_id, posted_at, price_per_point, currency,
                                          hold_id)
        SELECT 5 * b + 4 + step, CASE step WHEN 0 THEN 'hold' ELSE 'capture' END, member_id, redeemer_id,
               posted_at + step * interval '1 second' + interval '1 second',
               CASE step WHEN 0 THEN NULL ELSE price.redemption_price_per_point END,
               CASE step WHEN 0 THEN NULL ELSE 'EUR' END, b + 1
          FROM bench_blocks {PRICE_JOIN.format(partner='redeemer_id')}, generate_series(0, 1) AS step""",
    """INSERT INTO journal_entries (id, transaction_id, account_id, amount_points)
       SELECT 10 * b + 2 * j + 1 + side, transaction_id,
              CASE side WHEN 0 THEN issued_id ELSE available_id END, CASE side WHEN 0 THEN -points ELSE points END
         FROM bench_earns, generate_series(0, 1) AS side""",
    # The hold moves points from available to held; the capture from held to the redeemer.
    """INSERT INTO journal_entries (id, transaction_id, account_id, amount_points)
       SELECT 10 * b + 7 + 2 * step + side, 5 * b + 4 + step,
              CASE WHEN step = 0 AND side = 0 THEN available_id
                   WHEN step = 0 THEN held_id
                   WHEN side = 0 THEN held_id
                   ELSE 2 * redeemer_id + 3 END,
              CASE side WHEN 0 THEN -redeemed_points ELSE redeemed_points END
         FROM bench_blocks, generate_series(0, 1) AS step, generate_series(0, 1) AS side""",
    # The hold takes its points from the block's first lot, which has the soonest expiry.
    """INSERT INTO point_lots (id, member_id, partner_id, funding_account_id, earn_transaction_id, state,
                               points_earned, points_remaining, earned_at, activates_at, expires_at)
       SELECT lot_id, member_id, partner_id, issued_id, transaction_id, 'active', points,
              points - CASE j WHEN 0 THEN redeemed_points ELSE 0 END, posted_at, NULL,
              posted_at + interval '24 months'
         FROM bench_earns""",
    """INSERT INTO lot_consumptions (id, lot_id, transaction_id, member_id, hold_id, points)
       SELECT b + 1, 3 * b + 1, 5 * b + 4, member_id, b + 1, redeemed_points FROM bench_blocks""",
    # Member m owns accounts base + 3m - 2 (available), base + 3m - 1 (pending), base + 3m (held),
    # opened here with what trg_journal_entries_apply would have kept: the sum of their entries.
    """INSERT INTO ledger_accounts (id, code, kind, member_id, balance_points, created_at)
       SELECT accounts.id, 'member:' || m || CASE side WHEN 0 THEN '\\:available' WHEN 1 THEN '\\:pending'
                                                       ELSE '\\:held' END,
              CASE side WHEN 0 THEN 'member_available' WHEN 1 THEN 'member_pending' ELSE 'member_held' END,
              m, coalesce(totals.points, 0), :month_starts_at
         FROM (SELECT m, side, 3 + 2 * :partners + 3 * m - 2 + side AS id
                 FROM generate_series(1, :members) AS m, generate_series(0, 2) AS side) AS accounts
         LEFT JOIN (SELECT account_id, sum(amount_points) AS points FROM journal_entries
                     WHERE account_id > 3 + 2 * :partners GROUP BY account_id) AS totals
           ON totals.account_id = accounts.id""",
]
LOADED_TABLES = ("journal_transactions", "journal_entries", "point_lots", "lot_consumptions", "redemption_holds")
# Indexes that back no constraint are dropped before the load and created again after
# it from their own definitions: one sort per index instead of millions of inserts.
SECONDARY_INDEXES = """
SELECT index_class.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index AS i
  JOIN pg_class AS index_class ON index_class.oid = i.indexrelid
  JOIN pg_class AS table_class ON table_class.oid = i.indrelid
 WHERE table_class.relname IN ('journal_transactions', 'journal_entries', 'point_lots', 'lot_consumptions',
                               'redemption_holds')
   AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
 ORDER BY index_class.relname
"""
SEQUENCES = ("partners", "ledger_accounts", "partner_prices", "partner_earn_rules", "members", "journal_transactions",
             "journal_entries", "point_lots", "lot_consumptions", "redemption_holds")
ANALYZED = ("partners", "ledger_accounts", "partner_prices", "members", "journal_transactions", "journal_entries",
            "point_lots", "lot_consumptions", "redemption_holds")

# The floor: the aggregate the closer fundamentally needs, for every partner at once.
FLOOR_GROUP_BY = """
SELECT t.partner_id, t.kind, t.price_per_point, t.currency,
       sum(e.amount_points) AS signed_points, count(*) AS postings
  FROM journal_transactions AS t
  JOIN journal_entries AS e ON e.transaction_id = t.id
  JOIN ledger_accounts AS a ON a.id = e.account_id
 WHERE a.kind IN ('partner_issued', 'partner_redeemed') AND a.partner_id = t.partner_id
   AND t.kind IN ('earn', 'clawback', 'capture', 'redemption_refund')
   AND t.posted_at >= :starts_at AND t.posted_at < :ends_at
 GROUP BY t.partner_id, t.kind, t.price_per_point, t.currency
"""
CLOSED_LINES = """
SELECT s.partner_id, l.line_kind, l.price_per_point, l.points, l.count
  FROM statement_lines AS l JOIN statements AS s ON s.id = l.statement_id
 WHERE l.line_kind IN ('points_issued', 'points_redeemed')
"""


def build(engine: Engine, *, partners: int, members: int, entries: int) -> None:
    """Fill an empty migrated database with ``entries`` journal entries of consistent activity."""
    assert entries % ENTRIES_PER_BLOCK == 0, "the data set is built in blocks of ten entries"
    parameters = {"partners": partners, "members": members, "blocks": entries // ENTRIES_PER_BLOCK,
                  "month_starts_at": MONTH_STARTS_AT, "price_changes_at": PRICE_CHANGES_AT}
    with engine.begin() as connection:
        # Replica mode skips triggers (and so foreign-key checks) for this transaction only.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("SET LOCAL work_mem = '256MB'"))
        connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        for statement in BUILD_REFERENCE_DATA:
            connection.execute(text(statement), parameters)
        for view in (BLOCKS, EARNS):
            connection.exec_driver_sql(_inline(view, parameters))
        indexes = connection.execute(text(SECONDARY_INDEXES)).all()
        for index in indexes:
            connection.exec_driver_sql(f"DROP INDEX {index.name}")
        for statement in BUILD_LEDGER:
            connection.execute(text(statement), parameters)
        for index in indexes:
            connection.exec_driver_sql(index.definition)
        assert connection.execute(text(SECONDARY_INDEXES)).all() == indexes, "every index is back as it was"
        for table in SEQUENCES:
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        connection.exec_driver_sql("DROP VIEW bench_earns, bench_blocks")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"VACUUM ANALYZE {', '.join(ANALYZED)}")


def _inline(view: str, parameters: dict[str, object]) -> str:
    """A view's SQL with its integer and timestamp parameters written in (views take no binds)."""
    for name, value in parameters.items():
        rendered = f"'{value.isoformat()}'" if isinstance(value, datetime) else str(int(str(value)))
        view = view.replace(f":{name}", rendered)
    return view


def floor_group_by(engine: Engine) -> tuple[float, list]:  # type: ignore[type-arg]
    """Run the raw aggregate over the month; returns seconds and its rows."""
    with engine.connect() as connection:
        started = time.perf_counter()
        rows = connection.execute(text(FLOOR_GROUP_BY), {"starts_at": MONTH_STARTS_AT, "ends_at": MONTH_ENDS_AT}).all()
        return time.perf_counter() - started, rows


def explain_floor(engine: Engine) -> tuple[float, int, int]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the floor: execution ms, shared blocks found in the buffers and read."""
    with engine.connect() as connection:
        [plan] = connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {FLOOR_GROUP_BY}"),
                                    {"starts_at": MONTH_STARTS_AT, "ends_at": MONTH_ENDS_AT}).scalar_one()
    return plan["Execution Time"], plan["Plan"]["Shared Hit Blocks"], plan["Plan"]["Shared Read Blocks"]


def close_every_cycle(engine: Engine, partners: int) -> tuple[float, int]:
    """Close every due cycle with the real closer and a fresh statement key; returns seconds and cycles."""
    key = Ed25519PrivateKey.generate()
    signer = StatementSigner(signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
    started = time.perf_counter()
    closed = close_due_cycles(make_session_factory(engine), now=CLOSING_AT, signer=signer, limit=partners)
    return time.perf_counter() - started, len(closed)


def check_lines_match(engine: Engine, floor_rows: list) -> None:  # type: ignore[type-arg]
    """The closer's statement lines must carry exactly the floor's points and counts."""
    expected = {}
    for row in floor_rows:
        line_kind = {"earn": "points_issued", "capture": "points_redeemed"}[row.kind]
        sign = -1 if row.kind == "earn" else 1
        expected[(row.partner_id, line_kind, Decimal(row.price_per_point))] = (sign * row.signed_points, row.postings)
    with engine.connect() as connection:
        closed = {(row.partner_id, row.line_kind, Decimal(row.price_per_point)): (row.points, row.count)
                  for row in connection.execute(text(CLOSED_LINES))}
    if closed != expected:
        differing = sorted(set(closed.items()) ^ set(expected.items()))[:3]
        raise AssertionError(f"the closer's lines differ from the raw GROUP BY, for example {differing}")


def audit_is_green(engine: Engine) -> tuple[bool, str, float]:
    """Run ``alliance audit``'s checks; returns green, the first problem, and seconds taken."""
    started = time.perf_counter()
    with make_session_factory(engine)() as session:
        report = run_audit(session)
    failure = report.first_failure
    return report.ok, ("" if failure is None else f"{failure.name}: {failure.first_problem}"), \
        time.perf_counter() - started


@dataclass(frozen=True)
class SizeResult:
    """What one size measured."""

    entries: int
    build_s: float
    floor_before_s: float
    closer_s: float
    floor_after_s: float
    cycles: int
    audit_s: float
    floor_plan: tuple[float, int, int]

    @property
    def floor_s(self) -> float:
        """The faster of the floors run just before and just after the closer."""
        return min(self.floor_before_s, self.floor_after_s)

    @property
    def label(self) -> str:
        """The size in millions of entries, for example ``10M``."""
        return f"{Decimal(self.entries) / 1_000_000:g}M"

    def per_million(self, seconds: float) -> Decimal:
        """Seconds per million entries at this size."""
        return Decimal(str(seconds)) * 1_000_000 / self.entries


def measure_size(server: PostgresServer, *, partners: int, members: int, entries: int) -> SizeResult:
    """Build one size in its own database, time floor and closer, check them and the audit, drop it."""
    name = f"bench_settlement_{entries}"
    engine = make_engine(fresh_database(server, name), Settings())
    try:
        started = time.perf_counter()
        build(engine, partners=partners, members=members, entries=entries)
        build_s = time.perf_counter() - started
        floor_group_by(engine)  # warm the cache, so neither side pays for the first read
        # The closer between two floors: all three run in the same cache state.
        floor_before_s, floor_rows = floor_group_by(engine)
        closer_s, cycles = close_every_cycle(engine, partners)
        floor_after_s, _ = floor_group_by(engine)
        floor_plan = explain_floor(engine)
        check_lines_match(engine, floor_rows)
        green, problem, audit_s = audit_is_green(engine)
        if not green:
            raise AssertionError(f"alliance audit is red on the {entries}-entry data set: {problem}")
        return SizeResult(entries=entries, build_s=build_s, floor_before_s=floor_before_s, closer_s=closer_s,
                          floor_after_s=floor_after_s, cycles=cycles, audit_s=audit_s, floor_plan=floor_plan)
    finally:
        engine.dispose()
        drop_database(server, name)


def run(context: dict[str, object]) -> list[dict[str, object]]:
    """Every size, closer against floor, and the growth across sizes."""
    sizes = SIZES[str(context["scale"])]
    server = context["postgres"]
    assert isinstance(server, PostgresServer)
    chosen = os.environ.get(SIZES_VARIABLE)
    entries_list = [int(value) for value in chosen.split(",")] if chosen else list(sizes["entries"])
    results = [measure_size(server, partners=sizes["partners"], members=sizes["members"], entries=entries)
               for entries in entries_list]
    figures = [_size_figure(result, sizes["partners"]) for result in results]
    figures.append(_growth_figure(results))
    return figures


def _size_figure(result: SizeResult, partners: int) -> dict[str, object]:
    ratio = result.closer_s / result.floor_s
    execution_ms, hit, read = result.floor_plan
    note = (f"{result.cycles} monthly cycles of {partners} partners closed and signed; "
            f"floor {decimal_text(result.floor_before_s)} s before the closer, "
            f"{decimal_text(result.floor_after_s)} s after; "
            f"EXPLAIN (ANALYZE, BUFFERS) of the floor after: {decimal_text(execution_ms, 1)} ms, "
            f"shared buffers hit {hit}, read {read}; "
            f"data set built in {decimal_text(result.build_s, 1)} s; "
            f"alliance audit green in {decimal_text(result.audit_s, 1)} s")
    return figure(
        BENCHMARK, f"close every cycle, {result.label} entries", result.closer_s, "s",
        floor="raw GROUP BY per partner, kind, price (faster of the two around the closer)",
        floor_value=result.floor_s, ratio=ratio, target=f"<= {RATIO_TARGET}x GROUP BY",
        met=Decimal(str(ratio)) <= RATIO_TARGET, note=note,
    )


def _growth_figure(results: list[SizeResult]) -> dict[str, object]:
    per_million = [result.per_million(result.closer_s) for result in results]
    # Consecutive sizes: per_million[1:] is one shorter.
    linear = all(later <= earlier * GROWTH_TOLERANCE
                 for earlier, later in zip(per_million, per_million[1:], strict=False))
    closer_steps = ", ".join(f"{result.label}: {decimal_text(value)} s/M"
                             for result, value in zip(results, per_million, strict=True))
    floor_steps = ", ".join(f"{result.label}: {decimal_text(result.per_million(result.floor_s))} s/M"
                            for result in results)
    return figure(
        BENCHMARK, "closer seconds per million entries (growth)", per_million[-1], "s/M entries",
        target=f"linear: s/M never rises more than {GROWTH_TOLERANCE}x from one size to the next", met=linear,
        note=f"closer {closer_steps}; GROUP BY {floor_steps}",
    )


if __name__ == "__main__":
    run_alone(run, __doc__.splitlines()[0])
