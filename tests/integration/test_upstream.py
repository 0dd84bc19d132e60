"""Handoff to an upstream over real HTTP: the upstream is a second loraloop app (the ingress
around an LLMReplica on builtin:tiny) served by uvicorn; broken upstreams are real sockets
(a closed port, a listener that hangs up, one that never answers, a proxy that is cut);
the budget is counted in the session's Redis."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from feedback.redact import make_redactor
from serving.api import ChatService, IngressConfig, build_api
from serving.compute.upstream import Upstream, UpstreamConfig, UpstreamUnavailable
from serving.engines import EngineConfig, engine_class
from serving.replica import LLMReplica
from tests.support.faults import Hangup, Silent
from tests.support.served import free_port, served_app
from tests.support.tcp_proxy import TcpProxy
from tests.support.upstream_recorder import Recorder
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [{"role": "user", "content": "Tell me about the weather"}]
GREEDY = {"max_tokens": 12, "temperature": 0.0}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tiny_model_dir):
    """(the upstream's /v1 URL, its recorder, its port)."""
    config = EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny", threads=1)
    replica = LLMReplica(engine_cls=engine_class("hf"), engine_config=config)
    await replica.start()
    service = ChatService(generate=replica.generate, config=IngressConfig(tenants=["acme"]))
    recorder = Recorder(build_api(service))
    try:
        async with served_app(recorder) as url:
            yield f"{url}/v1", recorder, urlsplit(url).port
    finally:
        await replica.shutdown()


@pytest.fixture
def upstream_app(served):
    url, recorder, port = served
    recorder.bodies.clear()
    recorder.headers.clear()
    recorder.drop_after = None
    return url, recorder, port


def _config(url: str, **fields) -> UpstreamConfig:
    return UpstreamConfig(url=url, model="acme", **fields)


async def _reason(upstream: Upstream, tenant: str = "acme") -> UpstreamUnavailable:
    with pytest.raises(UpstreamUnavailable) as raised:
        await upstream.complete(tenant, PROMPT, **GREEDY)
    return raised.value


async def test_a_streamed_handoff_arrives_in_deltas_and_equals_the_greedy_answer(upstream_app):
    url, recorder, _ = upstream_app
    async with httpx.AsyncClient(timeout=120) as http:
        plain = (await http.post(f"{url}/chat/completions",
                                 json={"model": "acme", "messages": PROMPT, **GREEDY})).json()
    expected = plain["choices"][0]["message"]["content"]
    assert expected, plain
    async with Upstream(_config(url, max_tokens=12, api_key="sk-upstream")) as upstream:
        stream = upstream.stream("acme", PROMPT, max_tokens=500, temperature=0.0)
        deltas = [delta async for delta in stream]
        assert len(deltas) > 1 and "".join(deltas) == expected == stream.text
        assert stream.tokens == plain["usage"]["total_tokens"]  # the upstream's usage
        answer = await upstream.complete("acme", PROMPT, **GREEDY)
        assert (answer.text, answer.tokens, answer.model) == (expected, stream.tokens, "acme")
        assert upstream.stats() == {
            "tenants": {"acme": {"handoffs": 2, "upstream_tokens": 2 * stream.tokens,
                                 "fallbacks": {}}},
            "breaker": {"state": "closed", "failures": 0},
            "budget_store_fallbacks": 0,
        }
    sent = recorder.bodies[1]  # [0] is the plain request above
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 12  # capped by UpstreamConfig.max_tokens
    assert recorder.headers[1]["authorization"] == "Bearer sk-upstream"


async def test_messages_are_redacted_before_they_leave(upstream_app):
    url, recorder, _ = upstream_app
    private = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Mail alice.smith@example.com or call +1 (415) "
                                           "555-0100 about the invoice"}]
    redact = make_redactor("regex").redact
    async with Upstream(_config(url), redact=redact) as upstream:
        await upstream.complete("acme", private, **GREEDY)
    [sent] = recorder.bodies
    received = json.dumps(sent)
    assert "alice.smith@example.com" not in received and "555-0100" not in received
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Mail [EMAIL] or call [PHONE] "
                                                            "about the invoice"}]
    assert private[1]["content"].startswith("Mail alice")  # the caller's list is untouched


