"""The built-in tiny model (`builtin:tiny`), built offline and deterministically.

No model can be downloaded on the machines loraloop is developed and tested on,
and a laptop user should get a working stack without one. So the first use of
`builtin:tiny` builds a small Llama-architecture causal LM into the data dir:
a byte-level BPE tokenizer trained with `tokenizers` on the corpus shipped in
``loraloop/data/tiny_corpus.txt``, a chat template, and seeded random weights.
Building twice gives byte-identical files, so every replica, the learner and
the tests agree on what the base model is.

The shape is chosen for vLLM's CPU backend as well as transformers: its
attention rejects a head_dim below 64, so hidden 128 with 2 heads.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

from loraloop.model_build import build_once, sha256_file, write_marker

#: Bump when the recipe changes, so an old build in a data dir is not reused.
RECIPE_VERSION = 1
SEED = 1234
VOCAB_SIZE = 1024
CONTEXT_LENGTH = 1024
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_DONE_MARKER = "loraloop-tiny.json"


def tiny_model_dir(data_dir: Path) -> Path:
    """Where `builtin:tiny` lives inside a data dir."""
    return Path(data_dir) / "models" / f"tiny-v{RECIPE_VERSION}"


def ensure_tiny_model(data_dir: Path) -> Path:
    """Return the tiny model's directory, building it first if it is missing.

    Safe to call from several processes at once (see
    :func:`loraloop.model_build.build_once`).
    """
    return build_once(tiny_model_dir(data_dir), build_tiny_model, marker=_DONE_MARKER)


def build_tiny_model(dest: Path) -> Path:
    """Build the tiny model into ``dest`` (which must exist or be creatable)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=CONTEXT_LENGTH,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        # A wide init gives the random model decisive logits, so greedy decoding
        # does not hinge on float rounding differences between engines.
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    with _seeded_cpu_rng(SEED):
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    digest = sha256_file(dest / "model.safetensors")
    marker = {"recipe_version": RECIPE_VERSION, "seed": SEED, "weights_sha256": digest}
    write_marker(dest, _DONE_MARKER, marker)
    return dest


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = resources.files("loraloop").joinpath("data/tiny_corpus.txt").read_text("utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The corpus is trained line by line in a fixed order; the BPE trainer breaks
    # ties deterministically, so the vocabulary and merges are reproducible.
    tok.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=CONTEXT_LENGTH,
        clean_up_tokenization_spaces=False,
    )


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int):
    """Seed torch's CPU generator for the block and restore its state after."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
