"""Settings: the environment is read once, with the LORALOOP_ prefix, and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from loraloop.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("LORALOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_need_no_configuration():
    settings = Settings()
    assert settings.model == "builtin:smollm2"
    assert settings.engine == "hf"
    assert settings.redis_url == ""
    assert settings.sqlalchemy_url == f"sqlite:///{settings.data_dir / 'loraloop.db'}"
    assert settings.artifacts_location == str(settings.data_dir / "adapters")
    assert "loraloop" in str(settings.data_dir)


def test_environment_overrides_with_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("LORALOOP_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("LORALOOP_ENGINE", "vllm")
    monkeypatch.setenv("LORALOOP_MAX_LORA_RANK", "32")
    monkeypatch.setenv("LORALOOP_DATABASE_URL", "postgresql+psycopg://u@h/db")
    settings = Settings()
    assert settings.data_dir == Path(tmp_path / "d")
    assert settings.engine == "vllm"
    assert settings.max_lora_rank == 32
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@h/db"


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("LORALOOP_MODEL=/models/llama\n")
    assert Settings().model == "/models/llama"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LORALOOP_ENGINE", "tensorrt", "'hf', 'vllm' or 'auto'"),
        ("LORALOOP_MAX_LORA_RANK", "0", "greater than or equal to 1"),
        ("LORALOOP_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("LORALOOP_REDIS_PREFIX", "has space", "pattern"),
        ("LORALOOP_MAX_CPU_LORAS", "2", "must be >= max_loras"),
        ("LORALOOP_LEARNER_RANK", "32", "must be <= max_lora_rank (16)"),
        ("LORALOOP_LEARNER_AUTO_PROMOTE", "always", "'auto', 'off', 'canary' or 'live'"),
    ],
)
def test_bad_values_are_refused_naming_the_field(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    text = str(refused.value)
    assert name.removeprefix("LORALOOP_").lower() in text
    assert message in text


def test_engine_config_carries_the_limits(tmp_path):
    settings = Settings(max_lora_rank=4, max_loras=2, max_batch_size=3)
    config = settings.engine_config(tmp_path)
    assert (config.model, config.model_name) == (str(tmp_path), "builtin:smollm2")
    assert (config.max_lora_rank, config.max_loras, config.max_batch_size) == (4, 2, 3)


def test_only_settings_reads_the_environment():
    root = Path(__file__).resolve().parents[2]
    # The vllm engine sets (and restores) its child processes' variables; it reads none.
    allowed = {"loraloop/settings.py", "serving/engines/vllm.py"}
    offenders = [
        str(path.relative_to(root))
        for package in ("serving", "learner", "feedback", "storage", "loraloop")
        for path in (root / package).rglob("*.py")
        if ("os.getenv" in (text := path.read_text()) or "os.environ[" in text
            or re.search(r"\bos\.environ\b|\bfrom os import[^\n]*\benviron\b", text))
        and str(path.relative_to(root)) not in allowed
    ]
    assert offenders == []


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`LORALOOP_{name.upper()}`" not in readme]
    assert missing == []


def test_auto_engine_names_its_choice_and_reason():
    import importlib.util

    from serving.engines import choose_engine

    assert choose_engine("hf") == ("hf", "configured engine 'hf'")
    name, reason = choose_engine("auto")
    installed = importlib.util.find_spec("vllm") is not None
    assert (name == "vllm") == installed or "no GPU" in reason
    assert reason.startswith("auto: ")


def test_learner_settings_reach_the_learner(tmp_path, tiny_model_dir):
    from loraloop.compose import learner_spec

    settings = Settings(
        data_dir=tmp_path, model=str(tiny_model_dir), learner_auto_promote="canary",
        learner_method="sft", learner_learning_rate=1e-2, learner_epochs=6, max_lora_rank=4,
    )
    config = learner_spec(settings, redis_url="redis://127.0.0.1:6379/0").config
    assert config.gate.auto_promote == "canary"
    train = config.train
    assert (train.method, train.learning_rate, train.epochs, train.rank) == ("sft", 1e-2, 6, 4)


def test_empty_learner_settings_keep_the_components_defaults(tmp_path, tiny_model_dir):
    from learner.loop import LearnerConfig
    from learner.train import TrainConfig
    from loraloop.compose import learner_spec

    config = learner_spec(Settings(data_dir=tmp_path, model=str(tiny_model_dir)),
                          redis_url="redis://127.0.0.1:6379/0").config
    assert config.train.method == TrainConfig().method == "anchored"
    assert config.train.learning_rate == TrainConfig().learning_rate
    assert config.min_new_examples == LearnerConfig().min_new_examples


@pytest.mark.parametrize(
    ("settings", "policy", "why"),
    [
        ({}, "canary", "only this machine can reach the API"),
        ({"http_host": "0.0.0.0"}, "off", "set LORALOOP_API_KEYS"),
        ({"http_host": "0.0.0.0", "api_keys": {"k": {"user": "u", "tenant": "default"}}},
         "canary", "users need API keys"),
        ({"http_host": "0.0.0.0", "learner_auto_promote": "live",
          "learner_trust_anonymous_feedback": True}, "live", "go live"),
        ({"learner_auto_promote": "off"}, "off", "wait for an operator"),
    ],
    ids=["loopback", "exposed", "exposed-with-keys", "exposed-trusted", "off"],
)
def test_automatic_promotion_is_on_where_it_is_safe(settings, policy, why):
    from loraloop.compose import auto_promote_policy

    got, reason = auto_promote_policy(Settings(**settings))
    assert got == policy and why in reason


def test_automatic_promotion_of_anonymous_feedback_needs_the_operators_word():
    from loraloop.compose import auto_promote_policy

    with pytest.raises(ValueError, match="LORALOOP_LEARNER_TRUST_ANONYMOUS_FEEDBACK=true"):
        auto_promote_policy(Settings(http_host="0.0.0.0", learner_auto_promote="canary"))


def test_the_built_in_model_brings_its_regression_set(tmp_path):
    from loraloop.compose import regression_set_path

    shipped = regression_set_path(Settings())
    assert shipped is not None and Path(shipped).name == "smollm2.jsonl"
    assert Path(shipped).is_file()
    assert regression_set_path(Settings(model="builtin:tiny")) is None
    assert regression_set_path(Settings(learner_regression_set="none")) is None
    mine = tmp_path / "mine.jsonl"
    assert regression_set_path(Settings(learner_regression_set=str(mine))) == str(mine)