async def test_nothing_configured_is_refused_with_how_to_configure_it():
    async with Upstream(UpstreamConfig()) as upstream:
        error = await _reason(upstream)
        assert error.reason == "not_configured" and "LORALOOP_UPSTREAM_URL" in str(error)
        assert upstream.stats()["tenants"]["acme"]["fallbacks"] == {"not_configured": 1}


async def test_an_upstream_that_is_down_or_refuses_is_an_error_at_once(upstream_app):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    # A long connect timeout: a refused connection must not wait for it.
    async with Upstream(_config(closed, connect_timeout_s=30, breaker_failures=10)) as upstream:
        started = time.monotonic()
        error = await _reason(upstream)
        assert error.reason == "error" and error.partial == "", error
        assert closed in str(error) and time.monotonic() - started < 10
    url, _, _ = upstream_app
    async with Upstream(UpstreamConfig(url=url, model="nobody")) as upstream:
        error = await _reason(upstream)  # the upstream answers 404: no such model
        assert error.reason == "error" and "HTTP 404" in str(error), error
        assert upstream.stats()["tenants"]["acme"]["fallbacks"] == {"error": 1}


async def test_a_silent_upstream_times_out_after_the_first_token_timeout():
    with Silent() as silent:
        url = f"http://127.0.0.1:{silent.port}/v1"
        config = _config(url, first_token_timeout_s=1, total_timeout_s=120)
        async with Upstream(config) as upstream:
            started = time.monotonic()
            error = await _reason(upstream)
            elapsed = time.monotonic() - started
        assert error.reason == "timeout" and "first_token_timeout_s=1" in str(error), error
        assert 1 <= elapsed < 30, elapsed  # the first-token limit ended it, not the total
        assert silent.accepted == 1


async def test_an_upstream_lost_mid_answer_fails_with_the_partial_text(upstream_app):
    url, recorder, _ = upstream_app
    async with Upstream(_config(url)) as upstream:
        full = await upstream.complete("acme", PROMPT, **GREEDY)
        recorder.drop_after = 2
        stream = upstream.stream("acme", PROMPT, **GREEDY)
        received = []
        with pytest.raises(UpstreamUnavailable) as raised:
            async for delta in stream:
                received.append(delta)
        error = raised.value
        assert error.reason == "error" and len(received) == 2, (error, received)
        assert error.partial == "".join(received) and full.text.startswith(error.partial)
        assert stream.tokens > 0  # what arrived is charged (estimated: no usage came)
        tenant = upstream.stats()["tenants"]["acme"]
        assert tenant["upstream_tokens"] == full.tokens + stream.tokens
        assert (tenant["handoffs"], tenant["fallbacks"]) == (1, {"error": 1})


async def test_the_breaker_opens_after_n_failures_and_refuses_without_connecting():
    with Hangup() as hangup:
        url = f"http://127.0.0.1:{hangup.port}/v1"
        async with Upstream(_config(url, breaker_failures=3, breaker_cooldown_s=0.5)) as up:
            for _ in range(3):
                assert (await _reason(up)).reason == "error"
            assert hangup.accepted == 3 and up.stats()["breaker"]["state"] == "open"
            refused = await _reason(up)
            assert refused.reason == "breaker_open" and "3 consecutive" in str(refused)
            assert hangup.accepted == 3  # refused without connecting
            await until(lambda: up.stats()["breaker"]["state"] == "half_open",
                        what="the breaker half-opens after its cooldown")
            assert (await _reason(up)).reason == "error"  # the one trial, which fails
            assert hangup.accepted == 4
            assert (await _reason(up)).reason == "breaker_open"  # open again at once
            assert hangup.accepted == 4
            assert up.stats()["tenants"]["acme"]["fallbacks"] == {"error": 4, "breaker_open": 2}


async def test_a_half_open_breaker_lets_one_trial_through_at_a_time():
    with Silent() as silent:
        url = f"http://127.0.0.1:{silent.port}/v1"
        config = _config(url, breaker_failures=1, breaker_cooldown_s=0.2,
                         first_token_timeout_s=1)
        async with Upstream(config) as up:
            assert (await _reason(up)).reason == "timeout"
            await until(lambda: up.stats()["breaker"]["state"] == "half_open",
                        what="the breaker half-opens after its cooldown")
            trial = asyncio.create_task(_reason(up))
            await until(lambda: silent.accepted == 2, what="the trial connects")
            assert (await _reason(up)).reason == "breaker_open"  # while the trial runs
            assert (await trial).reason == "timeout"
            assert silent.accepted == 2 and up.stats()["breaker"]["state"] == "open"


