"""The Feedback event schema: rating normalization, JSON round trip, poison detection."""

from __future__ import annotations

import json

import pytest

from feedback import (
    FEEDBACK_SCHEMA_VERSION,
    Feedback,
    InvalidEvent,
    InvalidFeedback,
    SchemaVersionError,
    hash_user,
    normalize_rating,
)

IID = "0123456789abcdef0123456789abcdef"


def make(**fields) -> Feedback:
    values = dict(interaction_id=IID, rating="up", user=hash_user("alice"), tenant="acme")
    values.update(fields)
    return Feedback(**values)


@pytest.mark.parametrize(("given", "expected"), [
    ("up", 1), ("down", -1), (" UP ", 1), (1, 1), (-1, -1), ("1", 1), ("+1", 1), ("-1", -1),
])
def test_ratings_are_normalized(given, expected):
    assert normalize_rating(given) == expected
    assert make(rating=given).rating == expected


@pytest.mark.parametrize("bad", [True, False, 0, 2, -2, 1.0, "meh", "", None, [1]])
def test_bad_ratings_name_the_value_and_the_choices(bad):
    with pytest.raises(InvalidFeedback) as info:
        normalize_rating(bad)
    assert repr(bad) in str(info.value)
    assert "'up' or 'down'" in str(info.value) and "1 / -1" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_feedback_round_trips_and_has_a_fresh_128_bit_id():
    a, b = make(correction="4", comment="was wrong"), make()
    assert a.id != b.id and len(a.id) == 32 and int(a.id, 16) >= 0
    assert a.schema_version == FEEDBACK_SCHEMA_VERSION
    assert Feedback.from_json(a.to_json()) == a
    assert Feedback.from_json(a.to_json().encode()) == a
    assert a.adapter_version == "base"


def test_from_json_refuses_poison():
    good = json.loads(make().to_json())
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        Feedback.from_json(b"{nope")
    with pytest.raises(InvalidEvent, match="JSON object"):
        Feedback.from_json("[1]")
    with pytest.raises(SchemaVersionError, match="schema_version 99"):
        Feedback.from_json(json.dumps({**good, "schema_version": 99, "rating": "??"}))
    with pytest.raises(InvalidEvent, match="does not match"):
        Feedback.from_json(json.dumps({**good, "rating": 5}))
    with pytest.raises(InvalidEvent, match="does not match"):
        Feedback.from_json(json.dumps({**good, "correction": "x" * 5_000_000}))
    with pytest.raises(InvalidEvent, match="does not match"):
        Feedback.from_json(json.dumps({**good, "surprise": 1}))


def test_interaction_id_must_be_32_hex_digits():
    with pytest.raises(ValueError):
        make(interaction_id="../etc/passwd")
