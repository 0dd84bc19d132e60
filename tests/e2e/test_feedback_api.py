"""Thumbs and corrections over real HTTP, joined to interactions the app logged."""

from __future__ import annotations

import json

import httpx

from feedback.connections import sync_client
from tests.support.cli import run_cli
from tests.support.waiting import wait_until

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def chat(serve_url, user="alice") -> str:
    r = httpx.post(
        f"{serve_url}/v1/chat/completions",
        timeout=60,
        json={"model": "acme", "messages": PROMPT, "max_tokens": 4, "user": user},
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]


def feedback(serve_url, interaction_id, rating="up", user="alice", **extra):
    return httpx.post(
        f"{serve_url}/v1/feedback",
        timeout=30,
        json={"interaction_id": interaction_id, "rating": rating, "user": user, **extra},
    )


def _wait_logged(redis_server, interaction_id):
    client = sync_client(redis_server.url)
    try:
        wait_until(lambda: client.exists(f"e2e:interaction:{interaction_id}"),
                   what="the interaction was logged")
    finally:
        client.close()


def test_rate_then_rerate_and_read_back(serve_url, redis_server):
    interaction = chat(serve_url)
    _wait_logged(redis_server, interaction)
    first = feedback(serve_url, interaction, "up")
    assert first.status_code == 202, first.text
    assert feedback(serve_url, interaction, -1, correction="Paris.").status_code == 202
    current = httpx.get(f"{serve_url}/v1/feedback/{interaction}", params={"user": "alice"})
    assert current.status_code == 200
    assert current.json()["rating"] == "down" and current.json()["correction"] == "Paris."


def test_refusals(serve_url, redis_server):
    interaction = chat(serve_url, user="carol")
    _wait_logged(redis_server, interaction)
    assert feedback(serve_url, interaction, user="mallory").status_code == 403
    assert feedback(serve_url, "0" * 32, user="carol").status_code == 404
    bad = feedback(serve_url, interaction, rating="meh", user="carol")
    assert bad.status_code == 400 and "meh" in bad.json()["error"]["message"]
    big = feedback(serve_url, interaction, user="carol", correction="x" * 9000)
    assert big.status_code == 413


def test_pii_in_a_correction_never_reaches_redis(serve_url, redis_server):
    interaction = chat(serve_url, user="dave")
    _wait_logged(redis_server, interaction)
    r = feedback(
        serve_url,
        interaction,
        user="dave",
        correction="Mail me at dave@example.com or call +1 415-555-0100.",
    )
    assert r.status_code == 202
    client = sync_client(redis_server.url, decode=True)
    events = [
        json.loads(e["event"]) for _, e in client.xrange("e2e:stream:feedback") if "event" in e
    ]
    client.close()
    mine = [e for e in events if e["interaction_id"] == interaction]
    assert mine and "dave@example.com" not in json.dumps(mine)
    assert "415-555-0100" not in json.dumps(mine)


def test_a_flood_from_one_user_is_rate_limited(serve_url, redis_server):
    interaction = chat(serve_url, user="erin")
    _wait_logged(redis_server, interaction)
    # Windows are aligned to the clock: 70 posts straddling a window boundary may all pass
    # (at most twice the limit can). Post until refused; two windows' worth suffice.
    statuses = []
    while 429 not in statuses and len(statuses) < 2 * 60 + 10:
        statuses.append(feedback(serve_url, interaction, user="erin").status_code)
    assert statuses[0] == 202 and 429 in statuses, statuses
    limited = feedback(serve_url, interaction, user="erin")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_users_forget_deletes_the_data_and_lists_trained_versions(
    serve_url, redis_server, tmp_path
):
    interaction = chat(serve_url, user="frank")
    _wait_logged(redis_server, interaction)
    assert feedback(serve_url, interaction, user="frank").status_code == 202
    out = run_cli(
        "users", "forget", "frank", "--json",
        data_dir=tmp_path,
        extra_env={"LORALOOP_REDIS_URL": redis_server.url, "LORALOOP_REDIS_PREFIX": "e2e"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["interaction_ids"] == [interaction]
    assert len(report["feedback_stream_ids"]) == 1
    assert report["trained_versions"] == []
    gone = httpx.get(f"{serve_url}/v1/feedback/{interaction}", params={"user": "frank"})
    assert gone.status_code == 404
    assert feedback(serve_url, interaction, user="frank").status_code == 404


def test_a_retried_post_with_an_idempotency_key_counts_once(serve_url):
    interaction = chat(serve_url, user="gina")  # rated at once: the store waits for the log
    body = {"interaction_id": interaction, "rating": "down", "user": "gina",
            "correction": "Paris."}

    def post(key, **change):
        return httpx.post(f"{serve_url}/v1/feedback", timeout=30, json={**body, **change},
                          headers={"Idempotency-Key": key})

    first, retry = post("tap-7"), post("tap-7")
    assert first.status_code == retry.status_code == 202, (first.text, retry.text)
    assert retry.json()["id"] == first.json()["id"]
    reused = post("tap-7", rating="up")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
