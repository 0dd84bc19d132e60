"""What `loraloop up` and `loraloop status` print never shows a password."""

from __future__ import annotations

from loraloop.stack import describe
from loraloop.stack_state import StackState


def test_describe_hides_the_redis_password():
    state = StackState(
        pid=1, http_url="http://127.0.0.1:8000", redis_url="redis://app:s3cret@cache:6379/0",
        redis_embedded=False, database_url="postgresql://app:***@db/loraloop",
        ray_address="127.0.0.1:6379", replicas=1, engine="hf", model="builtin:tiny",
    )
    text = describe(state)
    assert "s3cret" not in text
    assert "redis://app:***@cache:6379/0 (external)" in text
