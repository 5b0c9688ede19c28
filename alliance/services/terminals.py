"""Partners' terminals as partner requests name them, and the codes and card numbers their replies show."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.domain.errors import AllianceError, NotFound
from alliance.models import Card, Terminal


class TerminalRetired(AllianceError):
    """A request naming a terminal the partner's manager has retired."""

    code = "terminal_retired"
    http_status = 403
    title = "Terminal retired"


class TerminalMismatch(AllianceError):
    """A key bound to one terminal used for another."""

    code = "terminal_mismatch"
    http_status = 403
    title = "Terminal mismatch"


def resolve_terminal(session: Session, *, partner_id: int, key_id: str, bound_terminal_id: int | None,
                     terminal_code: str | None) -> int | None:
    """The terminal a request acts for: its key's own if the key is bound to one, else the one named, if any.

    A retired terminal is refused; a key bound to one was revoked when it was retired.
    """
    named_id = None
    if terminal_code is not None:
        named = session.execute(select(Terminal.id, Terminal.status).where(Terminal.partner_id == partner_id,
                                                                            Terminal.code == terminal_code)).first()
        if named is None:
            raise NotFound(f"this partner has no terminal {terminal_code!r}")
        if named.status == "retired":
            raise TerminalRetired(f"terminal {terminal_code!r} is retired: register the till as a new terminal")
        named_id = named.id
    if bound_terminal_id is not None:
        if named_id is not None and named_id != bound_terminal_id:
            raise TerminalMismatch(f"key {key_id!r} is bound to another terminal")
        return bound_terminal_id
    return named_id


def terminal_code(session: Session, terminal_id: int | None) -> str | None:
    """A terminal's code, for replies (None for no terminal)."""
    if terminal_id is None:
        return None
    return session.scalar(select(Terminal.code).where(Terminal.id == terminal_id))


def card_number(session: Session, card_id: int | None) -> str | None:
    """A card's number, for replies that show it masked (None for no card)."""
    if card_id is None:
        return None
    return session.scalar(select(Card.card_number).where(Card.id == card_id))
