"""Test-time compute strategies over real HTTP on builtin:tiny (mechanics, not quality).

The app is the real ingress around a real hf replica (tests/support/served.py),
logging to the session's Redis; what each strategy did is read back from the
response's ``loraloop`` object and from the logged interaction's ComputeRecord.
"""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from serving.adapters import AdapterManager
from serving.compute.answers import normalise
from serving.compute.runner import ComputeRunner
from serving.compute.spec import AdaptiveConfig, ComputeConfig
from tests.support.feedback_traffic import logged, stored_interaction
from tests.support.registry import LocalRegistry
from tests.support.served import chat_stack, served_app
from tests.support.waiting import until

QUESTION = [{"role": "user", "content": "What is two plus two?"}]


def _runner(**config):
    return lambda engine: ComputeRunner(engine, ComputeConfig(**config))


async def _ask(http: httpx.AsyncClient, url: str, loraloop: dict, **body) -> httpx.Response:
    payload = {"model": "acme", "messages": QUESTION, "max_tokens": 4, "user": "ann",
               "loraloop": loraloop, **body}
    return await http.post(f"{url}/v1/chat/completions", json=payload)


@pytest.fixture
async def app(tiny_model_dir, redis_url, keys):
    options = {"compute": _runner(max_waits=40)}
    async with (chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
                served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http):
        yield http, url, stack


async def test_best_of_n_vote_serves_the_most_frequent_normalised_answer(app, redis_url, keys):
    http, url, _ = app
    r = await _ask(http, url, {"strategy": "best_of_n", "n": 6, "aggregator": "vote"},
                   temperature=1.0, max_tokens=1, seed=7)
    assert r.status_code == 200, r.text
    assert r.headers["x-loraloop-strategy"] == "best_of_n"
    body = r.json()
    assert body["loraloop"]["strategy"] == "best_of_n" and not body["loraloop"]["handed_off"]
    record = (await stored_interaction(redis_url, keys, body["id"])).compute
    assert 2 <= record.samples <= 6 and len(record.candidates) == record.samples
    served = normalise(body["choices"][0]["message"]["content"])
    assert record.votes[served] == max(record.votes.values())
    assert sum(record.votes.values()) == record.samples
    counted = {}
    for text in record.candidates:
        counted[normalise(text)] = counted.get(normalise(text), 0) + 1
    assert counted == record.votes
    assert body["loraloop"]["compute_tokens"] >= record.samples


async def test_a_greedy_request_keeps_its_greedy_answer_among_the_samples(app, redis_url,
                                                                         keys):
    """Sample 0 of a greedy request is the answer ``single`` gives, and a vote that does
    not settle goes to it rather than to a random draw."""
    http, url, _ = app
    greedy = await _ask(http, url, {"strategy": "single"}, temperature=0, max_tokens=6)
    assert greedy.status_code == 200, greedy.text
    expected = greedy.json()["choices"][0]["message"]["content"]
    r = await _ask(http, url, {"strategy": "best_of_n", "n": 2, "aggregator": "vote"},
                   temperature=0, max_tokens=6, seed=11)
    assert r.status_code == 200, r.text
    record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert record.candidates[0] == expected
    served = r.json()["choices"][0]["message"]["content"]
    assert served == expected or record.votes[normalise(served)] == 2


async def test_a_strategy_refuses_more_than_the_cap_with_a_400(app):
    http, url, _ = app
    r = await _ask(http, url, {"strategy": "best_of_n", "n": 99})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "loraloop.n" and "99" in error["message"]
    r = await _ask(http, url, None, reasoning_effort="maximal")
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"


async def test_the_reasoning_budget_cuts_at_the_maximum_and_answers(app, redis_url, keys):
    http, url, _ = app
    r = await _ask(http, url, {"strategy": "budget", "max_thinking_tokens": 12}, max_tokens=3)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert 0 < record.thinking_tokens <= 12 and message["reasoning_content"]
    assert message["content"]  # an answer follows the closed section
    assert r.json()["loraloop"]["compute_tokens"] >= record.thinking_tokens


async def test_the_reasoning_budget_waits_until_the_minimum(tiny_model_dir, redis_url, keys):
    # A close marker the random model writes almost at once: without budget forcing the
    # thinking would end after a token or two.
    options = {"compute": _runner(think_close=" ", max_waits=60)}
    async with (
        chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
        served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
    ):
        r = await _ask(http, url, {"strategy": "budget", "min_thinking_tokens": 24,
                                   "max_thinking_tokens": 200}, max_tokens=2, seed=3)
        assert r.status_code == 200, r.text
        record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert record.thinking_tokens >= 24
    assert "Wait" in r.json()["choices"][0]["message"]["reasoning_content"]


