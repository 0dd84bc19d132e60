"""An operator's promote racing the canary controller's automatic rollback of the same
canary, on SQLite and PostgreSQL: exactly one wins, the loser is refused with
``Conflict`` and audited as such.

Real databases, real Redis (the thumbs the controller reads), two threads. The
windows are opened on conditions, not on timing: the controller's Redis read
(after it has read the canary, before it writes) waits until the operator has
acted, and the other way round.
"""

from __future__ import annotations

import threading
import uuid

import pytest

import storage
from feedback.events import Feedback
from feedback.keys import RedisKeys
from learner.canary import CanaryPolicy
from learner.canary_controller import CanaryController
from storage import Conflict
from storage.ops import RegistryOps

POLICY = CanaryPolicy(min_ratings=3, confidence=0.9, fast_track_evidence=1.0)
PATIENCE_S = 60


class _Paused:
    """The real Redis client, whose ``xrange`` (the controller's read of the thumbs, made
    after it read the canary and before it writes) signals ``reading``, then waits for
    ``go``."""

    def __init__(self, client, reading: threading.Event, go: threading.Event) -> None:
        self._client, self._reading, self._go = client, reading, go

    def xrange(self, *args, **kwargs):
        self._reading.set()
        assert self._go.wait(PATIENCE_S), "the operator never acted"
        return self._client.xrange(*args, **kwargs)


def _canary_users_dislike(session, redis_client, keys, tenant, new_version):
    """A live version, a canary of another, and thumbs that make the controller roll back."""
    live, canary = new_version(), new_version()
    storage.promote(session, version_id=live.id, actor="test")
    storage.start_canary(session, version_id=canary.id, fraction=0.5, actor="test")
    for version, rating in ((canary.id, -1), (live.id, 1)):
        for _ in range(5):
            event = Feedback(interaction_id=uuid.uuid4().hex, rating=rating,
                             user=uuid.uuid4().hex, tenant=tenant, adapter_version=version)
            redis_client.xadd(keys.feedback_stream, {"event": event.to_json()})
    return live, canary


def _controller(redis_client, keys, session_factory):
    return CanaryController(redis_client=redis_client, keys=keys, sessions=session_factory,
                            policy=POLICY)


def _outcomes(session, version_id, action):
    return [e.outcome for e in storage.history(session, version_id=version_id, limit=100)
            if e.action == action and e.version_id == version_id and e.actor != "test"]


@pytest.fixture
def keys(redis_prefix) -> RedisKeys:
    return RedisKeys(redis_prefix)


def test_the_operator_promotes_while_the_controller_decides_to_roll_back(
        session_factory, session, tenant, new_version, redis_client, keys):
    _, canary = _canary_users_dislike(session, redis_client, keys, tenant, new_version)
    reading, go = threading.Event(), threading.Event()
    controller = _controller(_Paused(redis_client, reading, go), keys, session_factory)
    reports = []
    worker = threading.Thread(target=lambda: reports.append(controller.evaluate()))
    worker.start()
    assert reading.wait(PATIENCE_S), "the controller never read the thumbs"
    RegistryOps(session_factory, actor="operator").promote(canary.id)  # wins
    go.set()
    worker.join(PATIENCE_S)
    assert not worker.is_alive()

    [[report]] = reports
    assert report["verdict"] == "wait" and "another change won" in report["conflict"]
    assert storage.get_version(session, version_id=canary.id).status == "live"
    assert storage.get_alias(session, tenant=tenant).version_id == canary.id
    assert _outcomes(session, canary.id, "promote") == ["ok"]
    assert _outcomes(session, canary.id, "canary_stop") == ["conflict"]


def test_the_controller_rolls_back_while_the_operator_promotes(
        session_factory, session, tenant, new_version, redis_client, keys):
    live, canary = _canary_users_dislike(session, redis_client, keys, tenant, new_version)
    # The operator looked: the canary is a canary. Then the controller rolls it back ...
    assert storage.get_version(session, version_id=canary.id).status == "canary"
    [report] = _controller(redis_client, keys, session_factory).evaluate()
    assert report["verdict"] == "rollback", report
    # ... and the operator's promote, sent on what they saw, loses.
    verdict = r"was rolled back as a canary \(by canary-controller: .*force"
    with pytest.raises(Conflict, match=verdict):
        RegistryOps(session_factory, actor="operator").promote(canary.id)
    assert storage.get_version(session, version_id=canary.id).status == "rolled_back"
    assert storage.get_alias(session, tenant=tenant).version_id == live.id
    assert _outcomes(session, canary.id, "canary_stop") == ["ok"]
    assert _outcomes(session, canary.id, "promote") == ["conflict"]
    # Undoing the rollback stays possible, deliberately.
    RegistryOps(session_factory, actor="operator").promote(canary.id, force=True)
    assert storage.get_alias(session, tenant=tenant).version_id == canary.id


def _race(session_factory, redis_client, keys, canary_id):
    """The controller (once it has read the canary) and the operator go on together."""
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    class AtTheBarrier:
        def xrange(self, *args, **kwargs):
            start.wait(PATIENCE_S)
            return redis_client.xrange(*args, **kwargs)

    def control():
        results["controller"] = _controller(AtTheBarrier(), keys, session_factory).evaluate()

    def operate():
        start.wait(PATIENCE_S)
        try:
            RegistryOps(session_factory, actor="operator").promote(canary_id)
            results["operator"] = "ok"
        except Conflict as exc:
            results["operator"] = exc

    threads = [threading.Thread(target=control), threading.Thread(target=operate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE_S)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    [report] = results["controller"]
    return report, results["operator"]


def test_free_running_race_exactly_one_wins_each_round(
        session_factory, session, tenant, new_version, redis_client, keys):
    for round_ in range(8):
        _, canary = _canary_users_dislike(session, redis_client, keys, tenant, new_version)
        report, operator = _race(session_factory, redis_client, keys, canary.id)
        rolled_back = report["verdict"] == "rollback"
        promoted = operator == "ok"
        assert rolled_back != promoted, f"round {round_}: {report}, {operator}"
        status = storage.get_version(session, version_id=canary.id).status
        assert status == ("live" if promoted else "rolled_back")
        loser = ("canary_stop", "promote") if promoted else ("promote", "canary_stop")
        assert _outcomes(session, canary.id, loser[0]) == ["conflict"], round_
        assert _outcomes(session, canary.id, loser[1]) == ["ok"], round_
        # The next round starts from a live version of its own.
        if not promoted:
            storage.promote(session, version_id=new_version().id, actor="test")


def test_a_version_rolled_back_from_live_goes_live_again_without_force(
        session, tenant, new_version):
    a, b = new_version(), new_version()
    storage.promote(session, version_id=a.id, actor="ops")
    storage.promote(session, version_id=b.id, actor="ops")
    storage.rollback(session, tenant=tenant, actor="ops")  # a routing flip, not a verdict
    assert storage.get_version(session, version_id=b.id).status == "rolled_back"
    storage.promote(session, version_id=b.id, actor="ops")
    assert storage.get_alias(session, tenant=tenant).version_id == b.id
