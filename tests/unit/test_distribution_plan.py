"""The plan for distributing the tables by member (alliance.models.distribution) against the models.

Every table must be classified once; every break of Citus's rules found in the models
must be a listed departure, and every listed departure must still be a break, so the
plan and docs/operations.md stay true as the schema changes in either direction.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import ForeignKeyConstraint, Index, PrimaryKeyConstraint, Table, UniqueConstraint

from alliance.models import Base
from alliance.models.distribution import COORDINATOR, DEPARTURES, DISTRIBUTED, MEMBER_GROUP, REFERENCE, RULES

TABLES = Base.metadata.tables


def _kind(table_name: str) -> str:
    if table_name in DISTRIBUTED:
        return "distributed"
    return "reference" if table_name in REFERENCE else "coordinator"


def _uniques(table: Table) -> list[tuple[str, list[str]]]:
    """Every primary key, unique constraint and unique index: (name, columns)."""
    found = [(str(constraint.name), [column.name for column in constraint.columns])
             for constraint in table.constraints if isinstance(constraint, (PrimaryKeyConstraint, UniqueConstraint))]
    found += [(str(index.name), [column.name for column in index.columns])
              for index in table.indexes if isinstance(index, Index) and index.unique]
    return found


def _column_breaks(table: Table) -> set[tuple[str, str, str]]:
    plan = DISTRIBUTED[table.name]
    if plan.column not in table.columns:
        return {(table.name, "distribution_column_missing", plan.column)}
    if table.columns[plan.column].nullable:
        return {(table.name, "distribution_column_nullable", plan.column)}
    return set()


def _unique_breaks(table: Table) -> set[tuple[str, str, str]]:
    column = DISTRIBUTED[table.name].column
    return {(table.name, "unique_without_distribution_column", name)
            for name, columns in _uniques(table) if column not in columns}


def _foreign_key_allowed(table: Table, key: ForeignKeyConstraint) -> bool:
    """Citus: distributed -> co-located distributed through the distribution columns, or -> reference;
    reference -> reference; coordinator -> coordinator or reference."""
    referred = key.referred_table.name
    if _kind(referred) == "reference":
        return True
    if _kind(table.name) != "distributed":
        return _kind(table.name) == "coordinator" and _kind(referred) == "coordinator"
    if _kind(referred) != "distributed":
        return False
    source, target = DISTRIBUTED[table.name], DISTRIBUTED[referred]
    pairs = {(element.parent.name, element.column.name) for element in key.elements}
    return source.group == target.group and (source.column, target.column) in pairs


def _foreign_key_breaks(table: Table) -> set[tuple[str, str, str]]:
    return {(table.name, "foreign_key_across_shards", str(key.name))
            for key in table.foreign_key_constraints if not _foreign_key_allowed(table, key)}


def _member_keyed_breaks(table: Table) -> set[tuple[str, str, str]]:
    """A table that refers to members belongs on its member's shard."""
    refers_to_members = any(key.referred_table.name == "members" for key in table.foreign_key_constraints)
    in_member_group = table.name in DISTRIBUTED and DISTRIBUTED[table.name].group == MEMBER_GROUP
    if refers_to_members and not in_member_group:
        return {(table.name, "member_keyed_table_not_distributed", table.name)}
    return set()


def _breaks() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for table in TABLES.values():
        found |= _member_keyed_breaks(table) | _foreign_key_breaks(table)
        if table.name in DISTRIBUTED:
            found |= _column_breaks(table) | _unique_breaks(table)
    return found


def test_every_table_is_classified_exactly_once():
    named = Counter([*DISTRIBUTED, *REFERENCE, *COORDINATOR])
    assert [name for name, times in named.items() if times > 1] == []
    assert set(named) == set(TABLES), (
        f"not classified: {sorted(set(TABLES) - set(named))}; no such table: {sorted(set(named) - set(TABLES))}")


def test_every_break_of_citus_rules_is_a_listed_departure_and_every_departure_is_still_a_break():
    listed = [(departure.table, departure.rule, departure.subject) for departure in DEPARTURES]
    assert [item for item, times in Counter(listed).items() if times > 1] == []
    found = _breaks()
    assert sorted(found - set(listed)) == [], "breaks not listed in alliance.models.distribution.DEPARTURES"
    assert sorted(set(listed) - found) == [], "departures no longer found: the schema changed; update the plan"


def test_every_departure_and_every_kept_table_says_why():
    assert all(departure.rule in RULES and departure.change.strip() for departure in DEPARTURES)
    assert all(reason.strip() for reason in [*REFERENCE.values(), *COORDINATOR.values()])


def test_tables_of_one_group_are_distributed_by_columns_of_one_type():
    # Citus co-locates tables whose distribution columns have the same type; a member
    # id of another type would put a member's rows on different nodes.
    types: dict[str, set[str]] = {}
    for name, plan in DISTRIBUTED.items():
        if plan.column in TABLES[name].columns:
            types.setdefault(plan.group, set()).add(repr(TABLES[name].columns[plan.column].type))
    assert {group: kinds for group, kinds in types.items() if len(kinds) > 1} == {}

