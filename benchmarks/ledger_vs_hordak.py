"""Ledger core against a peer: the same earn-shaped postings through our ledger and through django-hordak 2.

Both run on the run's PostgreSQL, each in its own database, one writer and then four
writer processes (each with its own connection), over 10,000 members of four
partners. One posting is one committed transaction:

- ours: ``alliance.services.ledger.earn`` as purchases use it: the member's accounts
  locked (the overdraft guard's row lock), the partner's price in force looked up, a
  balanced journal transaction, its entries (a trigger keeps the member's stored
  balance, CHECK constraints refuse a negative one, deferred triggers check the sum)
  and a lot with its expiry;
- hordak: ``Account.transfer_to`` inside ``transaction.atomic()``: a Transaction and
  two Legs (its deferred trigger checks they balance), with the two Account objects
  already in memory, which spares hordak the account lookups ours does.

Hot rows: every posting of a partner touches that partner's account. Ours keeps no
stored balance there (docs/design.md, "Hot accounts"); the run checks that those rows
were never rewritten and that only member balance rows were updated.

django-hordak and Django are benchmark-only: installed into the running venv when
missing, never a dependency of the hub.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session

from alliance.config import Settings
from alliance.db import make_engine, make_session_factory
from alliance.services import ledger
from alliance.services.partners import PartnerTerms, create_partner
from benchmarks.core_support import drop_database, figure, fresh_database, run_alone

BENCHMARK = "ledger core vs django-hordak"
HORDAK_REQUIREMENT = "django-hordak>=2,<3"
SIZES = {"full": {"postings": 20_000, "members": 10_000}, "quick": {"postings": 800, "members": 500}}
PARTNERS = 4
WRITER_COUNTS = (1, 4)
NOW = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
EXPIRES_AT = NOW + timedelta(days=730)
OUR_DATABASE = "bench_ledger_ours"
HORDAK_DATABASE = "bench_ledger_hordak"
HORDAK_SETTINGS = "benchmarks.hordak_project.settings"
# Member accounts are opened in bulk by SQL (the services open them one member at a time).
OPEN_MEMBERS = [
    """INSERT INTO members (id, member_number, status, tier, enrolled_at)
       SELECT m, lpad(to_hex(m), 16, '0'), 'active', 'standard', :now FROM generate_series(1, :members) AS m""",
    """INSERT INTO ledger_accounts (code, kind, member_id, balance_points, created_at)
       SELECT 'member' || chr(58) || m || chr(58) || side_name, 'member_' || side_name, m, 0, :now
         FROM generate_series(1, :members) AS m,
              unnest(ARRAY['available', 'pending', 'held']) WITH ORDINALITY AS sides(side_name, side)
        ORDER BY m, side""",
    "SELECT setval(pg_get_serial_sequence('members', 'id'), :members)",
]
ROW_VERSIONS = """SELECT id, ctid::text AS version FROM ledger_accounts WHERE balance_points IS NULL ORDER BY id"""


def postings(count: int, members: int, *, offset: int) -> list[tuple[int, int, int, int]]:
    """(number, member, partner, points) for ``count`` earn-shaped postings spread over members."""
    return [
        (number, 1 + (number * 7919) % members, 1 + number % PARTNERS, 10 + number % 490)
        for number in range(offset, offset + count)
    ]


def ensure_hordak(python: str) -> None:
    """Install django-hordak 2 (and Django) into this venv if it is not there yet."""
    if importlib.util.find_spec("hordak") is None:
        subprocess.run([python, "-m", "pip", "install", "--quiet", HORDAK_REQUIREMENT], check=True)


def prepare_ours(server, members: int) -> str:  # type: ignore[no-untyped-def]
    """A migrated database with four partners and the members' accounts; returns its URL."""
    url = fresh_database(server, OUR_DATABASE)
    engine = make_engine(url, Settings())
    session_factory = make_session_factory(engine)
    terms = PartnerTerms(currency="EUR", time_zone="UTC", settlement_cycle="monthly",
                         issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"),
                         base_points_per_unit=Decimal("1"))
    with session_factory() as session:
        for number in range(1, PARTNERS + 1):
            create_partner(session, code=f"bench-{number}", name=f"Bench {number}", terms=terms,
                           now=NOW - timedelta(days=1))
        for statement in OPEN_MEMBERS:
            session.execute(text(statement), {"members": members, "now": NOW - timedelta(days=1)})
        session.commit()
    engine.dispose()
    return url


Posting = tuple[int, int, int, int]


