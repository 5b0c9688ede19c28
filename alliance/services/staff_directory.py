"""Who an audit actor is, as a person reads it: ``Cass Service (customer service)`` for ``console:cass``.

Actors name the credential that acted (``console:<username>``, ``client:<client id>``,
``cli:<operator>``); pages show the person behind it and the roles that credential
holds, in words. An actor naming a credential that no longer exists is still shown,
described as what it was.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.models import OAuthClient
from alliance.models.staff import StaffPerson, StaffUser
from alliance.services.staff_people import CLIENT_ACTOR_PREFIX, CONSOLE_ACTOR_PREFIX

CLI_ACTOR_PREFIX = "cli:"
ROLE_WORDS = {"admin": "administrator", "finance": "finance", "partner_manager": "partner manager",
              "customer_service": "customer service"}


def role_words(roles: str | Iterable[str]) -> str:
    """Roles as a person writes them: ``customer service, partner manager``."""
    names = roles.split() if isinstance(roles, str) else list(roles)
    return ", ".join(ROLE_WORDS.get(name, name.replace("_", " ")) for name in names)


def display_names(session: Session, actors: Iterable[str]) -> dict[str, str]:
    """Each actor's display name: the person and, in brackets, what the credential is and its roles."""
    wanted = set(actors)
    usernames = {actor[len(CONSOLE_ACTOR_PREFIX):] for actor in wanted if actor.startswith(CONSOLE_ACTOR_PREFIX)}
    client_ids = {actor[len(CLIENT_ACTOR_PREFIX):] for actor in wanted if actor.startswith(CLIENT_ACTOR_PREFIX)}
    logins = {username: (name, roles) for username, name, roles in session.execute(
        select(StaffUser.username, StaffPerson.name, StaffUser.roles)
        .join(StaffPerson, StaffPerson.id == StaffUser.person_id).where(StaffUser.username.in_(usernames)))
    } if usernames else {}
    clients = {client_id: (name, roles) for client_id, name, roles in session.execute(
        select(OAuthClient.client_id, StaffPerson.name, OAuthClient.roles)
        .join(StaffPerson, StaffPerson.id == OAuthClient.person_id).where(OAuthClient.client_id.in_(client_ids)))
    } if client_ids else {}
    names = {}
    for actor in wanted:
        if actor.startswith(CONSOLE_ACTOR_PREFIX):
            username = actor[len(CONSOLE_ACTOR_PREFIX):]
            found = logins.get(username)
            names[actor] = (f"{found[0]} ({role_words(found[1])})" if found
                            else f"console login {username} (not on record)")
        elif actor.startswith(CLIENT_ACTOR_PREFIX):
            client_id = actor[len(CLIENT_ACTOR_PREFIX):]
            found = clients.get(client_id)
            names[actor] = (f"{found[0]} ({role_words(found[1])}, through the back-office API)" if found
                            else f"back-office client {client_id} (not on record)")
        elif actor.startswith(CLI_ACTOR_PREFIX):
            names[actor] = f"{actor[len(CLI_ACTOR_PREFIX):]} (operator, command line)"
        else:
            names[actor] = actor
    return names
