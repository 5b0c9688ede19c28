"""Profile the signed earn path in process: pyinstrument over N purchase reports, and the SQL they send.

``python -m benchmarks.http_profile [N]`` starts its own durable PostgreSQL, sends N
signed purchase reports through the hub's WSGI app (Flask's test client: the whole
request path, without the socket), prints pyinstrument's call tree, and counts the
SQL statements per request (as psycopg sends them; the COMMIT is not among them), and
what each earn writes: rows inserted, updated (and of those, HOT: no index touched) and
deleted per table with the indexes each row maintains, and the WAL bytes, from
PostgreSQL's own statistics over the unprofiled half of the run. Not part of ``make
bench``; a tool for the work of reaching the targets.
"""

from __future__ import annotations

import collections
import sys
import time

import psycopg

from benchmarks import common
from benchmarks.http_earn import _purchases


def main(count: int) -> None:
    """Profile ``count`` signed earns and print where the time goes."""
    from pyinstrument import Profiler

    from tests.postgres_server import start_postgres

    artifacts = common.ARTIFACTS / "profile"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    try:
        app, _, hub, partners, members = common.earning_hub(server, "bench_profile", artifacts, partners=2, members=200)
        requests = _purchases(partners, members, count + 20, "profile")
        client = app.test_client()
        statements: collections.Counter[str] = collections.Counter()
        # Counted at psycopg, below SQLAlchemy: the hub sends its hottest statements
        # through psycopg directly (alliance.db.DriverStatement), out of SQLAlchemy's events.
        execute = psycopg.Cursor.execute

        def _count(cursor, query, *args, **kwargs):  # type: ignore[no-untyped-def]
            text = query if isinstance(query, str) else query.decode() if isinstance(query, bytes) else str(query)
            statements[" ".join(text.split())[:110]] += 1
            return execute(cursor, query, *args, **kwargs)

        psycopg.Cursor.execute = _count  # type: ignore[method-assign]

        for item in requests[:20]:
            client.post(item.path, data=item.body, headers=item.headers)
        half = count // 2
        hub.engine.dispose()  # a backend flushes its statistics when it exits
        before = _writes(server.url("bench_profile"))
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for item in requests[20:20 + half]:
            client.post(item.path, data=item.body, headers=item.headers)
        cpu_ms = (time.process_time() - cpu_started) / half * 1000
        wall_ms = (time.perf_counter() - wall_started) / half * 1000
        hub.engine.dispose()
        written = _writes(server.url("bench_profile")).since(before, half)
        requests = requests[half:]
        statements.clear()
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        profiler.start()
        for item in requests[20:]:
            reply = client.post(item.path, data=item.body, headers=item.headers)
            if reply.status_code != 201:
                raise RuntimeError(f"{reply.status_code} {reply.get_data(as_text=True)[:300]}")
        profiler.stop()
        elapsed = time.perf_counter() - started
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        count = len(requests) - 20
        print(f"{count} earns in {elapsed:.2f} s: {elapsed / count * 1000:.2f} ms each, sequential, in process")
        print(f"without the profiler: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU of this process per earn")
        print(f"SQL statements per earn: {sum(statements.values()) / count:.1f}")
        for statement, seen in statements.most_common(40):
            print(f"{seen / count:5.2f}  {statement}")
        print(written)
        hub.engine.dispose()
    finally:
        server.stop()


class Writes:
    """PostgreSQL's counters of what was written: WAL position and rows per table, with each table's indexes."""

    def __init__(self, wal_lsn: str, rows: dict[str, tuple[int, int, int, int]], indexes: dict[str, int]) -> None:
        self.wal_lsn, self.rows, self.indexes = wal_lsn, rows, indexes
        self.per_earn: dict[str, tuple[float, float, float, float]] = {}
        self.wal_bytes_per_earn = 0.0

    def since(self, before: "Writes", earns: int) -> "Writes":
        """The difference from ``before``, per earn."""
        for table, counts in self.rows.items():
            old = before.rows.get(table, (0, 0, 0, 0))
            delta = tuple((new - was) / earns for new, was in zip(counts, old, strict=True))
            if any(delta):
                self.per_earn[table] = delta  # type: ignore[assignment]
        self.wal_bytes_per_earn = _wal_bytes(self.wal_lsn, before.wal_lsn) / earns
        return self

    def __str__(self) -> str:
        lines = [f"written per earn: {self.wal_bytes_per_earn:,.0f} WAL bytes",
                 "  inserted  updated   (HOT)  deleted  indexes  table"]
        for table, (inserted, updated, hot, deleted) in sorted(self.per_earn.items()):
            lines.append(f"  {inserted:8.2f} {updated:8.2f} {hot:7.2f} {deleted:8.2f} {self.indexes.get(table, 0):8d}"
                         f"  {table}")
        index_writes = sum((inserted + updated - hot) * self.indexes.get(table, 0)
                           for table, (inserted, updated, hot, _) in self.per_earn.items())
        lines.append(f"  rows written {sum(row[0] + row[1] + row[3] for row in self.per_earn.values()):.2f}, "
                     f"index entries written {index_writes:.2f} per earn")
        return "\n".join(lines)


def _wal_bytes(later: str, earlier: str) -> int:
    def position(lsn: str) -> int:
        high, low = lsn.split("/")
        return (int(high, 16) << 32) + int(low, 16)
    return position(later) - position(earlier)


def _writes(url: str) -> Writes:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        time.sleep(0.5)  # exited backends' statistics reach the shared counters
        rows = {name: (inserted, updated, hot, deleted) for name, inserted, updated, hot, deleted in connection.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables")}
        indexes = dict(connection.execute(
            "SELECT table_class.relname, count(*) FROM pg_index JOIN pg_class table_class "
            "ON table_class.oid = pg_index.indrelid GROUP BY table_class.relname").fetchall())
        wal_lsn = str(connection.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]
    return Writes(wal_lsn, rows, indexes)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
