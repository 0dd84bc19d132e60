"""Interaction logging through the running app: abandoned streams, Redis outages."""

from __future__ import annotations

import json
import time

import httpx

from feedback.connections import sync_client
from tests.support.waiting import wait_until

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _logged(redis_server, ids, *, expect, timeout=120.0):
    client = sync_client(redis_server.url, timeout_s=10, decode=True)
    deadline = time.monotonic() + timeout
    while True:
        entries = client.xrange("e2e:stream:interactions")
        found = [json.loads(e["event"]) for _, e in entries if e["id"] in ids]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _metric(serve_url, name) -> float:
    for line in httpx.get(f"{serve_url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exported")


def test_abandoned_stream_is_logged_as_abandoned(serve_url, redis_server):
    body = {
        "model": "acme",
        "messages": PROMPT,
        "max_tokens": 400,
        "stream": True,
        "temperature": 0,
    }
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{serve_url}/v1/chat/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: {"))
        interaction_id = json.loads(first[6:])["id"]
        next(lines)
    # Leaving the block closed the connection mid-stream.
    [event] = _logged(redis_server, {interaction_id}, expect=1)
    assert event["abandoned"] is True
    assert event["completion_tokens"] < 400


def test_redis_outage_keeps_answers_flowing_and_loses_nothing(serve_url, redis_server):
    dropped_before = _metric(serve_url, "loraloop_interaction_log_dropped")
    redis_server.stop()
    try:
        ids = set()
        for _ in range(6):
            r = httpx.post(
                f"{serve_url}/v1/chat/completions",
                timeout=30,
                json={"model": "acme", "messages": PROMPT, "max_tokens": 4},
            )
            assert r.status_code == 200, r.text
            ids.add(r.json()["id"])
        assert httpx.get(f"{serve_url}/readyz").status_code == 503
        assert _metric(serve_url, "loraloop_interaction_log_buffered") >= 1
    finally:
        redis_server.restart()
    logged = _logged(redis_server, ids, expect=len(ids))
    assert sorted(e["id"] for e in logged) == sorted(ids)
    assert _metric(serve_url, "loraloop_interaction_log_dropped") == dropped_before
    # The sink counts a write once Redis has answered it, just after the entry is visible.
    try:
        wait_until(lambda: _metric(serve_url, "loraloop_interaction_log_delayed") >= len(ids),
                   what="the sink counting the delayed writes", every_s=0.2)
    except AssertionError as exc:
        raise AssertionError(", ".join(
            line for line in httpx.get(f"{serve_url}/metrics").text.splitlines()
            if line.startswith("loraloop_interaction_log_"))) from exc