async def test_a_successful_trial_closes_the_breaker(upstream_app):
    _, _, port = upstream_app
    proxy = TcpProxy(port)
    try:
        url = f"http://127.0.0.1:{proxy.port}/v1"
        async with Upstream(_config(url, breaker_failures=2, breaker_cooldown_s=0.5)) as up:
            assert (await up.complete("acme", PROMPT, **GREEDY)).text  # through the proxy
            proxy.cut()
            for _ in range(2):
                assert (await _reason(up)).reason == "error"
            assert up.stats()["breaker"]["state"] == "open"
            proxy.restore()
            assert (await _reason(up)).reason == "breaker_open"
            await until(lambda: up.stats()["breaker"]["state"] == "half_open",
                        what="the breaker half-opens after its cooldown")
            answer = await up.complete("acme", PROMPT, **GREEDY)
            assert answer.text and up.stats()["breaker"] == {"state": "closed", "failures": 0}
            assert (await up.complete("acme", PROMPT, **GREEDY)).text == answer.text
    finally:
        proxy.close()


async def test_upstreams_on_one_redis_prefix_share_each_tenants_budget(
        upstream_app, redis_url, redis_prefix, redis_client):
    url, recorder, _ = upstream_app
    config = _config(url, budget_tokens=1, tenant_budget_tokens={"gamma": 0})
    async with Upstream(config, redis_url=redis_url, prefix=redis_prefix) as a, \
            Upstream(config, redis_url=redis_url, prefix=redis_prefix) as b:
        spent = (await a.complete("acme", PROMPT, **GREEDY)).tokens
        error = await _reason(b)  # the other replica sees acme's spend
        assert error.reason == "budget" and f"spent {spent} of its 1" in str(error), error
        assert len(recorder.bodies) == 1  # refused before sending
        assert (await b.complete("beta", PROMPT, **GREEDY)).tokens > 0  # another tenant
        assert (await _reason(a, "gamma")).reason == "budget"  # its own budget: none
        assert b.stats()["tenants"] == {
            "acme": {"handoffs": 0, "upstream_tokens": 0, "fallbacks": {"budget": 1}},
            "beta": {"handoffs": 1, "upstream_tokens": spent, "fallbacks": {}},
        }
        assert a.stats()["budget_store_fallbacks"] == 0
        key = a.budget.key("acme", a.budget.window())
    assert key.rpartition(":")[0] == f"{redis_prefix}:upstream:budget:acme"
    assert int(redis_client.get(key)) == spent
    assert 0 < redis_client.ttl(key) <= 86_400 + 60


async def test_an_unreachable_budget_store_falls_back_to_this_process(upstream_app):
    url, recorder, _ = upstream_app
    with Hangup() as dead_redis:
        config = _config(url, budget_tokens=1)
        async with Upstream(config, redis_url=dead_redis.url, prefix="unused") as upstream:
            answer = await upstream.complete("acme", PROMPT, **GREEDY)  # not failed by it
            assert answer.text and answer.tokens > 0
            assert (await _reason(upstream)).reason == "budget"  # counted here instead
            stats = upstream.stats()
        assert stats["budget_store_fallbacks"] >= 2 and dead_redis.accepted >= 2
        assert stats["tenants"]["acme"] == {"handoffs": 1, "upstream_tokens": answer.tokens,
                                            "fallbacks": {"budget": 1}}
    assert len(recorder.bodies) == 1


async def test_a_stream_the_caller_abandons_is_charged_and_is_no_failure(upstream_app):
    url, _, _ = upstream_app
    async with Upstream(_config(url, breaker_failures=1)) as upstream:
        stream = upstream.stream("acme", PROMPT, **GREEDY)
        first = await anext(stream)
        await stream.aclose()  # e.g. the caller decided the local answer will do
        assert first and stream.text == first and stream.tokens > 0
        assert upstream.stats()["tenants"]["acme"] == {
            "handoffs": 0, "upstream_tokens": stream.tokens, "fallbacks": {}}
        assert upstream.stats()["breaker"]["state"] == "closed"
        assert (await upstream.complete("acme", PROMPT, **GREEDY)).text.startswith(first)
