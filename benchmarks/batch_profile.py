"""Profile the signed batch ingest in process: pyinstrument over N batches of 1,000, and the SQL they send.

``python -m benchmarks.batch_profile [N]`` starts its own durable PostgreSQL, seeds the
partner and members ``batch_ingest`` seeds, sends signed batches of 1,000 purchases
through the hub's WSGI app (Flask's test client: the whole request path, without the
socket), and prints per batch: wall and CPU time of this process, the time spent in
psycopg's calls (PostgreSQL's share, the round trips and the driver's own work), each
statement sent with its share of that time, then
pyinstrument's call tree. Two warm-up batches are sent first. Not part of ``make bench``;
a tool for the work of reaching the targets.
"""

from __future__ import annotations

import collections
import sys
import time
from datetime import timedelta

import psycopg

from benchmarks import common
from benchmarks.batch_ingest import PATH, _batches

WARM_UP = 2


def main(count: int) -> None:
    """Profile ``count`` signed batches and print where the time goes."""
    from pyinstrument import Profiler

    from tests.postgres_server import start_postgres

    artifacts = common.ARTIFACTS / "profile"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    try:
        app, _ = common.migrated_hub(server, "bench_batch_profile", artifacts)
        hub = app.extensions["alliance"]
        seeded_at = common.utc_now() - timedelta(hours=1)
        partner, = common.seed_partners(hub, 1, seeded_at)
        members = common.seed_members(hub, 5000, seeded_at)
        batches = _batches(partner, members, {"batches": 2 * count + WARM_UP, "batch_size": 1000})
        client = app.test_client()
        statements: collections.Counter[str] = collections.Counter()
        statement_seconds: collections.Counter[str] = collections.Counter()
        waited = [0.0]
        # Counted at psycopg, below SQLAlchemy (the hub sends its hottest statements through psycopg directly).
        execute = psycopg.Cursor.execute

        def _count(cursor, query, *args, **kwargs):  # type: ignore[no-untyped-def]
            text = query if isinstance(query, str) else query.decode() if isinstance(query, bytes) else str(query)
            shown = " ".join(text.split())[:100]
            statements[shown] += 1
            started = time.perf_counter()
            try:
                return execute(cursor, query, *args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                waited[0] += spent
                statement_seconds[shown] += spent

        psycopg.Cursor.execute = _count  # type: ignore[method-assign]

        def send(batch: common.PreparedRequest) -> None:
            reply = client.post(PATH, data=batch.body, headers=batch.headers)
            if reply.status_code != 200 or reply.get_json()["rejected"]:
                raise RuntimeError(f"{reply.status_code} {reply.get_data(as_text=True)[:300]}")

        for batch in batches[:WARM_UP]:
            send(batch)
        statements.clear()
        statement_seconds.clear()
        waited[0] = 0.0
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for batch in batches[WARM_UP:WARM_UP + count]:
            send(batch)
        cpu_ms = (time.process_time() - cpu_started) / count * 1000
        wall_ms = (time.perf_counter() - wall_started) / count * 1000
        print(f"without the profiler, per batch of 1,000: {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU of this "
              f"process, {waited[0] / count * 1000:.1f} ms in psycopg's execute (server time and round trips)")
        print(f"SQL statements per batch: {sum(statements.values()) / count:.1f}")
        print("per batch: times sent, ms in psycopg's execute, statement")
        for statement, seen in statements.most_common(40):
            print(f"{seen / count:6.2f} {statement_seconds[statement] / count * 1000:7.1f}  {statement}")
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for batch in batches[WARM_UP + count:]:
            send(batch)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        hub.engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
