"""A left-padded KV cache that sequences join and leave between decode steps.

This is what lets the ``hf`` engine batch continuously: new requests are
prefilled together, then their cache is padded on the left and stacked onto
the running batch; finished rows are dropped and all-padding columns trimmed.
Each row keeps its own positions (RoPE is applied before caching), so a row
decodes the same tokens whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class PaddedBatch:
    """The KV cache and attention mask of the rows currently being decoded."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask  # [rows, columns], 1 where a column holds a real token

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """Real tokens cached per row, which is also the position of each row's next token."""
        return self.mask.sum(dim=-1)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    def extend(self, other: PaddedBatch) -> PaddedBatch:
        """Stack ``other``'s rows under this batch's, left-padding the shorter one."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        layers = [
            (
                torch.cat([_pad_left(k1, width, 2), _pad_left(k2, width, 2)]),
                torch.cat([_pad_left(v1, width, 2), _pad_left(v2, width, 2)]),
            )
            for (k1, v1), (k2, v2) in zip(self.layers(), other.layers(), strict=True)
        ]
        mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)])
        return PaddedBatch(DynamicCache(layers), mask)

    def select(self, keep: Sequence[int]) -> PaddedBatch | None:
        """Keep only the given rows, and drop the columns that are padding in all of them."""
        if not keep:
            return None
        index = torch.tensor(list(keep), dtype=torch.long)
        mask = self.mask.index_select(0, index)
        first_real = int((mask.cumsum(dim=-1) == 0).sum(dim=-1).min())
        layers = [
            (
                k.index_select(0, index)[:, :, first_real:],
                v.index_select(0, index)[:, :, first_real:],
            )
            for k, v in self.layers()
        ]
        return PaddedBatch(DynamicCache(layers), mask[:, first_real:].contiguous())


def prefill(model, prompts: Sequence[Sequence[int]], pad_id: int):
    """Run the prompts through the model; return their last-position logits and cache."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=DynamicCache(),
        use_cache=True,
    )
    return out.logits[:, -1, :], PaddedBatch(out.past_key_values, mask)


def decode(model, batch: PaddedBatch, next_tokens: Sequence[int]):
    """Feed each row its latest token; return the next logits and the grown batch."""
    positions = batch.lengths.unsqueeze(-1)
    mask = torch.cat([batch.mask, torch.ones((batch.rows, 1), dtype=batch.mask.dtype)], dim=-1)
    out = model(
        input_ids=torch.tensor(list(next_tokens), dtype=torch.long).unsqueeze(-1),
        attention_mask=mask,
        position_ids=positions,
        past_key_values=batch.cache,
        use_cache=True,
    )
    return out.logits[:, -1, :], PaddedBatch(out.past_key_values, mask)


def score_tokens(model, prompt: Sequence[int], completion: Sequence[int]) -> list[float]:
    """The log-probability of each completion token after the prompt and the tokens
    before it: one forward pass over prompt + completion, no cache kept."""
    ids = torch.tensor([[*prompt, *completion]], dtype=torch.long)
    out = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        use_cache=False,
        # Only the positions that predict a completion token (and the last, unused one).
        logits_to_keep=len(completion) + 1,
    )
    logprobs = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
    chosen = torch.tensor(list(completion), dtype=torch.long).unsqueeze(-1)
    return logprobs.gather(-1, chosen).squeeze(-1).tolist()


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    # F.pad lists (left, right) pairs from the last dimension backwards.
    pads = [0, 0] * (tensor.dim() - dim - 1) + [missing, 0]
    return F.pad(tensor, pads)
