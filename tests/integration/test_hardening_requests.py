"""Hostile requests over real HTTP (uvicorn, a real engine, the real sink and feedback
store on Redis): each is refused with a clear 4xx before anything is read, run or logged."""

from __future__ import annotations

import json

import httpx
import pytest
import pytest_asyncio

from feedback.redact import RegexRedactor
from serving.auth import admin_check
from serving.http_errors import guard_bodies
from tests.support.served import chat_stack, chunked_body, served_app
from tests.support.waiting import until

PROMPT = [{"role": "user", "content": "Hi"}]
OK = {"model": "acme", "messages": PROMPT, "max_tokens": 2, "user": "alice"}


@pytest_asyncio.fixture(loop_scope="function")
async def stack(tiny_model_dir, redis_url, keys):
    async with chat_stack(tiny_model_dir, redis_url, keys, max_body_bytes=64_000,
                          max_prompt_chars=10_000) as started, \
            served_app(started.app) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        started.http = http
        yield started


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.asyncio
async def test_bad_chat_values_get_a_400_naming_them_and_nothing_is_logged(stack, redis_client,
                                                                         keys):
    http = stack.http
    cases = {
        "max_tokens -1": (OK | {"max_tokens": -1}, "max_tokens", "-1"),
        "max_tokens 10^9": (OK | {"max_tokens": 10**9}, "max_tokens", "1000000000"),
        "max_completion_tokens 10^9": (OK | {"max_completion_tokens": 10**9},
                                       "max_completion_tokens", "1000000000"),
        "logprobs 25": (OK | {"logprobs": 25}, "logprobs", "25"),
        "top_logprobs 25": (OK | {"logprobs": True, "top_logprobs": 25}, "top_logprobs", "25"),
        "a huge stop list": (OK | {"stop": [f"s{i}" for i in range(2_000)]}, "stop", "2000"),
        "a huge stop string": (OK | {"stop": ["x" * 20_000]}, "stop", "20000"),
        "a prompt no tokenizer should read": (
            OK | {"messages": [{"role": "user", "content": "word " * 4_000}]}, "messages",
            "20000"),
    }
    for name, (body, param, shown) in cases.items():
        error = _error(await http.post("/v1/chat/completions", json=body), 400)
        assert error["param"] == param, (name, error)
        assert shown in error["message"], (name, error)
        allowed = ("than or equal to", "at most", "valid boolean")  # what is allowed
        assert any(words in error["message"] for words in allowed), (name, error)
    broken = json.dumps(OK).encode().replace(b"Hi", b"H\xff\xfei")
    error = _error(await http.post("/v1/chat/completions", content=broken,
                                   headers={"content-type": "application/json"}), 400)
    assert "UTF-8" in error["message"] and "0xff" in error["message"], error

    # One good request: it is logged, and it is the only interaction in the stream.
    good = await http.post("/v1/chat/completions", json=OK)
    assert good.status_code == 200, good.text
    await stack.sink.flush()
    await until(lambda: redis_client.xlen(keys.interactions_stream) >= 1,
                what="the good request logged")
    logged = redis_client.xrange(keys.interactions_stream)
    assert len(logged) == 1, logged


@pytest.mark.asyncio
async def test_feedback_and_chat_bodies_over_the_limit_get_413_also_when_chunked(stack):
    http = stack.http
    huge = {"interaction_id": "x", "rating": "up", "comment": "y" * 2_000_000}
    assert _error(await http.post("/v1/feedback", json=huge), 413)
    # Chunked: no Content-Length; refused once the body passes the limit.
    for path in ("/v1/feedback", "/v1/chat/completions"):
        response = await http.post(path, content=chunked_body(5_000_000))
        assert "content-length" not in response.request.headers
        assert "limit" in _error(response, 413)["message"]
    # Chat still answers.
    assert (await http.post("/v1/chat/completions", json=OK)).status_code == 200


@pytest.mark.asyncio
async def test_a_guarded_prefix_checks_the_token_before_reading_the_body(stack):
    guard_bodies(stack.app, "/admin", admin_check("admin-token", ()))
    http = stack.http
    read = []

    @stack.app.post("/admin/echo")
    async def echo(request):  # pragma: no cover - must not run without the token
        read.append(await request.body())
        return {}

    response = await http.post("/admin/echo", content=chunked_body(50_000))
    assert response.status_code == 401 and not read


@pytest.mark.timeout(30)
def test_redaction_is_linear_on_adversarial_text():
    # 200k characters that the old e-mail pattern scanned quadratically (about 30 s);
    # the test's timeout is the bound. Also: an address after them is still redacted.
    redactor = RegexRedactor(max_chars=300_000)
    text = "%" * 200_000 + " mail alice@example.com"
    assert redactor.redact(text).endswith("mail [EMAIL]")


def test_redaction_cuts_text_past_its_cap():
    redacted = RegexRedactor(max_chars=100).redact("a" * 89 + " bob@example.com and more")
    assert "bob@" not in redacted and redacted.endswith("a[TRUNCATED 25 CHARS]")