async def test_adaptive_thinks_no_longer_than_more_samples_would_cost(tiny_model_dir,
                                                                      redis_url, keys):
    """The budget arm is sized like the more arm ((more_n - probe_n) x max_tokens), not by
    the per-request compute budget: a 4-token answer does not buy 1,000 thinking tokens."""
    adaptive = AdaptiveConfig(confidence_threshold=1.0, arms=["budget"], probe_n=2, more_n=4)
    options = {"compute": _runner(adaptive=adaptive, max_waits=40)}
    async with (chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
                served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http):
        r = await _ask(http, url, {"strategy": "adaptive", "n": 2}, max_tokens=4, temperature=0)
        assert r.status_code == 200, r.text
        record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert record.decision == "budget"
    assert 0 < record.thinking_tokens <= 16  # max(16, (4 - 2) x 4)
    assert record.compute_tokens < 100  # the probe, the verdict, the thinking and the answer


async def test_adaptive_spends_more_on_new_draws_not_the_probes_again(tiny_model_dir,
                                                                      redis_url, keys):
    """The more arm's samples continue the probe's numbering: new seeds, and the greedy
    answer (the probe's sample 0) is not drawn and counted a second time."""
    adaptive = AdaptiveConfig(confidence_threshold=1.0, arms=["more"], probe_n=2, more_n=4)
    options = {"compute": _runner(adaptive=adaptive, max_waits=40)}
    async with (chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
                served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http):
        r = await _ask(http, url, {"strategy": "adaptive", "n": 2}, max_tokens=8, temperature=0,
                       seed=5)
        assert r.status_code == 200, r.text
        record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert record.decision == "more" and record.samples == 4
    probe, more = record.candidates[:2], record.candidates[2:]
    assert not set(probe) & set(more), record.candidates


async def test_refine_critiques_and_revises_within_its_rounds(app, redis_url, keys):
    http, url, _ = app
    r = await _ask(http, url, {"strategy": "refine", "rounds": 2}, max_tokens=3)
    assert r.status_code == 200, r.text
    record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert 1 <= record.samples <= 3 and record.candidates[-1] == \
        r.json()["choices"][0]["message"]["content"]


async def test_judge_picks_a_candidate_or_says_why_not(app, redis_url, keys):
    http, url, _ = app
    r = await _ask(http, url, {"strategy": "best_of_n", "n": 3, "aggregator": "judge"})
    assert r.status_code == 200, r.text
    record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    if record.fallback is None:
        assert record.scores.count(1.0) == 1 and record.scores.index(1.0) == record.chosen
    else:
        assert record.fallback == "judge_unparsed"


