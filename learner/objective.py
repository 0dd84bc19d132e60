"""The ``anchored`` training objective: learn what users taught, keep what the base model knew.

One loss over one batch of users' examples plus a few anchors
(:mod:`learner.anchors`)::

    loss = CE(desirable) + npo_weight * NPO(undesirable) + anchor_weight * KL(base || model)

* **CE** — the mean token negative log-likelihood of desirable completions
  (corrections and liked answers): supervised targets.
* **NPO** — negative preference optimisation (Zhang et al., 2024) on undesirable
  completions (disliked answers that came without a correction):
  ``-(2 / beta) * log sigmoid(-beta * r)`` with ``r`` the completion's log-ratio
  to the round's starting model. It pushes them down and saturates once they are
  unlikely, unlike plain unlikelihood, which keeps pulling on common tokens.
* **KL** — on the anchors' answer tokens, the divergence from the base model's
  next-token distribution (its top-k tokens plus one bucket for the rest). It is
  zero at the start and pulls back only where training drifts. Without it,
  teaching ten made-up facts made SmolLM2 forget most general facts it knew (see
  ``bench/learning_efficacy.py``).

Logits are computed only at the positions that are scored (the prompt's are
not needed), under bf16 autocast where the hardware has it. No TRL: the three
terms need the base model's distribution and per-example reference
log-probabilities, which its trainers do not combine.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from learner.anchors import Anchor
from learner.examples import Example
from learner.scoring import _token_pair, render

log = logging.getLogger(__name__)

#: Model types whose logits are ``lm_head(decoder hidden states)`` with nothing after it,
#: so the head can be applied to the scored positions only.
_PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "smollm3"})


@dataclass(frozen=True)
class _Row:
    ids: list[int]
    start: int  # index of the first scored token
    reference: float = 0.0  # log p(completion) under the round's starting model


def fit(model: Any, tokenizer: Any, examples: Sequence[Example], anchors: Sequence[Anchor],
        config: Any, *, bf16: bool, progress: Any = None) -> dict[str, Any]:
    """Train ``model``'s trainable LoRA weights in place; returns the metrics.

    ``config`` is a :class:`learner.train.TrainConfig`. ``model`` is a peft model
    whose active adapter is the one to train; the base model is reached with
    ``model.disable_adapter()``. ``progress(step, total)``, if given, is called after
    every optimizer step.
    """
    import torch

    started = time.perf_counter()
    rows: dict[bool, list[_Row]] = {True: [], False: []}
    encoded = {}
    for example in examples:
        prompt, completion = render(tokenizer, example)
        encoded[id(example)] = _token_pair(tokenizer, prompt, completion)
    corrected = {(e.stream_id, e.interaction_id) for e in examples
                 if e.desirable and e.source == "correction"}
    for example in examples:
        ids, start = encoded[id(example)]
        if not example.desirable and (example.stream_id, example.interaction_id) in corrected:
            # The answer a correction replaced is not pushed down: the correction already
            # moves probability to the right answer, and pushing down its phrasing ("The
            # capital of X is ...") cost general answers of the same form (measured with
            # bench/learning_efficacy.py). The gate still checks that it became less likely.
            continue
        ids = ids[:config.max_length]
        if start < len(ids):
            rows[example.desirable].append(_Row(ids, start))
    kept = [_Row(a.prompt_ids + a.answer_ids, len(a.prompt_ids))
            for a in anchors if len(a.prompt_ids) + len(a.answer_ids) <= config.max_length]
    device = "cpu" if _device(model).type == "cpu" else "cuda"

    def autocast() -> Any:
        # A fresh context each time: one torch.autocast entered again inside itself loses
        # the state it restores, and left bf16 autocast on for everything after training
        # in this thread (the gate's evaluation, a test's own forward passes).
        return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    head = _Head(model, autocast, pad=tokenizer.pad_token_id or 0)
    with torch.no_grad():
        reference = [x for i in range(0, len(rows[False]), config.batch_size)
                     for x in head.sequence_logps(rows[False][i:i + config.batch_size])]
        with model.disable_adapter():
            teacher = head.teachers(kept, config.anchor_top_k, config.batch_size)
    bad = [_Row(r.ids, r.start, ref) for r, ref in zip(rows[False], reference, strict=True)]
    items: list[tuple[str, _Row]] = [("good", r) for r in rows[True]] + [("bad", r) for r in bad]
    if not items:
        raise ValueError("no example has a completion to train on")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    per_epoch = -(-len(items) // config.batch_size)
    # A small round still gets min_steps updates: five corrections are as worth learning
    # as fifty, and epochs alone would give them a third of the steps.
    epochs = max(1, round(config.epochs), -(-config.min_steps // per_epoch))
    total_steps = epochs * per_epoch
    # Linear decay to zero: the last steps make small moves, so where training ends
    # does not depend on which anchors the last few batches happened to hold.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    rng = random.Random(config.seed)
    anchor_order = list(range(len(kept)))
    rng.shuffle(anchor_order)
    next_anchor = 0
    totals = {"ce": 0.0, "npo": 0.0, "kl": 0.0}
    steps = 0
    model.train()
    prepared = time.perf_counter()
    for _ in range(epochs):
        rng.shuffle(items)
        for i in range(0, len(items), config.batch_size):
            batch = items[i:i + config.batch_size]
            good = [r for kind, r in batch if kind == "good"]
            worse = [r for kind, r in batch if kind == "bad"]
            picked = []
            for _ in range(min(config.anchors_per_step, len(kept))):
                picked.append(anchor_order[next_anchor % len(kept)])
                next_anchor += 1
            loss = 0.0
            with autocast():
                if good:
                    ce = head.mean_nll(good)
                    loss = loss + ce
                    totals["ce"] += float(ce.detach())
                if worse:
                    logps = head.sequence_logps(worse, grad=True)
                    ratio = logps - torch.tensor([r.reference for r in worse], device=logps.device)
                    npo = (-2.0 / config.beta
                           * torch.nn.functional.logsigmoid(-config.beta * ratio)).mean()
                    loss = loss + config.npo_weight * npo
                    totals["npo"] += float(npo.detach())
                if picked and config.anchor_weight > 0:
                    kl = head.kl([kept[j] for j in picked], [teacher[j] for j in picked])
                    loss = loss + config.anchor_weight * kl
                    totals["kl"] += float(kl.detach())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if progress is not None:
                progress(steps, total_steps)
    model.eval()
    return {
        "steps": steps,
        "anchors": len(kept),
        "train_loss": sum(totals.values()) / max(steps, 1),
        **{f"loss_{k}": round(v / max(steps, 1), 5) for k, v in totals.items()},
        "prepare_seconds": round(prepared - started, 3),
        "fit_seconds": round(time.perf_counter() - prepared, 3),
    }


class _Head:
    """Forward passes that compute logits at scored positions only."""

    def __init__(self, model: Any, autocast: Any, pad: int) -> None:
        self.model = model
        self.autocast = autocast
        base = model.get_base_model()
        self.plain = getattr(base.config, "model_type", "") in _PLAIN_HEAD
        self.decoder = base.base_model if self.plain else None
        self.lm_head = base.get_output_embeddings() if self.plain else None
        self.pad = pad
        self.device = _device(model)

    def _batch(self, rows: Sequence[_Row]):
        import torch

        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        scored = torch.zeros((len(rows), width), dtype=torch.bool)  # positions predicting a target
        for i, row in enumerate(rows):
            ids[i, :len(row.ids)] = torch.tensor(row.ids)
            mask[i, :len(row.ids)] = 1
            scored[i, max(row.start, 1) - 1:len(row.ids) - 1] = True
        targets = torch.zeros_like(ids)
        targets[:, :-1] = ids[:, 1:]
        return ids.to(self.device), mask.to(self.device), scored.to(self.device), \
            targets.to(self.device)

    def _logits(self, rows: Sequence[_Row]):
        ids, mask, scored, targets = self._batch(rows)
        with self.autocast():
            if self.plain:
                hidden = self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = self.lm_head(hidden[scored])
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits[scored]
        return logits.float(), targets[scored], scored

    def _token_logps(self, rows):
        import torch

        logits, targets, scored = self._logits(rows)
        logps = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
        row_of = scored.nonzero()[:, 0]
        return logps, row_of, len(rows)

    def mean_nll(self, rows: Sequence[_Row]):
        """Mean over rows of each row's mean token NLL."""
        import torch

        logps, row_of, n = self._token_logps(rows)
        sums = torch.zeros(n, device=logps.device).index_add(0, row_of, -logps)
        counts = torch.zeros(n, device=logps.device).index_add(
            0, row_of, torch.ones_like(logps))
        return (sums / counts.clamp(min=1)).mean()

    def sequence_logps(self, rows: Sequence[_Row], grad: bool = False):
        import torch

        logps, row_of, n = self._token_logps(rows)
        sums = torch.zeros(n, device=logps.device).index_add(0, row_of, logps)
        return sums if grad else [float(x) for x in sums]

    def teachers(self, rows: Sequence[_Row], k: int, batch_size: int) -> list[Any]:
        """Per row: the model's top-k log-probs at each scored position, and the rest's mass."""
        import torch

        out = []
        for i in range(0, len(rows), batch_size):
            logits, _, scored = self._logits(rows[i:i + batch_size])
            top, index = torch.log_softmax(logits, -1).topk(k, dim=-1)
            rest = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-6))
            counts = scored.sum(1).tolist()
            out.extend(zip(top.split(counts), index.split(counts), rest.split(counts),
                           strict=True))
        return out

    def kl(self, rows: Sequence[_Row], teachers: Sequence[Any]):
        """Mean over rows of KL(base || model) per answer token, on top-k + rest buckets."""
        import torch

        logits, _, scored = self._logits(rows)
        logps = torch.log_softmax(logits, -1)
        top = torch.cat([t[0] for t in teachers])
        index = torch.cat([t[1] for t in teachers])
        rest = torch.cat([t[2] for t in teachers])
        mine = logps.gather(-1, index)
        mine_rest = torch.log1p(-mine.exp().sum(-1).clamp(max=1 - 1e-6))
        per_token = (top.exp() * (top - mine)).sum(-1) + rest.exp() * (rest - mine_rest)
        row_of = scored.nonzero()[:, 0]
        n = len(rows)
        sums = torch.zeros(n, device=logps.device).index_add(0, row_of, per_token)
        counts = torch.zeros(n, device=logps.device).index_add(
            0, row_of, torch.ones_like(per_token))
        return (sums / counts.clamp(min=1)).mean()


def _device(model: Any):
    return next(model.parameters()).device
