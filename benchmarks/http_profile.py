"""Profile the signed earn path in process: pyinstrument over N purchase reports, and the SQL they send.

``python -m benchmarks.http_profile [N]`` starts its own durable PostgreSQL, sends N
signed purchase reports through the hub's WSGI app (Flask's test client: the whole
request path, without the socket), prints pyinstrument's call tree, and counts the
SQL statements per request (as psycopg sends them; the COMMIT is not among them). Not
part of ``make bench``; a tool for the work of reaching the targets.
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
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for item in requests[20:20 + half]:
            client.post(item.path, data=item.body, headers=item.headers)
        cpu_ms = (time.process_time() - cpu_started) / half * 1000
        wall_ms = (time.perf_counter() - wall_started) / half * 1000
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
        hub.engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
