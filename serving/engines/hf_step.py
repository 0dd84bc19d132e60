"""One scheduling step of the ``hf`` engine's worker: admit, prefill, decode, emit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from serving.engines.base import Chunk
from serving.engines.hf_batch import PaddedBatch, decode, prefill
from serving.engines.sampling import make_generator, sample, token_logprob
from serving.engines.textstream import TextStream
from serving.errors import EngineUnhealthy

if TYPE_CHECKING:
    from serving.engines.hf import HFEngine, _Sequence

logger = logging.getLogger(__name__)


class Stepper:
    """Owns the running rows and their padded KV cache; lives on the worker thread."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self.rows: list[_Sequence] = []
        self.batch: PaddedBatch | None = None

    def step(self) -> bool:
        """Advance every running sequence by one token; False when there was nothing to do."""
        self._keep([i for i, seq in enumerate(self.rows) if not seq.cancelled])
        room = self.engine.config.max_batch_size - len(self.rows)
        new = self.engine._take_waiting(room) if room > 0 else []
        for seq in new:
            if seq.cancelled:
                self.engine._finish(seq, Chunk(finish_reason="abort"))
        new = [seq for seq in new if not seq.done]
        if not new and not self.rows:
            return False
        try:
            if new:
                self._admit(new)
            if self.rows:
                self._decode()
        except Exception as exc:
            # A failed forward pass fails the rows it carried, not the engine.
            logger.exception("an engine step failed; failing %d request(s)", len(self.rows))
            self.fail_all(EngineUnhealthy(f"generation failed: {exc!r}"))
        stats = self.engine.stats
        stats["steps"] += 1
        stats["max_batch_rows"] = max(stats["max_batch_rows"], len(self.rows))
        return True

    def fail_all(self, error: BaseException) -> None:
        for seq in self.rows:
            self.engine._finish(seq, error)
        self.rows, self.batch = [], None

    def _admit(self, new: list[_Sequence]) -> None:
        engine = self.engine
        for seq in new:
            seq.generator = make_generator(seq.request.sampling)
            seq.text = TextStream(engine._tokenizer, seq.request.sampling.stop)
        prompts = [seq.request.prompt_token_ids for seq in new]
        logits, batch = prefill(
            engine._model, prompts, engine._tokenizer.pad_token_id, self._forward_kwargs(new)
        )
        engine.stats["prefills"] += 1
        for row, seq in enumerate(new):
            self._advance(seq, logits[row])
        self.batch = batch if self.batch is None else self.batch.extend(batch)
        self.rows.extend(new)
        self._keep([i for i, seq in enumerate(self.rows) if not seq.done])

    def _decode(self) -> None:
        tokens = [seq.next_token for seq in self.rows]
        logits, self.batch = decode(
            self.engine._model, self.batch, tokens, self._forward_kwargs(self.rows)
        )
        for row, seq in enumerate(self.rows):
            self._advance(seq, logits[row])
        self._keep([i for i, seq in enumerate(self.rows) if not seq.done])

    def _keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        kept = set(indices)
        for i, seq in enumerate(self.rows):
            if i not in kept and not seq.done:  # cancelled by its consumer
                self.engine._finish(seq, Chunk(finish_reason="abort"))
        self.rows = [self.rows[i] for i in indices]
        self.batch = self.batch.select(indices) if self.batch is not None else None

    def _forward_kwargs(self, rows: list[_Sequence]) -> dict:
        from peft import PeftModel

        if isinstance(self.engine._model, PeftModel):
            return {"adapter_names": [seq.peft_name for seq in rows]}
        return {}

    def _advance(self, seq: _Sequence, logits) -> None:
        """Choose the sequence's next token and hand the client what it may see."""
        engine, params = self.engine, seq.request.sampling
        token = sample(logits, params, seq.generator)
        seq.generated.append(token)
        seq.next_token = token
        logprobs = None
        if params.logprobs:
            decode_one = lambda i: engine._tokenizer.decode([i])  # noqa: E731
            logprobs = [token_logprob(logits, token, params.top_logprobs, decode_one)]
        finish = None
        if token in engine._eos_ids:
            finish, text = "stop", seq.text.flush()
        else:
            text = seq.text.add([token])
            total = len(seq.request.prompt_token_ids) + len(seq.generated)
            if seq.text.stopped:
                finish = "stop"
            elif len(seq.generated) >= params.max_tokens or total >= engine.max_context:
                finish = "length"
                text += seq.text.flush()
        chunk = Chunk(
            token_ids=[token],
            text=text,
            finish_reason=finish,
            logprobs=logprobs,
            prompt_tokens=len(seq.request.prompt_token_ids),
            completion_tokens=len(seq.generated),
        )
        if finish is None:
            seq.deliver(chunk)
        else:
            engine._finish(seq, chunk)
