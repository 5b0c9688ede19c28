"""Staff people: every back-office client and console login belongs to one person.

Why: a security review found that the four-eyes rule on adjustments compared actors
(``client:<id>``, ``console:<username>``), so one person holding a back-office client and
a console login could request an adjustment with one and approve it with the other.
Four eyes means two people: ``staff_people`` names them, and ``oauth_clients.person_id``
and ``staff_users.person_id`` say whose each credential is, for good, so the rule can
compare the people behind two actors.

On upgrade every existing console login becomes a person of its own (handle = its
username, name = its display name) and so does every existing client (handle
``client-<client id>``, name = the client's name): nobody is merged by guesswork. Where
one human held both, revoke the old client and create a new one with ``--person``.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import re
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from alliance.models.base import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Each credential table, and the table whose rows point at it.
CREDENTIAL_TABLES = {"staff_users": "staff_sessions", "oauth_clients": "oauth_tokens"}

people = sa.table("staff_people", sa.column("id"), sa.column("handle"), sa.column("name"),
                  sa.column("created_at", UTCDateTime()))


@contextmanager
def _altered(table: str) -> Iterator[BatchOperations]:
    """Batch operations on a credential table, with the rows pointing at it set aside on SQLite.

    PostgreSQL alters the table in place. SQLite rebuilds it to add a foreign key or a
    NOT NULL, and dropping the old table would break the foreign key of the rows that
    point at it (sessions, tokens): they wait in a temporary table meanwhile and come
    back unchanged, ids and all.
    """
    child = CREDENTIAL_TABLES[table]
    on_sqlite = op.get_bind().dialect.name == "sqlite"
    if on_sqlite:
        op.execute(f"CREATE TEMPORARY TABLE {child}_kept AS SELECT * FROM {child}")
        op.execute(f"DELETE FROM {child}")
    with op.batch_alter_table(table) as batch:
        yield batch
    if on_sqlite:
        op.execute(f"INSERT INTO {child} SELECT * FROM {child}_kept")
        op.execute(f"DROP TABLE {child}_kept")


def _new_person(bind: sa.Connection, wanted: str, name: str, created_at: object) -> int:
    """A person for one existing credential, under the wanted handle or, if that is taken, a numbered one."""
    base = re.sub(r"[^a-z0-9._-]", "-", wanted.lower())[:64]
    handle, number = base, 1
    while bind.execute(sa.select(people.c.id).where(people.c.handle == handle)).first() is not None:
        number += 1
        handle = f"{base[:56]}-{number}"
    return bind.execute(sa.insert(people).values(handle=handle, name=name[:200] or handle, created_at=created_at)
                        .returning(people.c.id)).scalar_one()


def _give_everyone_a_person() -> None:
    bind = op.get_bind()
    users = sa.table("staff_users", sa.column("id"), sa.column("username"), sa.column("display_name"),
                     sa.column("created_at", UTCDateTime()), sa.column("person_id"))
    clients = sa.table("oauth_clients", sa.column("id"), sa.column("client_id"), sa.column("name"),
                       sa.column("created_at", UTCDateTime()), sa.column("person_id"))
    for user_id, username, display_name, created_at in bind.execute(
            sa.select(users.c.id, users.c.username, users.c.display_name, users.c.created_at)
            .order_by(users.c.id)).all():
        person_id = _new_person(bind, username, display_name, created_at)
        bind.execute(sa.update(users).where(users.c.id == user_id).values(person_id=person_id))
    for row_id, client_id, name, created_at in bind.execute(
            sa.select(clients.c.id, clients.c.client_id, clients.c.name, clients.c.created_at)
            .order_by(clients.c.id)).all():
        person_id = _new_person(bind, f"client-{client_id}", name, created_at)
        bind.execute(sa.update(clients).where(clients.c.id == row_id).values(person_id=person_id))


def upgrade() -> None:
    op.create_table(
        "staff_people",
        sa.Column("id", ID_TYPE, nullable=False),
        sa.Column("handle", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_people")),
        sa.UniqueConstraint("handle", name=op.f("uq_staff_people_handle")),
    )
    for table in CREDENTIAL_TABLES:
        op.add_column(table, sa.Column("person_id", ID_TYPE, nullable=True))
    _give_everyone_a_person()
    for table in CREDENTIAL_TABLES:
        with _altered(table) as batch:
            batch.alter_column("person_id", existing_type=ID_TYPE, nullable=False)
            batch.create_foreign_key(op.f(f"fk_{table}_person_id_staff_people"), "staff_people", ["person_id"], ["id"])


def downgrade() -> None:
    for table in CREDENTIAL_TABLES:
        with _altered(table) as batch:
            batch.drop_constraint(op.f(f"fk_{table}_person_id_staff_people"), type_="foreignkey")
            batch.drop_column("person_id")
    op.drop_table("staff_people")
