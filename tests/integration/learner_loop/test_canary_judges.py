"""A canary is judged only by users it did not learn from (issue 13, poisoning): the
thumbs of the users in its training data do not count toward promoting it."""

from __future__ import annotations

import pytest

from feedback.events import hash_user
from learner.canary import CanaryPolicy
from learner.canary_controller import CanaryController
from storage import register_candidate
from tests.support.ratings import Rated, record_ratings
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_the_canarys_own_teachers_do_not_vote_it_live(
    client, redis_client, keys, tmp_path, make_adapter
):
    registry = LocalRegistry.create(tmp_path)
    live = registry.register(make_adapter("judges-live", seed=41))
    registry.promote(live)
    teachers = [f"sybil{i}" for i in range(30)]
    with registry.sessions() as session:
        canary = register_candidate(
            session, version_id="c" * 64, tenant="acme", base_model="builtin:tiny",
            artifact_uri="file:///nowhere", artifact_sha256="0" * 64, lora_config={"r": 4},
            dataset_stream_ids={f"1-{i}": hash_user(u) for i, u in enumerate(teachers)},
        ).id
    registry.ops.gate(canary, passed=True)
    registry.ops.start_canary(canary, fraction=0.5)

    # The 30 teachers love it; two users who did not teach it rate it too.
    await record_ratings(client, keys, [
        Rated(user, "Hi", "an answer", "up", adapter_version=canary)
        for user in [*teachers, "outsider1", "outsider2"]])

    controller = CanaryController(redis_client=redis_client, keys=keys,
                                  sessions=registry.sessions,
                                  policy=CanaryPolicy(min_ratings=20))
    [report] = controller.evaluate()
    assert (report["canary_up"], report["canary_down"]) == (2, 0), report
    assert report.get("verdict") in (None, "wait"), report
    assert get_status(registry, canary) == "canary"


def get_status(registry, version_id: str) -> str:
    from storage import get_version

    with registry.sessions() as session:
        return get_version(session, version_id=version_id).status
