"""Every webhook event type has its data fields and its payload schema in the OpenAPI document's x-webhooks."""

from __future__ import annotations

from alliance.api.openapi import event_schema, webhooks_section
from alliance.domain.webhooks import DATA_FIELDS, EVENT_TYPES


def test_every_event_type_has_its_data_fields_and_nothing_else_does():
    assert set(DATA_FIELDS) == set(EVENT_TYPES)
    for name, fields in DATA_FIELDS.items():
        assert fields, name
        assert len({field.name for field in fields}) == len(fields), name
        assert all(field.type in ("string", "integer") for field in fields), name


def test_the_section_names_every_event_type_with_its_envelope_and_data_schema():
    section = webhooks_section()
    assert list(section) == list(EVENT_TYPES)
    for name, event in EVENT_TYPES.items():
        operation = section[name]["post"]
        assert operation["summary"] == event.description
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == event_schema(name)
        assert schema["required"] == ["id", "type", "created", "data"]
        data = schema["properties"]["data"]
        assert data["required"] == [field.name for field in DATA_FIELDS[name]]
        assert {key: value["type"] for key, value in data["properties"].items()} == {
            field.name: field.type for field in DATA_FIELDS[name]}


def test_amounts_and_points_are_integers():
    whole = {(name, field.name) for name, fields in DATA_FIELDS.items() for field in fields
             if field.name.endswith("_minor") or field.name in ("points", "points_clawed_back", "items",
                                                                 "statement_id", "decision_id")}
    assert whole and all(field.type == "integer" for name, fields in DATA_FIELDS.items() for field in fields
                         if (name, field.name) in whole)
