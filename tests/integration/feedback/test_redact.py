"""PII redaction: what the regex redactor replaces, what it leaves alone, and interactions."""

from __future__ import annotations

import pytest

from feedback import (
    Interaction,
    PresidioRedactor,
    Redactor,
    RedactorUnavailable,
    RegexRedactor,
    make_redactor,
    redact_interaction,
    redact_text,
)
from feedback.redact import luhn_valid

REDACTOR = RegexRedactor()


@pytest.mark.parametrize(("text", "expected"), [
    ("mail bob.smith+x@mail.example.co.uk now", "mail [EMAIL] now"),
    ("card 4111 1111 1111 1111.", "card [CARD]."),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("amex 378282246310005", "amex [CARD]"),
    ("call +1 (555) 123-4567 today", "call [PHONE] today"),
    ("call (555) 123-4567", "call [PHONE]"),
    ("call 555-123-4567", "call [PHONE]"),
    ("call 555.123.4567", "call [PHONE]"),
    ("ring +44 20 7946 0958", "ring [PHONE]"),
    ("appel 01 23 45 67 89", "appel [PHONE]"),
    ("local 555-1234", "local [PHONE]"),
    ("server 192.168.1.20, gw 10.0.0.1.", "server [IP], gw [IP]."),
    ("v6 2001:db8::8a2e:370:7334 and fe80::1%eth0", "v6 [IP] and [IP]"),
    ("mapped ::ffff:10.1.2.3 here", "mapped [IP] here"),
    ("url http://[2001:db8::1]:8080/x", "url http://[[IP]]:8080/x"),
])
def test_regex_redactor_replaces_pii(text, expected):
    assert REDACTOR.redact(text) == expected


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1112 is not a valid card (Luhn)",
    "What is 1234567 * 2? About 2469134.",
    "numbers 10 20 30 40 50 60",
    "on 2024-01-15 at 12:30:45",
    "population 1.234.567 people",
    "version 1.2.3 of std::vector",
    "a MAC 00:1a:2b:3c:4d:5e",
    "pi is 3.14159265358979",
])
def test_regex_redactor_leaves_non_pii_alone(text):
    assert REDACTOR.redact(text) == text


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("5500005555555559")
    assert not luhn_valid("4111111111111112")


def test_redact_interaction_covers_messages_and_every_completion(make_interaction):
    interaction = make_interaction(
        messages=[{"role": "system", "content": "be nice"},
                  {"role": "user", "content": "I am ann@corp.io, call +49 30 1234567"}],
        completions=["Hi ann@corp.io", "Your IP is 8.8.8.8"], finish_reasons=["stop", "stop"])
    redacted = redact_interaction(interaction)
    assert [m.content for m in redacted.messages] == ["be nice", "I am [EMAIL], call [PHONE]"]
    assert redacted.completions == ["Hi [EMAIL]", "Your IP is [IP]"]
    assert redacted.id == interaction.id and redacted.user == interaction.user
    assert Interaction.from_json(redacted.to_json()) == redacted  # still a valid event


def test_pluggable_redactors():
    class Shout:
        def redact(self, text: str) -> str:
            return text.upper()

    assert isinstance(Shout(), Redactor)
    assert redact_text("a@b.co", Shout()) == "A@B.CO"
    assert redact_text(None) is None
    assert make_redactor("none").redact("a@b.co") == "a@b.co"
    with pytest.raises(ValueError, match="'regex', 'presidio' or 'none'"):
        make_redactor("spacy")  # type: ignore[arg-type]


def test_presidio_redactor_runs_regex_then_the_analyzer():
    class Result:
        def __init__(self, start, end, entity_type):
            self.start, self.end, self.entity_type = start, end, entity_type

    class Analyzer:  # the AnalyzerEngine interface: analyze(text=, language=, ...)
        def analyze(self, *, text, language, entities, score_threshold):
            start = text.index("Alice Smith")
            return [Result(start, start + len("Alice Smith"), "PERSON")]

    redactor = PresidioRedactor(analyzer=Analyzer())
    assert redactor.redact("Alice Smith, alice@x.org") == "[PERSON], [EMAIL]"


def test_presidio_redactor_explains_a_missing_dependency():
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        with pytest.raises(RedactorUnavailable, match="presidio_analyzer"):
            make_redactor("presidio")
    else:
        pytest.skip("presidio_analyzer is installed")
