"""Staff people: the human beings behind console logins and back-office clients.

A four-eyes rule asks for two people. Comparing credentials is not enough: one person
with a back-office client and a console login would otherwise be two pairs of eyes.
So every client and every login names its person when it is made (``alliance staff
add-person`` first, then ``create-client --person`` or ``staff add --person``), and
never changes it afterwards, so the person behind every audit entry's actor stays what
it was when the entry was written. Actors keep naming the credential that acted
(``client:<id>``, ``console:<username>``); ``person_behind`` resolves the person, and
``same_person`` is what four-eyes rules compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.models import OAuthClient
from alliance.models.staff import StaffPerson, StaffUser
from alliance.services import audit_log

HANDLE_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MAX_NAME_CHARACTERS = 200
CLIENT_ACTOR_PREFIX = "client:"
CONSOLE_ACTOR_PREFIX = "console:"


@dataclass(frozen=True, slots=True)
class PersonSummary:
    """A person with how many console logins and back-office clients they hold."""

    handle: str
    name: str
    logins: int
    clients: int


def add_person(session: Session, *, handle: str, name: str, actor: str, now: datetime) -> StaffPerson:
    """Register a staff person, to whom logins and clients can then belong."""
    if not isinstance(handle, str) or not HANDLE_PATTERN.fullmatch(handle):
        raise ValidationFailed("a person's handle is 2-64 lowercase letters, digits, '.', '_' or '-'",
                               fields={"handle": ["malformed"]})
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARACTERS:
        raise ValidationFailed(f"a person's name has 1-{MAX_NAME_CHARACTERS} characters", fields={"name": ["length"]})
    if session.scalar(select(StaffPerson.id).where(StaffPerson.handle == handle)) is not None:
        raise Conflict(f"staff person {handle!r} already exists")
    person_id = session.execute(insert(StaffPerson).values(handle=handle, name=name, created_at=now)
                                .returning(StaffPerson.id)).scalar_one()
    audit_log.append(session, actor=actor, action="staff.person.add", subject=f"person:{handle}", now=now,
                     after={"name": name})
    return session.get_one(StaffPerson, person_id)


def person_id_of(session: Session, handle: str) -> int:
    """The id of the person with this handle (a 404 naming how to add one otherwise)."""
    person_id = session.scalar(select(StaffPerson.id).where(StaffPerson.handle == handle))
    if person_id is None:
        raise NotFound(f"no staff person {handle!r}; add them first (alliance staff add-person, "
                       "or POST /back-office/v1/people)")
    return person_id


def handles(session: Session) -> dict[int, str]:
    """Every person's handle by id."""
    return {row.id: row.handle for row in session.execute(select(StaffPerson.id, StaffPerson.handle))}


def list_people(session: Session) -> list[PersonSummary]:
    """Every staff person, by handle, with their number of logins and clients."""
    logins = select(func.count()).where(StaffUser.person_id == StaffPerson.id).scalar_subquery()
    clients = select(func.count()).where(OAuthClient.person_id == StaffPerson.id).scalar_subquery()
    rows = session.execute(select(StaffPerson.handle, StaffPerson.name, logins, clients)
                           .order_by(StaffPerson.handle)).all()
    return [PersonSummary(handle, name, login_count, client_count) for handle, name, login_count, client_count in rows]


def person_behind(session: Session, actor: str) -> int | None:
    """The person behind an actor naming a back-office client or a console login; None for any other actor."""
    if actor.startswith(CLIENT_ACTOR_PREFIX):
        return session.scalar(select(OAuthClient.person_id)
                              .where(OAuthClient.client_id == actor[len(CLIENT_ACTOR_PREFIX):]))
    if actor.startswith(CONSOLE_ACTOR_PREFIX):
        return session.scalar(select(StaffUser.person_id)
                              .where(StaffUser.username == actor[len(CONSOLE_ACTOR_PREFIX):]))
    return None


def same_person(session: Session, first_actor: str, second_actor: str) -> bool:
    """Whether two actors are one person: the same actor, or two credentials of the same person.

    Actors that name no staff credential (an operator's ``cli:<user>``) are only ever
    the same as themselves.
    """
    if first_actor == second_actor:
        return True
    first = person_behind(session, first_actor)
    return first is not None and first == person_behind(session, second_actor)


@dataclass(frozen=True, slots=True)
class PersonCredentials:
    """A person with the usernames of their console logins and the ids of their back-office clients."""

    handle: str
    name: str
    logins: tuple[str, ...]
    clients: tuple[str, ...]


def people_with_credentials(session: Session) -> list[PersonCredentials]:
    """Every staff person, by handle, with what they sign in with: so two logins of one person show as one."""
    logins: dict[int, list[str]] = {}
    for person_id, username in session.execute(select(StaffUser.person_id, StaffUser.username)
                                               .order_by(StaffUser.username)):
        logins.setdefault(person_id, []).append(username)
    clients: dict[int, list[str]] = {}
    for person_id, client_id in session.execute(select(OAuthClient.person_id, OAuthClient.client_id)
                                                .order_by(OAuthClient.client_id)):
        clients.setdefault(person_id, []).append(client_id)
    people = session.execute(select(StaffPerson.id, StaffPerson.handle, StaffPerson.name)
                             .order_by(StaffPerson.handle)).all()
    return [PersonCredentials(handle, name, tuple(logins.get(person_id, ())), tuple(clients.get(person_id, ())))
            for person_id, handle, name in people]


@dataclass(frozen=True, slots=True)
class PersonName:
    """Who a person is, for showing beside an actor."""

    handle: str
    name: str


def people_behind(session: Session, actors: Iterable[str]) -> dict[str, PersonName]:
    """The person behind each actor that names a console login or a back-office client (others are left out)."""
    wanted = set(actors)
    usernames = {actor[len(CONSOLE_ACTOR_PREFIX):] for actor in wanted if actor.startswith(CONSOLE_ACTOR_PREFIX)}
    client_ids = {actor[len(CLIENT_ACTOR_PREFIX):] for actor in wanted if actor.startswith(CLIENT_ACTOR_PREFIX)}
    found: dict[str, PersonName] = {}
    if usernames:
        for username, handle, name in session.execute(
                select(StaffUser.username, StaffPerson.handle, StaffPerson.name)
                .join(StaffPerson, StaffPerson.id == StaffUser.person_id).where(StaffUser.username.in_(usernames))):
            found[f"{CONSOLE_ACTOR_PREFIX}{username}"] = PersonName(handle, name)
    if client_ids:
        for client_id, handle, name in session.execute(
                select(OAuthClient.client_id, StaffPerson.handle, StaffPerson.name)
                .join(StaffPerson, StaffPerson.id == OAuthClient.person_id)
                .where(OAuthClient.client_id.in_(client_ids))):
            found[f"{CLIENT_ACTOR_PREFIX}{client_id}"] = PersonName(handle, name)
    return found
