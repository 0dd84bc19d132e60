"""Strict mode under a crash (issue 13, item 9): Redis is SIGKILLed during a burst of
1,000 feedback posts over real HTTP; after it restarts, every post that got a 202 is
in the feedback stream, and the posts made while it was down were refused, not lost."""

from __future__ import annotations

import pytest

from tests.support.durability import strict_burst

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_every_accepted_post_is_on_disk_after_a_kill_9(tiny_model_dir, tmp_path):
    result = await strict_burst(tiny_model_dir, tmp_path, posts=1000, kill_after=300)
    assert result["killed"], result
    assert result["accepted"] >= 300 and result["refused"] > 0, result
    assert result["accepted_on_disk"] == result["accepted"], result
    assert set(result["statuses"]) <= {202, 503}, result
