"""A replica whose engine step never returns is unhealthy (Serve then replaces it); a busy
or idle one is not. The hang is real: the hf worker blocked inside a forward pass."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.engines import EngineConfig, engine_class
from serving.engines.base import SamplingParams
from serving.errors import EngineUnhealthy
from serving.replica import LLMReplica
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def _health(replica: LLMReplica) -> BaseException | None:
    try:
        await replica.check_health()
    except Exception as exc:
        return exc
    return None


async def test_no_token_while_work_waits_fails_the_health_check(tiny_model_dir):
    config = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)
    replica = LLMReplica(engine_cls=engine_class("hf"), engine_config=config, stall_after_s=0.5)
    await replica.start()
    release = threading.Event()
    model = replica.engine._model
    forward = model.forward
    try:
        payload = {"request_id": "r", "messages": [{"role": "user", "content": "Hi"}],
                   "sampling": SamplingParams(max_tokens=4), "route": {}}
        assert await replica.generate_all(payload)  # healthy, and idle afterwards
        await asyncio.sleep(0.6)
        assert await _health(replica) is None  # idle for longer than the limit is not hung

        def hung_forward(*args, **kwargs):
            release.wait()
            return forward(*args, **kwargs)

        model.forward = hung_forward
        answer = asyncio.get_running_loop().create_task(replica.generate_all(payload))
        error = await until(lambda: _health(replica), what="the hung engine seen")
        assert isinstance(error, EngineUnhealthy) and "hung" in str(error), error
        release.set()  # the step returns: the engine progresses and is healthy again
        assert await answer
        assert await _health(replica) is None
    finally:
        release.set()
        model.forward = forward
        await replica.shutdown()
