"""Turning one request's vLLM output deltas into protocol chunks.

vLLM returns token ids only (the ``vllm`` engine asks for ``detokenize=False``);
text, stop strings and log-prob token names are made here with the model's HF
tokenizer and :class:`~serving.engines.textstream.TextStream`, the same way
the ``hf`` engine makes them, so both engines stream identical text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from serving.engines.base import Chunk, FinishReason, GenerationRequest, TokenLogprob
from serving.engines.textstream import TextStream


class DeltaDecoder:
    """Per-request state: the text so far, tokens counted, whether vLLM has finished."""

    def __init__(
        self,
        request: GenerationRequest,
        tokenizer: Any,
        eos_ids: Collection[int],
        token_text: Callable[[int], str],
    ) -> None:
        self.sampling = request.sampling
        self.prompt_tokens = len(request.prompt_token_ids)
        self.text = TextStream(tokenizer, request.sampling.stop)
        self.eos_ids = eos_ids
        self.token_text = token_text
        self.generated = 0
        self.engine_finished = False  # vLLM itself ended the request

    def chunk(self, completion: Any) -> Chunk:
        """The chunk for one vLLM ``CompletionOutput`` delta.

        Usually one token; several when the consumer lagged behind vLLM. Tokens
        after an end token or a stop-string match are dropped (the caller then
        aborts the request in vLLM).
        """
        vllm_finish = completion.finish_reason
        self.engine_finished = vllm_finish is not None
        kept: list[int] = []
        text, finish = "", None
        for token in completion.token_ids:
            kept.append(token)
            if token in self.eos_ids:
                finish = "stop"
                break
            text += self.text.add([token])
            if self.text.stopped:
                finish = "stop"
                break
        if finish is None and vllm_finish is not None:
            finish = vllm_finish if vllm_finish in ("stop", "length") else "abort"
        if finish is not None:
            text += self.text.flush()
        self.generated += len(kept)
        logprobs = None
        if self.sampling.logprobs:
            entries = completion.logprobs or []
            logprobs = [self._logprob(t, e) for t, e in zip(kept, entries, strict=False)]
        return Chunk(
            token_ids=kept,
            text=text,
            finish_reason=finish,
            logprobs=logprobs,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.generated,
        )

    def finish(self, reason: FinishReason) -> Chunk:
        """A last, token-less chunk (the stream ended without a finish reason)."""
        return Chunk(
            text=self.text.flush(),
            finish_reason=reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.generated,
        )

    def _logprob(self, token: int, entry: dict) -> TokenLogprob:
        # vLLM gives the top-k by rank, plus the sampled token when it is not among them.
        k = self.sampling.top_logprobs
        ranked = sorted((lp.rank, tid, lp.logprob) for tid, lp in entry.items() if lp.rank)
        top = tuple((self.token_text(tid), float(value)) for _, tid, value in ranked[:k])
        return TokenLogprob(token, self.token_text(token), float(entry[token].logprob), top)
