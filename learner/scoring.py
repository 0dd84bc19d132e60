"""Rendering examples for the model and scoring them: one definition for training and the gate.

* :func:`render` turns an :class:`~learner.examples.Example` into the text pair
  training sees: ``prompt`` = the chat template applied to the messages with the
  generation prompt (``<|assistant|>\\n`` for the tiny model), ``completion`` =
  the answer followed by the tokenizer's end-of-sequence token, which is how a
  served answer ends.
* :func:`sequence_logprobs` is ``log p(completion | prompt)``, summed over the
  completion's tokens, with the same tokenization rule as TRL (the completion
  starts where the tokens of prompt and prompt+completion diverge);
  :func:`encode_pairs` and :func:`encoded_logprobs` are its two halves, for
  scoring the same pairs under several models with one tokenization.
* :func:`limited_threads` bounds torch's intra-op threads for a block, so
  training or evaluation next to serving replicas leaves them cores;
  :func:`freeze_imports` keeps Python's garbage collector off the imported stack.

torch and transformers are imported inside the functions: importing the
learner package stays cheap (the actor process imports it).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from learner.examples import Example

log = logging.getLogger(__name__)


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[int]:
    """Run the block with at most ``threads`` torch threads (and the CPUs there are); restore after.

    Yields the count in effect. torch's thread count is process-wide: do not
    run two differently limited blocks concurrently in one process.
    """
    import torch

    previous = torch.get_num_threads()
    count = max(1, min(int(threads), os.cpu_count() or 1))
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def freeze_imports() -> bool:
    """Keep Python's cyclic garbage collector off every object that exists now, for the
    rest of the process (``gc.freeze``); returns whether it did. Call it once the
    process has imported what it will use (:func:`learner.train.preload` does).

    With torch, transformers and trl imported a process holds half a million objects
    that live as long as it does, and a full collection walks them all, 0.2-0.5 s on a
    small CPU. TRL's ``Trainer.train`` forces one every round (accelerate's
    ``free_memory``) and loading a model triggers more; on a small round that was a
    fifth of the training time. What rounds make later (models, trainers) stays
    collectable as before. Does nothing in a process that froze objects already.
    """
    if gc.get_freeze_count():
        return False
    gc.freeze()
    atexit.register(gc.unfreeze)  # shutdown finalizes them as usual (no leak reports)
    return True


def default_threads() -> int:
    """What training and evaluation use unless configured: every CPU on a machine of up to
    4, all but one beyond.

    A round is minutes of arithmetic while users wait for their corrections to land;
    on a laptop, half the cores would double that. Replicas still get their share of
    the CPU from the OS (answers slow down while a round trains; bench/learner_loop.py
    measures by how much), and a larger machine keeps a core free for them.
    """
    cpus = os.cpu_count() or 2
    return cpus if cpus <= 4 else cpus - 1


def load_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer, with a pad token (the EOS token if it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base_model: str, *, reuse: Any = None) -> Any:
    """The base model at ``base_model`` as scoring loads it (in the checkpoint's dtype).

    ``reuse``: a copy already in memory (what training loaded, ``TrainResult.base``),
    returned instead when it is what the load would give: the same dtype and no adapter
    layers in it.
    """
    from transformers import AutoModelForCausalLM

    if reuse is not None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        stored = _stored_dtype(base_model)
        tuned = any(isinstance(m, BaseTunerLayer) for m in reuse.modules())
        if stored is not None and reuse.dtype == stored and not tuned:
            return reuse
        log.info("loading %s again: the copy in memory is %s%s, the checkpoint %s",
                 base_model, reuse.dtype, " with adapter layers" if tuned else "", stored)
    return AutoModelForCausalLM.from_pretrained(base_model)


def unwrapped_base(model: Any, use_cache: bool) -> Any:
    """The base model inside a trained peft ``model``, as :func:`load_base_model` gives it:
    LoRA layers out, its class's own forward (TRL patches one in for its fused loss),
    ``use_cache`` as loaded (the Trainer turns it off), in eval mode. Training leaves its
    weights as loaded (they are frozen), so the gate can judge with it."""
    base = model.unload()
    base.__dict__.pop("forward", None)
    if hasattr(base, "peft_config"):  # peft copies its config onto the model it wraps
        del base.peft_config
    base.config.use_cache = use_cache
    return base.eval()


def _stored_dtype(base_model: str) -> Any:
    """The dtype ``from_pretrained(base_model)`` loads in: its config's (``None``: unknown)."""
    import json
    from pathlib import Path

    import torch
    from transformers import AutoConfig

    path = Path(base_model) / "config.json"
    if path.is_file():  # a local model: its config.json (parsing it is faster than AutoConfig)
        data = json.loads(path.read_text("utf-8"))
        stored = data.get("dtype") or data.get("torch_dtype")
    else:
        stored = getattr(AutoConfig.from_pretrained(base_model), "dtype", None)
    return getattr(torch, stored, None) if isinstance(stored, str) else stored


def prompt_text(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The chat template applied to ``messages``, ending with the assistant's turn marker."""
    return tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        add_generation_prompt=True, tokenize=False)


def render(tokenizer: Any, example: Example) -> tuple[str, str]:
    """``(prompt, completion)`` text of an example, as training and scoring see it."""
    eos = tokenizer.eos_token or ""
    completion = example.completion
    if eos and not completion.endswith(eos):
        completion += eos
    return prompt_text(tokenizer, example.prompt), completion


def _token_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    start = 0
    for a, b in zip(prompt_ids, full, strict=False):
        if a != b:
            break
        start += 1
    return full, start


#: A tokenized (prompt, completion): the ids of prompt + completion, and the index of the
#: completion's first token (:func:`encode_pairs`).
Encoded = tuple[list[int], int]


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], *,
                 max_length: int = 1024) -> list[Encoded]:
    """Tokenize (prompt, completion) pairs once, for :func:`encoded_logprobs` under one or
    more models. A sequence longer than ``max_length`` keeps its first ``max_length`` tokens
    (the completion's tail is then not scored)."""
    rows = [_token_pair(tokenizer, p, c) for p, c in pairs]
    return [(ids[:max_length], min(start, max_length)) for ids, start in rows]