def _our_writer(url: str, work: list[Posting], barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One writer process: post each earn in its own committed unit of work.

    Like Django's persistent connection on the other side, the writer keeps one
    connection for the run; each posting is still its own session and transaction.
    """
    engine = make_engine(url, Settings())
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.commit()
        barrier.wait()
        started = time.perf_counter()
        for number, member_id, partner_id, points in work:
            with Session(bind=connection) as session:
                ledger.earn(session, member_id=member_id, partner_id=partner_id, points=points, now=NOW,
                            expires_at=EXPIRES_AT, memo=f"receipt bench-{number}")
                session.commit()
        results.put((started, time.perf_counter(), len(work)))
    engine.dispose()


def _hordak_environment(server, database: str) -> None:  # type: ignore[no-untyped-def]
    os.environ.update({"DJANGO_SETTINGS_MODULE": HORDAK_SETTINGS, "BENCH_HORDAK_DATABASE": database,
                       "BENCH_HORDAK_PORT": str(server.port), "BENCH_HORDAK_USER": server.user})


def prepare_hordak(server, members: int) -> None:  # type: ignore[no-untyped-def]
    """A database migrated by hordak, with one account per partner and per member."""
    from benchmarks.core_support import admin_engine

    admin = admin_engine(server)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {HORDAK_DATABASE} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {HORDAK_DATABASE}"))
    admin.dispose()
    # Django is configured once per process, so migrating and opening accounts runs in a child.
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_hordak_prepare_child, args=(server.port, server.user, members))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError("preparing the hordak database failed; see the output above")


def _hordak_prepare_child(port: int, user: str, members: int) -> None:
    os.environ.update({"DJANGO_SETTINGS_MODULE": HORDAK_SETTINGS, "BENCH_HORDAK_DATABASE": HORDAK_DATABASE,
                       "BENCH_HORDAK_PORT": str(port), "BENCH_HORDAK_USER": user})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from hordak.models import Account

    with_accounts = [Account(name=f"partner {number} issued", code=f"P{number}", type="AS", currencies=["EUR"])
                     for number in range(1, PARTNERS + 1)]
    with_accounts += [Account(name=f"member {number}", code=f"{number:06d}"[-6:], type="LI", currencies=["EUR"])
                      for number in range(1, members + 1)]
    # Root accounts, each its own tree; bulk insertion with the tree fields set as
    # django-mptt would set them for a root node.
    for tree_id, account in enumerate(with_accounts, start=1):
        account.tree_id, account.lft, account.rght, account.level = tree_id, 1, 2, 0
    Account.objects.bulk_create(with_accounts, batch_size=2000)


def _hordak_writer(port: int, user: str, work: list[Posting], barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One hordak writer process: each posting a transfer in its own atomic transaction."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": HORDAK_SETTINGS, "BENCH_HORDAK_DATABASE": HORDAK_DATABASE,
                       "BENCH_HORDAK_PORT": str(port), "BENCH_HORDAK_USER": user})
    import django

    django.setup()
    from django.db import transaction
    from hordak.models import Account
    from moneyed import Money

    accounts = {account.name: account for account in Account.objects.all()}
    barrier.wait()
    started = time.perf_counter()
    for number, member_id, partner_id, points in work:
        with transaction.atomic():
            accounts[f"partner {partner_id} issued"].transfer_to(
                accounts[f"member {member_id}"], Money(points, "EUR"), description=f"receipt bench-{number}")
    results.put((started, time.perf_counter(), len(work)))


def measure(target: Callable[..., None], arguments: tuple[object, ...], work: list[Posting], writers: int) -> float:
    """Run ``writers`` processes over interleaved slices of ``work``; returns postings per second."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    results = context.Queue()
    processes = [context.Process(target=target, args=(*arguments, work[index::writers], barrier, results))
                 for index in range(writers)]
    for process in processes:
        process.start()
    finished = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a benchmark writer exited with {process.exitcode}")
    posted = sum(count for _, _, count in finished)
    assert posted == len(work), "every posting was made"
    return posted / (max(end for _, end, _ in finished) - min(start for start, _, _ in finished))


def hot_rows(url: str) -> dict[int, str]:
    """The row version (ctid) of every account without a stored balance: partners' and the hub's."""
    engine = make_engine(url, Settings())
    with engine.connect() as connection:
        versions = dict(connection.execute(text(ROW_VERSIONS)).all())
    engine.dispose()
    return versions


def committed_earns(url: str) -> int:
    """Earn transactions committed in our database so far."""
    engine = make_engine(url, Settings())
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM journal_transactions WHERE kind = 'earn'")).scalar_one()
    engine.dispose()
    return count


def run(context: dict[str, object]) -> list[dict[str, object]]:
    """Ours and hordak at one and four writers, on the same postings."""
    server = context["postgres"]
    sizes = SIZES[str(context["scale"])]
    ensure_hordak(str(context["venv_python"]))
    our_url = prepare_ours(server, sizes["members"])
    prepare_hordak(server, sizes["members"])
    figures = []
    try:
        offset = 0
        for writers in WRITER_COUNTS:
            work = postings(sizes["postings"], sizes["members"], offset=offset)
            offset += len(work)
            versions_before = hot_rows(our_url)
            ours = measure(_our_writer, (our_url,), work, writers)
            versions_after = hot_rows(our_url)
            if committed_earns(our_url) != offset:
                raise AssertionError("not every posting of ours was committed")
            hordak = measure(_hordak_writer, (server.port, server.user), work, writers)
            # An UPDATE writes a new row version (a new ctid); these rows must never get one.
            rewritten = sorted(key for key, version in versions_after.items() if versions_before.get(key) != version)
            if rewritten:
                raise AssertionError(f"accounts without a stored balance were rewritten: {rewritten[:5]}")
            figures.append(figure(
                BENCHMARK, f"earn postings/s, {writers} writer{'s' if writers > 1 else ''}", ours, "postings/s",
                floor="django-hordak 2 transfer_to", floor_value=hordak, ratio=ours / hordak,
                target="faster than django-hordak (ratio > 1)", met=ours > hordak, places=1,
                note=(f"{len(work)} postings over {sizes['members']} members of {PARTNERS} partners, "
                      f"{writers} process(es), each its own connection; partner and hub account rows "
                      f"never rewritten ({len(versions_after)} rows checked)"),
            ))
    finally:
        drop_database(server, OUR_DATABASE)
        drop_database(server, HORDAK_DATABASE)
    return figures


if __name__ == "__main__":
    run_alone(run, __doc__.splitlines()[0])