async def test_a_streamed_strategy_ends_with_its_loraloop_chunk(app):
    http, url, _ = app
    payload = {"model": "acme", "messages": QUESTION, "max_tokens": 3, "stream": True,
               "loraloop": {"strategy": "best_of_n", "n": 3}}
    chunks, text = [], ""
    async with http.stream("POST", f"{url}/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200 and r.headers["x-loraloop-strategy"] == "best_of_n"
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    last = [c for c in chunks if "loraloop" in c]
    assert len(last) == 1 and last[0]["loraloop"]["samples"] >= 2 and text


async def test_the_scorer_serves_the_candidate_with_the_highest_implicit_reward(
        tmp_path, tiny_model_dir, make_adapter, redis_url, keys):
    registry = LocalRegistry.create(tmp_path)
    adapter_dir = make_adapter("scorer", seed=11)
    registry.promote(registry.register(adapter_dir))
    options = {"compute": _runner(),
               "adapters": lambda engine: AdapterManager(engine, registry.view)}
    async with chat_stack(tiny_model_dir, redis_url, keys, replica_options=options,
                          catalog=registry.view.catalog) as stack:
        await stack.replica.adapters.reconcile()
        async with served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http:
            r = await _ask(http, url, {"strategy": "best_of_n", "n": 4, "aggregator": "scorer"},
                           temperature=1.0, max_tokens=3, seed=5)
            assert r.status_code == 200, r.text
            assert r.headers["x-adapter-version"] != "base"
            record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
        engine = stack.replica.engine
        direct = [_direct_reward(tiny_model_dir, adapter_dir, engine, text)
                  for text in record.candidates]
    assert record.chosen == max(range(len(record.scores)), key=record.scores.__getitem__)
    assert r.json()["choices"][0]["message"]["content"] == record.candidates[record.chosen]
    assert record.scores == pytest.approx(direct, abs=1e-3)
    assert len(set(round(d, 3) for d in direct)) > 1  # the choice was a real one


def _direct_reward(model_dir, adapter_dir, engine, text: str) -> float:
    """log p_adapter(text) - log p_base(text) after the prompt, with transformers and peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompt = engine.encode_chat(QUESTION)
    ids = engine.encode_text(text)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(model, adapter_dir)
    full = torch.tensor([prompt + ids])

    def total(m) -> float:
        with torch.no_grad():
            logits = m(full).logits[0, len(prompt) - 1:-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum())

    with_adapter = total(tuned)
    with tuned.disable_adapter():
        without = total(tuned)
    return with_adapter - without


async def test_thumbs_are_credited_to_the_strategy_that_answered(app, redis_url, keys):
    http, url, stack = app
    r = await _ask(http, url, {"strategy": "best_of_n", "n": 2})
    interaction_id = r.json()["id"]
    await logged(redis_url, keys.prefix, [interaction_id])
    f = await http.post(f"{url}/v1/feedback", json={"interaction_id": interaction_id,
                                                    "user": "ann", "rating": "up"})
    assert f.status_code == 202, f.text
    ledger = stack.service.ledger

    async def credited():
        summary = await ledger.summary("acme")
        return summary.get("base", {}).get("best_of_n", {}).get("ups") == 1

    await until(credited, what="the thumbs-up credited to best_of_n")
    single = await http.post(f"{url}/v1/chat/completions", json={
        "model": "acme", "messages": QUESTION, "max_tokens": 3, "user": "ann"})
    spent = single.json()["usage"]["completion_tokens"]

    async def single_counted():
        got = (await ledger.summary("acme")).get("base", {}).get("single", {})
        return got.get("compute_tokens") == spent > 0

    await until(single_counted, what="a single answer's tokens counted as its compute")
    summary = (await ledger.summary("acme"))["base"]["best_of_n"]
    assert summary["thumbs_up_rate"] == 1.0 and summary["requests"] >= 1
    # The counter moves off the request path, after the ledger's write (and the bandit's).
    rated = 'loraloop_ratings_by_strategy_total{rating="up",strategy="best_of_n",tenant="acme"}'

    async def metrics_text() -> str | None:
        text = (await http.get(f"{url}/metrics")).text
        return text if rated in text else None

    metrics = await until(metrics_text, what="the thumbs-up in /metrics", every_s=0.2)
    assert 'loraloop_compute_requests_total{adapter_version="base",strategy="best_of_n"' \
        in metrics


@pytest.mark.parametrize("opted_in", [True, False])
async def test_a_settled_majority_is_a_pseudo_label_only_where_the_tenant_opts_in(
        tiny_model_dir, redis_url, keys, redis_client, opted_in):
    config = {"pseudo_label_tenants": ["acme"] if opted_in else [], "pseudo_label_margin": 0.6}
    options = {"compute": _runner(**config)}
    async with (
        chat_stack(tiny_model_dir, redis_url, keys, replica_options=options) as stack,
        served_app(stack.app) as url, httpx.AsyncClient(timeout=300) as http,
    ):
        # Nearly greedy: the four samples agree, so the vote settles unanimously.
        r = await _ask(http, url, {"strategy": "best_of_n", "n": 4}, temperature=0.01,
                       max_tokens=2)
        assert r.status_code == 200, r.text
        record = (await stored_interaction(redis_url, keys, r.json()["id"])).compute
    assert max(record.votes.values()) / sum(record.votes.values()) >= 0.6
    assert record.pseudo_label is opted_in
    entries = redis_client.xrange(keys.feedback_stream)
    distilled = [f for _, f in entries if f.get(b"source") == b"distill"]
    assert len(distilled) == (1 if opted_in else 0)
    if opted_in:
        event = json.loads(distilled[0][b"event"])
        assert event["upstream_model"] == "majority-vote"
        assert event["answer"] == r.json()["choices"][0]["message"]["content"]
