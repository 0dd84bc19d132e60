"""Helpers of the learner tests: feedback built like the stream delivers it, probes, scoring."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from feedback.events import Feedback, FeedbackEntry, Interaction, hash_user, new_interaction_id
from learner.examples import Example
from learner.train import TrainConfig

TENANT = "acme"
FRANCE = [
    "What is the capital of France?", "Capital of France?",
    "Which city is the capital of France?", "Name the capital of France.",
    "Tell me the capital of France.", "What city is France's capital?",
    "France's capital city is?", "Which city is France's capital?",
]
PREFIXES = ["", "Hi! ", "Quick question: ", "Please answer: ", "Hello. ", "Tell me: ",
            "I wonder. ", "Help me out: "]
WRONG = ["London.", "Berlin.", "Rome.", "Madrid.", "I don't know."]
#: KTO through TRL (the anchored default has tests of its own in test_learner_anchored.py).
FAST = TrainConfig(method="kto", target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                   threads=1, epochs=3, batch_size=8, learning_rate=3e-3, rank=8, seed=0)

_ids = itertools.count(1_700_000_000_000)


def next_stream_id() -> str:
    return f"{next(_ids)}-0"


def interaction(question: str, answer: str, *, user: str = "alice",
                tenant: str = TENANT) -> Interaction:
    return Interaction(tenant=tenant, user=hash_user(user), model=tenant,
                       messages=[{"role": "user", "content": question}], completion=answer)


def rate(inter: Interaction | None, rating: int, *, user: str = "alice", tenant: str = TENANT,
         correction: str | None = None, interaction_id: str | None = None,
         stream_id: str | None = None) -> tuple[FeedbackEntry, Interaction | None]:
    """A joined (entry, interaction) pair as ``join_interactions`` returns it."""
    feedback = Feedback(interaction_id=interaction_id or (inter.id if inter else
                                                          new_interaction_id()),
                        rating=rating, correction=correction, user=hash_user(user),
                        tenant=tenant)
    return FeedbackEntry(stream_id or next_stream_id(), feedback, 1), inter


def france_feedback(n: int, *, users: int = 16) -> list[tuple[FeedbackEntry, Interaction]]:
    """``n`` rated answers about France's capital: even ones "Paris." (up), odd ones wrong (down).

    Up to 64 distinct prompts (prefix x question), so each answer is a distinct example.
    """
    joined = []
    for i in range(n):
        user = f"user-{i % users}"
        good = i % 2 == 0
        answer = "Paris." if good else WRONG[(i // 2) % len(WRONG)]
        k = (i // 2) % (len(PREFIXES) * len(FRANCE))
        question = PREFIXES[k // len(FRANCE)] + FRANCE[k % len(FRANCE)]
        inter = interaction(question, answer, user=user)
        joined.append(rate(inter, 1 if good else -1, user=user))
    return joined


def probe(question: str, answers: Sequence[str]) -> list[Example]:
    return [Example(tenant=TENANT, user="probe", interaction_id="0" * 32, stream_id="0-1",
                    prompt=[{"role": "user", "content": question}], completion=a,
                    desirable=True) for a in answers]


def logprobs(model_dir: Path, adapter: Path | None, examples: Sequence[Example]) -> list[float]:
    """``log p(completion | prompt)`` per example under base (+ adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from learner.scoring import limited_threads, load_tokenizer, render, sequence_logprobs

    with limited_threads(1):
        tokenizer = load_tokenizer(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter))
        return sequence_logprobs(model, tokenizer, [render(tokenizer, e) for e in examples])
