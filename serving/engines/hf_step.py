"""One scheduling step of the ``hf`` engine's worker: admit, prefill, decode, emit.

The :class:`Stepper` sees the engine only through what it is given when it is
made: the model, its adapter bank (which routes each row through its own
adapter), the model's facts, the batch size, where waiting rows come from, and
a stats counter. A :class:`Row` finishes itself.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.engines.base import Chunk, GenerationRequest
from serving.engines.hf_batch import PaddedBatch, decode, prefill
from serving.engines.hf_lora import LoraBank
from serving.engines.model import ModelFacts, Ticket
from serving.engines.sampling import make_generator, sample, token_logprob
from serving.engines.textstream import TextStream
from serving.errors import EngineUnhealthy

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Row:
    """One request on its way through the ``hf`` engine, waiting or in the batch."""

    request: GenerationRequest
    deliver: Callable[[Chunk | BaseException], None]
    ticket: Ticket
    adapter: str | None  # the bank's name for the row's adapter; None: base
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    generator: Any = None
    text: Any = None
    cancelled: bool = False
    done: bool = False

    def finish(self, item: Chunk | BaseException) -> None:
        """Hand over the last chunk (or the error) and give back the row's place, once."""
        if not self.done:
            self.done = True
            self.ticket.leave()
            self.deliver(item)


class Stepper:
    """Owns the running rows and their padded KV cache; lives on the worker thread."""

    def __init__(
        self,
        *,
        model: Any,
        lora: LoraBank,
        facts: ModelFacts,
        max_batch_size: int,
        take_waiting: Callable[[int], list[Row]],
        stats: collections.Counter,
    ) -> None:
        self.model = model
        self.lora = lora
        self.facts = facts
        self.max_batch_size = max_batch_size
        self.take_waiting = take_waiting
        self.stats = stats
        self.rows: list[Row] = []
        self.batch: PaddedBatch | None = None

    def step(self) -> bool:
        """Advance every running row by one token; False when there was nothing to do."""
        self._keep([i for i, row in enumerate(self.rows) if not row.cancelled])
        room = self.max_batch_size - len(self.rows)
        new = self.take_waiting(room) if room > 0 else []
        for row in new:
            if row.cancelled:
                row.finish(Chunk(finish_reason="abort"))
        new = [row for row in new if not row.done]
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
        self.stats["steps"] += 1
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(self.rows))
        return True

    def fail_all(self, error: BaseException) -> None:
        for row in self.rows:
            row.finish(error)
        self.rows, self.batch = [], None

    def _admit(self, new: list[Row]) -> None:
        """Prefill the new rows and merge them into the batch.

        Rows with the same prompt and adapter (the n choices of one request) share
        one prefill: each distinct prompt runs once, then its cache and logits are
        copied to its duplicates. A row's KV cache depends only on its own tokens
        and adapter, so a copy is what its own prefill would have computed.
        """
        for row in new:
            row.generator = make_generator(row.request.sampling)
            row.text = TextStream(self.facts.tokenizer, row.request.sampling.stop)
        unique: dict[tuple, int] = {}  # (prompt ids, peft name) -> index in `distinct`
        distinct: list[Row] = []
        source = []  # for each new row, the distinct row whose prefill it takes
        for row in new:
            key = (tuple(row.request.prompt_token_ids), row.adapter)
            if key not in unique:
                unique[key] = len(distinct)
                distinct.append(row)
            source.append(unique[key])
        prompts = [row.request.prompt_token_ids for row in distinct]
        pad_id = self.facts.tokenizer.pad_token_id
        self._route(distinct)
        logits, batch = prefill(self.model, prompts, pad_id)
        if len(distinct) < len(new):
            logits, batch = logits[source], batch.select(source)
        self.stats["prefills"] += 1
        self.stats["prefill_rows"] += len(distinct)
        self.stats["shared_prefill_rows"] += len(new) - len(distinct)
        for i, row in enumerate(new):
            self._advance(row, logits[i])
        self.batch = batch if self.batch is None else self.batch.extend(batch)
        self.rows.extend(new)
        self._keep([i for i, row in enumerate(self.rows) if not row.done])

    def _decode(self) -> None:
        tokens = [row.next_token for row in self.rows]
        self._route(self.rows)
        logits, self.batch = decode(self.model, self.batch, tokens)
        for i, row in enumerate(self.rows):
            self._advance(row, logits[i])
        self._keep([i for i, row in enumerate(self.rows) if not row.done])

    def _keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        kept = set(indices)
        for i, row in enumerate(self.rows):
            if i not in kept and not row.done:  # cancelled by its consumer
                row.finish(Chunk(finish_reason="abort"))
        self.rows = [self.rows[i] for i in indices]
        self.batch = self.batch.select(indices) if self.batch is not None else None

    def _route(self, rows: list[Row]) -> None:
        self.lora.route([row.adapter for row in rows])

    def _advance(self, row: Row, logits) -> None:
        """Choose the row's next token and hand the client what it may see."""
        facts, params = self.facts, row.request.sampling
        token = sample(logits, params, row.generator)
        row.generated.append(token)
        row.next_token = token
        logprobs = None
        if params.logprobs:
            logprobs = [token_logprob(logits, token, params.top_logprobs, facts.token_text)]
        finish = None
        if token in facts.eos_ids:
            finish, text = "stop", row.text.flush()
        else:
            text = row.text.add([token])
            total = len(row.request.prompt_token_ids) + len(row.generated)
            if row.text.stopped:
                finish = "stop"
            elif len(row.generated) >= params.max_tokens or total >= facts.max_context:
                finish = "length"
                text += row.text.flush()
        chunk = Chunk(
            token_ids=[token],
            text=text,
            finish_reason=finish,
            logprobs=logprobs,
            prompt_tokens=len(row.request.prompt_token_ids),
            completion_tokens=len(row.generated),
        )
        if finish is None:
            row.deliver(chunk)
        else:
            row.finish(chunk)

