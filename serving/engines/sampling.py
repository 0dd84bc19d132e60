"""Choosing the next token from logits: greedy, temperature, nucleus, seeded.

Each sequence owns its random generator, so a seeded request draws the same
tokens whether it runs alone or in a batch with others.
"""

from __future__ import annotations

import secrets

import torch

from serving.engines.base import SamplingParams, TokenLogprob


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A CPU generator for a sampled request (seeded if the request asked for it)."""
    if params.greedy:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return generator


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token id from one row of float logits."""
    if params.greedy or generator is None:
        return int(torch.argmax(logits))
    scaled = logits.float() / params.temperature
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = cumulative - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def token_logprob(logits: torch.Tensor, token_id: int, top: int, decode) -> TokenLogprob:
    """The chosen token's log-probability under the model (before temperature)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    alternatives: tuple[tuple[str, float], ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, k=min(top, logprobs.shape[-1]))
        alternatives = tuple(
            (decode(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        )
    return TokenLogprob(token_id, decode(token_id), float(logprobs[token_id]), alternatives)