def sequence_logprobs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *,
                      batch_size: int = 16, max_length: int = 1024) -> list[float]:
    """``sum log p(completion tokens | prompt)`` under ``model`` for each (prompt, completion).

    Sequences longer than ``max_length`` keep their first ``max_length`` tokens
    (the completion's tail is then not scored). The model is put in eval mode.
    """
    return encoded_logprobs(model, encode_pairs(tokenizer, pairs, max_length=max_length),
                            pad_id=tokenizer.pad_token_id, batch_size=batch_size)


def encoded_logprobs(model: Any, rows: Sequence[Encoded], *, pad_id: int | None,
                     batch_size: int = 16) -> list[float]:
    """:func:`sequence_logprobs` of :func:`encode_pairs`'s rows.

    Only the logits that are scored are made: the model's output head runs from the
    first scored position on (``logits_to_keep``, where the model takes it) and the
    softmax over the scored tokens alone. Rows that share the part before their scored
    tokens (a correction and the answer it replaced, two rated answers to one question)
    share its computation: it runs once, and each row continues from its cached keys and
    values. The other rows run whole, in batches of rows of similar length.
    """
    model.eval()
    scoring = _Scoring(model, pad_id if pad_id is not None else 0)
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, (ids, start) in enumerate(rows):  # the prefix: up to the first scored token's
        groups.setdefault(tuple(ids[:max(start, 1) - 1]), []).append(r)  # predictor
    shared = sorted(((k, v) for k, v in groups.items() if k and len(v) > 1),
                    key=lambda group: len(group[0]))
    alone = sorted((r for k, v in groups.items() if not (k and len(v) > 1) for r in v),
                   key=lambda r: len(rows[r][0]))
    scores = [0.0] * len(rows)
    for i in range(0, len(alone), batch_size):
        members = alone[i:i + batch_size]
        _put(scores, members, scoring.whole([rows[r] for r in members]))
    for batch in _fill(shared, batch_size):
        members = [r for _, rs in batch for r in rs]
        suffixes = [rows[r][0][len(prefix):] for prefix, rs in batch for r in rs]
        owners = [g for g, (_, rs) in enumerate(batch) for _ in rs]
        _put(scores, members, scoring.shared([prefix for prefix, _ in batch], owners, suffixes))
    return scores


def _put(scores: list[float], members: Sequence[int], values: Sequence[float]) -> None:
    for r, value in zip(members, values, strict=True):
        scores[r] = value


def _fill(groups: Sequence[tuple[Any, list[int]]], size: int) -> Iterator[list]:
    """Consecutive groups, as many a batch as keep its rows within ``size`` (one at least)."""
    batch: list = []
    for group in groups:
        if batch and sum(len(rs) for _, rs in batch) + len(group[1]) > size:
            yield batch
            batch = []
        batch.append(group)
    if batch:
        yield batch


