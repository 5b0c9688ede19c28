"""URL converters that refuse what the database could not hold."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter, Map

# Ids are BIGINT (at most 2**63 - 1). A larger number in a path names nothing, so it is a
# plain 404; without this bound PostgreSQL would refuse the query and the reply be a 500.
MAX_DATABASE_ID = 2**63 - 1


class DatabaseIdConverter(IntegerConverter):
    """``<int:…>`` path arguments, bounded to what a BIGINT column can hold."""

    def __init__(self, map: Map, fixed_digits: int = 0, min: int | None = None,  # noqa: A002
                 max: int | None = MAX_DATABASE_ID, signed: bool = False) -> None:  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)
