"""What `loraloop demo` concludes from what it saw: reached or not, the audit trail's
marks, the summary and the learning curve (the story itself runs in tests/e2e/test_demo.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from loraloop.demo.curve import write_curve
from loraloop.demo.record import QUICK, Record


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def told(taught_after: list[bool], general_after: list[bool]) -> Record:
    record = Record(QUICK, started_at=1000.0)
    record.measure("base", [False] * 5, [True] * 12)
    record.measured["base"].at = 1010.0
    for i in range(30):
        record.ratings.append((1020.0 + i, "base" if i < 15 else "v2", i >= 10))
    record.measure("v2", taught_after, general_after)
    record.measured["v2"].at = 1100.0
    record.statuses.update({"v1": "rejected", "v2": "live"})
    record.rounds += [{"version": "v1", "outcome": "rejected"},
                      {"version": "v2", "outcome": "live", "feedback_to_live_s": 71.0}]
    record.audit = [
        {"action": "gate", "outcome": "ok", "at": iso(1050), "version_id": "v1"},
        {"action": "canary", "outcome": "ok", "at": iso(1060), "version_id": "v1"},
        {"action": "canary_stop", "outcome": "ok", "at": iso(1070), "version_id": "v1",
         "to_status": "rolled_back"},
        {"action": "canary", "outcome": "ok", "at": iso(1080), "version_id": "v2"},
        {"action": "promote", "outcome": "refused", "at": iso(1085), "version_id": "v2"},
        {"action": "promote", "outcome": "ok", "at": iso(1090), "version_id": "v2",
         "to_status": "live"},
        {"action": "promote", "outcome": "ok", "at": iso(1090), "version_id": "v0",
         "to_status": "retired"},  # the displaced live version's row
    ]
    return record


def test_four_of_five_taught_with_the_general_set_held_is_reached():
    record = told([True, True, True, True, False], [True] * 11 + [False])
    assert record.reached("v2")
    summary = record.summary()
    assert summary["reached"] and summary["final"] == {
        "version": "v2", "taught_accuracy": 0.8, "general_accuracy": 0.917}
    assert summary["base"]["taught_accuracy"] == 0.0 and summary["general_lost"] == 1
    v2 = next(v for v in summary["versions"] if v["version"] == "v2")
    assert v2["feedback_to_live_s"] == 71.0 and v2["status"] == "live"
    assert v2["thumbs_up_rate"] == 1.0 and v2["ratings"] == 15


def test_forgetting_two_general_questions_is_not_reached_whatever_was_taught():
    record = told([True] * 5, [True] * 10 + [False, False])
    assert not record.reached("v2") and not record.summary()["reached"]
    assert not told([True, True, True, False, False], [True] * 12).reached("v2")


def test_the_audit_trail_marks_canaries_promotions_and_rollbacks_only():
    events = told([True] * 5, [True] * 12).events()
    assert [(e["t"], e["label"], e["version"]) for e in events] == [
        (60.0, "canary", "v1"), (70.0, "rolled back", "v1"), (80.0, "canary", "v2"),
        (90.0, "promoted", "v2")]


def test_the_learning_curve_is_a_png(tmp_path):
    path = write_curve(told([True] * 5, [True] * 12), tmp_path / "curve.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