class _Scoring:
    """The forward passes of :func:`encoded_logprobs`."""

    def __init__(self, model: Any, pad: int) -> None:
        self.model, self.pad = model, pad
        self.keeps_logits = _takes_logits_to_keep(model)
        self.device = next(model.parameters()).device

    def _padded(self, seqs: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, :len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(self, keep: int, **inputs: Any) -> Any:
        import torch

        extra = {"logits_to_keep": keep} if self.keeps_logits else {}
        with torch.no_grad():
            return self.model(**inputs, **extra)

    def whole(self, batch: Sequence[Encoded]) -> list[float]:
        """Rows run whole: the logits at position p predict token p + 1."""
        input_ids, mask = self._padded([ids for ids, _ in batch])
        width = input_ids.shape[1]
        scored = mask.bool().clone()  # tokens whose logp counts
        for row, (_, start) in enumerate(batch):
            scored[row, :max(start, 1)] = False
        first = min(max(start, 1) for _, start in batch) - 1  # keep positions first..width-2
        logits = self._forward(width - first, input_ids=input_ids, attention_mask=mask).logits
        logits = logits[:, logits.shape[1] - (width - first):-1]
        return _totals(logits, input_ids[:, first + 1:], scored[:, first + 1:])

    def shared(self, prefixes: Sequence[Sequence[int]], owners: Sequence[int],
               suffixes: Sequence[Sequence[int]]) -> list[float]:
        """Each prefix runs once; each suffix (its first token predicts the first scored
        one) continues from its prefix's keys and values (``owners[i]``: the prefix of
        suffix ``i``). Every suffix token after the first is scored."""
        import torch

        prefix_ids, prefix_mask = self._padded(prefixes)
        cache = self._forward(1, input_ids=prefix_ids, attention_mask=prefix_mask,
                              use_cache=True).past_key_values
        index = torch.tensor(list(owners), device=self.device)
        cache.reorder_cache(index)  # one copy of its prefix's keys and values per suffix
        suffix_ids, suffix_mask = self._padded(suffixes)
        lengths = prefix_mask.sum(dim=1)[index].unsqueeze(-1)
        positions = lengths + torch.arange(suffix_ids.shape[1], device=self.device)
        logits = self._forward(suffix_ids.shape[1], input_ids=suffix_ids,
                               attention_mask=torch.cat([prefix_mask[index], suffix_mask], 1),
                               past_key_values=cache, position_ids=positions).logits
        return _totals(logits[:, :-1], suffix_ids[:, 1:], suffix_mask[:, 1:].bool())


def _totals(logits: Any, targets: Any, wanted: Any) -> list[float]:
    """Per row, the sum of ``log softmax(logits)[target]`` where ``wanted``."""
    import torch

    picked = logits[wanted].float()  # (scored tokens, vocabulary)
    token_logps = (picked.gather(-1, targets[wanted].unsqueeze(-1)).squeeze(-1)
                   - torch.logsumexp(picked, dim=-1))
    row_of = torch.arange(len(targets), device=targets.device).unsqueeze(-1).expand_as(wanted)
    totals = torch.zeros(len(targets), device=targets.device)
    return totals.index_add_(0, row_of[wanted], token_logps).tolist()


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def greedy_generate_ids(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                        max_new_tokens: int) -> list[list[int]]:
    """Greedy answers to tokenized prompts, decoded together (left-padded).

    Each answer is its token ids up to and including the end-of-sequence token
    when the model emitted one within ``max_new_tokens``.
    """
    import torch

    if not prompts:
        return []
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids))
        mask[row, width - len(ids):] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
    answers = []
    for row in out[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id) + 1]
        answers.append(row)
    return answers


def greedy_answers(model: Any, tokenizer: Any, chats: Sequence[Sequence[dict[str, str]]], *,
                   max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """The greedy answer of ``model`` to each chat, decoded without special tokens."""
    texts = []
    for i in range(0, len(chats), batch_size):
        prompts = [tokenizer(prompt_text(tokenizer, c), add_special_tokens=False)["input_ids"]
                   for c in chats[i:i + batch_size]]
        texts.extend(tokenizer.decode(a, skip_special_tokens=True) for a in
                     greedy_generate_ids(model, tokenizer, prompts,
                                         max_new_tokens=max_new_tokens))
    return texts
