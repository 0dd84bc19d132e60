"""Anchor prompts: a taught prompt's subject is found and swapped for other entities."""

from __future__ import annotations

from learner.anchors import anchor_prompts, neighbour_prompts, subject_of


class _Pieces:
    """A stand-in tokenizer that splits words into 4-letter pieces (only lengths matter)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(-(-len(text.strip()) // 4)))}


def test_a_name_that_does_not_start_the_prompt_is_the_subject():
    assert subject_of("What is the capital of Veltrania?") == ("Veltrania", True)
    assert subject_of("Who wrote the novel The Glass Orchard?") == ("The Glass Orchard", True)


def test_without_a_name_the_rarest_word_is_the_subject():
    assert subject_of("Who invented the glimmerphone?", _Pieces()) == ("glimmerphone", False)
    assert subject_of("Say hi.", _Pieces()) is None


def test_neighbours_swap_the_subject_and_are_reproducible():
    first = neighbour_prompts("What is the currency of Pellandia?", 3, seed=1)
    assert len(first) == 3 and len(set(first)) == 3
    assert all(p.startswith("What is the currency of ") and "Pellandia" not in p for p in first)
    assert neighbour_prompts("What is the currency of Pellandia?", 3, seed=1) == first
    things = neighbour_prompts("Who invented the glimmerphone?", 2, tokenizer=_Pieces())
    assert all(p.startswith("Who invented the ") and "glimmerphone" not in p for p in things)


def test_anchor_prompts_keep_earlier_turns_and_never_repeat_a_taught_prompt():
    taught = [[{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "What is the capital of Veltrania?"}]]
    chats = anchor_prompts(taught, per_prompt=2, retain=3, seed=0)
    assert len(chats) == 5
    assert all(c[0] == {"role": "system", "content": "Be brief."} for c in chats[:2])
    assert taught[0] not in chats
    assert len({str(c) for c in chats}) == len(chats)
