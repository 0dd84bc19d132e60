"""The Interaction schema: JSON round trip (through Redis too), schema versions, poison input."""

from __future__ import annotations

import json

import pytest

from feedback import (
    INTERACTION_SCHEMA_VERSION,
    Interaction,
    InvalidEvent,
    SchemaVersionError,
    hash_user,
    new_interaction_id,
)


def test_ids_are_128_bit_hex_and_unique():
    ids = {new_interaction_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_hash_user_is_stable_and_hides_the_name():
    assert hash_user("alice") == hash_user("alice") != hash_user("bob")
    assert "alice" not in hash_user("alice") and len(hash_user("alice")) == 32
    assert hash_user(None) == hash_user("") == "anonymous"


def test_json_round_trip_keeps_every_field(make_interaction):
    event = make_interaction(mode="best_of_n", abandoned=True,
                             completions=["a", "b"], finish_reasons=["stop", "length"])
    back = Interaction.from_json(event.to_json())
    assert back == event
    assert back.completion == "a" and back.finish_reason == "stop"
    assert json.loads(event.to_json())["schema_version"] == INTERACTION_SCHEMA_VERSION


def test_from_json_accepts_bytes(make_interaction):
    event = make_interaction()
    assert Interaction.from_json(event.to_json().encode()) == event


@pytest.mark.parametrize("version", [2, 0, None, "1", True])
def test_wrong_schema_version_is_refused_before_validation(make_interaction, version):
    data = json.loads(make_interaction().to_json())
    data["schema_version"] = version
    data["unknown_future_field"] = 1  # must not be what the error is about
    with pytest.raises(SchemaVersionError, match="schema_version") as info:
        Interaction.from_json(json.dumps(data))
    assert isinstance(info.value, ValueError)
    assert info.value.found == version


def test_missing_schema_version_is_refused(make_interaction):
    data = json.loads(make_interaction().to_json())
    del data["schema_version"]
    with pytest.raises(SchemaVersionError):
        Interaction.from_json(json.dumps(data))


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", b"\xff\xfe", "null"])
def test_malformed_json_is_an_invalid_event(raw):
    with pytest.raises(InvalidEvent):
        Interaction.from_json(raw)


def test_schema_violations_are_invalid_events(make_interaction):
    data = json.loads(make_interaction().to_json())
    data["mode"] = "telepathy"
    with pytest.raises(InvalidEvent, match="mode"):
        Interaction.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"id": "not-hex"}, "id"),
        ({"completions": []}, "completions"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"finish_reasons": ["stop", "stop"]}, "finish_reasons"),
        ({"mode": "other"}, "mode"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_constructor_validates(make_interaction, fields, match):
    with pytest.raises(ValueError, match=match):
        make_interaction(**fields)


def test_single_and_plural_forms_cannot_be_mixed(make_interaction):
    data = make_interaction().model_dump()
    with pytest.raises(ValueError, match="either"):
        Interaction(**data, completion="x")


async def test_round_trip_through_redis(client, keys, make_interaction):
    event = make_interaction(messages=[{"role": "system", "content": "ünïcödé ✓"},
                                       {"role": "user", "content": "hi\n\"quoted\""}])
    await client.set(keys.interaction(event.id), event.to_json())
    assert Interaction.from_json(await client.get(keys.interaction(event.id))) == event
