"""Declarative base, naming convention and the portable column types the books need."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ColumnExpressionArgument,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    cast,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

# Named constraints, so migrations can drop them and errors can be matched by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only turns INTEGER PRIMARY KEY into an auto-incrementing row id.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Base of every mapped table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Declarative types ``__table__`` as any FromClause (a class may be mapped to a
        # subquery or a join); every model here is mapped to a Table, which Core inserts name.
        __table__: ClassVar[Table]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every database.

    SQLite has no time zones; storing naive UTC and re-attaching UTC on the way out
    keeps comparisons and cut-offs exact there too. Naive input is refused rather than
    guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal: ``NUMERIC`` on PostgreSQL, canonical text on SQLite.

    SQLite's NUMERIC affinity would store prices as binary floating point, which the
    money rules forbid, so there the value travels as its decimal string.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 20, scale: int = 8) -> None:
        super().__init__(precision=precision, scale=scale)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(self.precision + 2))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Decimal | str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError("prices must be Decimal, never float")
        # Decimal("-0") is zero; storing it signed would compare as text below zero on SQLite.
        quantized = (value if value != 0 else Decimal(0)).quantize(Decimal(1).scaleb(-self.scale))
        if quantized != value:
            # The services refuse such values first; reaching here is a bug, never a rounding.
            raise ValueError(f"{value} does not fit {self.scale} decimal places exactly")
        return str(quantized) if dialect.name == "sqlite" else quantized

    def process_result_value(self, value: object, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)) if not isinstance(value, Decimal) else value


def integer_sum(expression: ColumnExpressionArgument[int]) -> ColumnElement[int]:
    """SUM of integers as an integer, zero when there are no rows.

    PostgreSQL widens SUM(bigint) to numeric, which would reach Python as Decimal;
    casting back keeps points and minor units plain integers everywhere.
    """
    return cast(func.coalesce(func.sum(expression), 0), BigInteger)


