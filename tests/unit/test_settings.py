"""Settings: the environment is read once, with the LORALOOP_ prefix, and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from loraloop.settings import ALIASES, Settings, setting_path, variable_for

SECTIONS = {"engine_config", "feedback_config", "learner_config", "compute_config",
            "upstream_config", "refusal_config"}


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
    assert settings.engine_config.max_lora_rank == 32
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
        ("LORALOOP_TOPOLOGY", "two_hop", "'split' or 'one_hop'"),
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
    config = settings.engine_for(tmp_path)
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
    names = [f"{name.upper()}__" if name in SECTIONS else f"{name.upper()}`"
             for name in [*Settings.model_fields, *ALIASES]]  # a section: its nested form
    missing = [name for name in names if f"`LORALOOP_{name}" not in readme]
    assert missing == []


#: Every name of the README's table: a value unlike the default, and where it lands.
README_NAMES = {
    "LORALOOP_DATA_DIR": ("/srv/loraloop", "data_dir", Path("/srv/loraloop")),
    "LORALOOP_MODEL": ("builtin:tiny", "model", "builtin:tiny"),
    "LORALOOP_ENGINE": ("vllm", "engine", "vllm"),
    "LORALOOP_DTYPE": ("bfloat16", "engine_config.dtype", "bfloat16"),
    "LORALOOP_REDIS_URL": ("redis://h:1/2", "redis_url", "redis://h:1/2"),
    "LORALOOP_REDIS_PREFIX": ("pfx", "redis_prefix", "pfx"),
    "LORALOOP_DATABASE_URL": ("sqlite:///x.db", "database_url", "sqlite:///x.db"),
    "LORALOOP_ARTIFACTS_URL": ("s3://b/p", "artifacts_url", "s3://b/p"),
    "LORALOOP_MAX_LORA_RANK": ("32", "engine_config.max_lora_rank", 32),
    "LORALOOP_MAX_LORAS": ("3", "engine_config.max_loras", 3),
    "LORALOOP_MAX_CPU_LORAS": ("40", "engine_config.max_cpu_loras", 40),
    "LORALOOP_MAX_BATCH_SIZE": ("5", "engine_config.max_batch_size", 5),
    "LORALOOP_MAX_QUEUE": ("7", "engine_config.max_queue", 7),
    "LORALOOP_ENGINE_THREADS": ("2", "engine_config.threads", 2),
    "LORALOOP_ADMIN_TOKEN": ("tok", "admin_token", "tok"),
    "LORALOOP_ADMIN_TOKENS": ('{"ana": "t1"}', "admin_tokens", {"ana": "t1"}),
    "LORALOOP_GATE_OVERRIDE_APPROVALS": ("1", "gate_override_approvals", 1),
    "LORALOOP_PINNABLE_STATUSES": ('{"acme": ["gated"]}', "pinnable_statuses",
                                   {"acme": ["gated"]}),
    "LORALOOP_TENANTS": ("a, b", "tenants", ["a", "b"]),
    "LORALOOP_REPLICAS": ("3", "replicas", 3),
    "LORALOOP_REPLICA_GPUS": ("1", "replica_gpus", 1.0),
    "LORALOOP_TOPOLOGY": ("one_hop", "topology", "one_hop"),
    "LORALOOP_API_KEYS": ('{"k": {"user": "u", "tenant": "a"}}', "api_keys.k.user", "u"),
    "LORALOOP_FEEDBACK_STRICT": ("true", "feedback_config.strict_durability", True),
    "LORALOOP_LEARNER": ("false", "learner", False),
    "LORALOOP_LEARNER_MIN_NEW_EXAMPLES": ("64", "learner_config.min_new_examples", 64),
    "LORALOOP_LEARNER_MAX_INTERVAL_S": ("600", "learner_config.max_interval_s", 600.0),
    "LORALOOP_LEARNER_AUTO_PROMOTE": ("live", "learner_auto_promote", "live"),
    "LORALOOP_LEARNER_TRUST_ANONYMOUS_FEEDBACK": (
        "true", "learner_trust_anonymous_feedback", True),
    "LORALOOP_LEARNER_METHOD": ("kto", "learner_config.train.method", "kto"),
    "LORALOOP_LEARNER_LEARNING_RATE": ("0.01", "learner_config.train.learning_rate", 0.01),
    "LORALOOP_LEARNER_EPOCHS": ("3", "learner_config.train.epochs", 3.0),
    "LORALOOP_LEARNER_RANK": ("4", "learner_config.train.rank", 4),
    "LORALOOP_LEARNER_REGRESSION_SET": ("none", "learner_regression_set", "none"),
    "LORALOOP_HTTP_HOST": ("0.0.0.0", "http_host", "0.0.0.0"),
    "LORALOOP_HTTP_PORT": ("9000", "http_port", 9000),
    "LORALOOP_TARGET_HANDOFF_RATE": ("0.2", "compute_config.adaptive.target_handoff_rate", 0.2),
    "LORALOOP_UPSTREAM_URL": ("http://big:8000/v1", "upstream_config.url",
                              "http://big:8000/v1", {"LORALOOP_UPSTREAM_MODEL": "big"}),
    "LORALOOP_UPSTREAM_API_KEY": ("sk-1", "upstream_config.api_key", SecretStr("sk-1")),
    "LORALOOP_UPSTREAM_MODEL": ("big", "upstream_config.model", "big"),
    "LORALOOP_UPSTREAM_BUDGET_TOKENS": ("5000", "upstream_config.budget_tokens", 5000),
}


def _at(settings, path: str):
    value = settings
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def test_every_name_in_the_readme_table_is_tested():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = set(re.findall(r"^\| `(LORALOOP_[A-Z_]+)`", readme, flags=re.MULTILINE))
    assert listed and listed - set(README_NAMES) == set()


@pytest.mark.parametrize("where", ["environment", ".env"])
@pytest.mark.parametrize("name", sorted(README_NAMES))
def test_every_readme_name_sets_its_field(monkeypatch, tmp_path, name, where):
    text, path, expected, *also = README_NAMES[name]
    # The value differs from the default, so what the name set is what is seen below.
    assert path.startswith("api_keys") or _at(Settings(), path) != expected
    needed = {name: text, **(also[0] if also else {})}  # a setting that needs another
    if where == "environment":
        for variable, value in needed.items():
            monkeypatch.setenv(variable, value)
    else:
        (tmp_path / ".env").write_text("".join(f"{k}='{v}'\n" for k, v in needed.items()))
    assert _at(Settings(), path) == expected
    assert setting_path(name) == path.removesuffix(".k.user")


def test_nested_names_set_every_field_of_a_section(monkeypatch, tmp_path, tiny_model_dir):
    from loraloop.compose import learner_spec, serve_config

    monkeypatch.setenv("LORALOOP_FEEDBACK_CONFIG__USER_LIMIT", "5")
    monkeypatch.setenv("LORALOOP_LEARNER_CONFIG__TRAIN__SEED", "3")
    monkeypatch.setenv("LORALOOP_LEARNER_CONFIG__SETTLE_S", "2.5")
    monkeypatch.setenv("LORALOOP_ENGINE_CONFIG", '{"max_queue": 9}')
    monkeypatch.setenv("LORALOOP_TOPOLOGY", "one_hop")
    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir))
    serve = serve_config(settings, redis_url="redis://127.0.0.1:6379/0")
    assert serve.ingress.feedback.user_limit == 5 and serve.engine_config.max_queue == 9
    assert serve.topology == "one_hop"
    learner = learner_spec(settings, redis_url="redis://127.0.0.1:6379/0").config
    assert (learner.train.seed, learner.settle_s) == (3, 2.5)
    assert setting_path("LORALOOP_LEARNER_CONFIG__TRAIN__SEED") == "learner_config.train.seed"
    assert setting_path("LORALOOP_ENGINE_CONFIG__MODEL") is None  # LORALOOP_MODEL names it
    assert setting_path("LORALOOP_NO_SUCH_THING") is None and setting_path("HOME") is None


def test_the_environment_beats_dotenv_and_a_nested_name_beats_its_alias(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("LORALOOP_ENGINE_CONFIG__MAX_LORAS=2\nLORALOOP_MAX_QUEUE=5\n")
    monkeypatch.setenv("LORALOOP_MAX_LORAS", "4")
    assert Settings().engine_config.max_loras == 4  # environment (alias) over .env (nested)
    assert Settings().engine_config.max_queue == 5  # .env alone
    monkeypatch.setenv("LORALOOP_ENGINE_CONFIG__MAX_LORAS", "6")
    assert Settings().engine_config.max_loras == 6  # nested over alias, same source
    assert Settings(max_loras=3).engine_config.max_loras == 3  # arguments over both


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LORALOOP_ENGINE_CONFIG__MAX_LORA", "3", "Extra inputs are not permitted"),
        ("LORALOOP_ENGINE_CONFIG__MODEL", "/models/x", "the base model is LORALOOP_MODEL"),
        ("LORALOOP_FEEDBACK_CONFIG__USER_LIMIT", "0", "greater than or equal to 1"),
        ("LORALOOP_REFUSAL_CONFIG__FORGIVE_PER_S", "0", "greater than 0"),
        ("LORALOOP_LEARNER_CONFIG__GATE__AUTO_PROMOTE", "live",
         "set LORALOOP_LEARNER_AUTO_PROMOTE instead"),
        ("LORALOOP_LEARNER_CONFIG__REGRESSION_SET", "/x.jsonl",
         "set LORALOOP_LEARNER_REGRESSION_SET instead"),
        ("LORALOOP_LEARNER_CONFIG__TRAIN__RANK", "32", "must be <= max_lora_rank (16)"),
    ],
)
def test_bad_nested_values_are_refused(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings()


def test_every_setting_has_a_variable_that_sets_it():
    leaves = Settings(max_loras=3).leaves()
    assert leaves["engine_config.max_loras"] == 3 and leaves["model"] == "builtin:smollm2"
    assert "engine_config.model" not in leaves  # LORALOOP_MODEL names the base model
    assert variable_for("engine_config.max_loras") == "LORALOOP_MAX_LORAS"
    assert variable_for("learner_config.train.seed") == "LORALOOP_LEARNER_CONFIG__TRAIN__SEED"
    assert [p for p in leaves if setting_path(variable_for(p)) != p] == []


def test_the_default_learner_rank_follows_the_engines_limit():
    assert Settings().learner_config.train.rank == 8
    assert Settings(max_lora_rank=4).learner_config.train.rank == 4


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LORALOOP_MAX_LORAS": "300"}, "less than or equal to 256"),
        ({"LORALOOP_MAX_BATCH_SIZE": "2000"}, "less than or equal to 1024"),
        ({"LORALOOP_MAX_LORAS": "20", "LORALOOP_MAX_CPU_LORAS": "10"},
         "max_cpu_loras (10) must be >= max_loras (20)"),
    ],
)
def test_engine_limits_are_checked_once_in_engine_config(monkeypatch, env, message):
    from serving.engines.base import EngineConfig

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings()
    # The same check guards an engine built without Settings.
    fields = {k.removeprefix("LORALOOP_").lower(): int(v) for k, v in env.items()}
    with pytest.raises(ValueError, match=re.escape(message)):
        EngineConfig(model="m", **fields)


def test_pinnable_statuses_must_be_statuses():
    with pytest.raises(ValidationError, match=r"pinnable_statuses\['acme'\] names 'bogus'; "
                       r"statuses are canary, candidate"):
        Settings(pinnable_statuses={"acme": ["bogus"]})


def test_admin_and_version_access_settings_reach_the_app(tmp_path, tiny_model_dir):
    from loraloop.compose import serve_config

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir),
                        admin_tokens={"ana": "t1", "bo": "t2"}, gate_override_approvals=1,
                        pinnable_statuses={"acme": ["gated"]})
    config = serve_config(settings, redis_url="redis://127.0.0.1:6379/0")
    assert config.admin_tokens == {"ana": "t1", "bo": "t2"}
    assert config.gate_override_approvals == 1
    assert config.ingress.pinnable_statuses == {"acme": ["gated"]}


def test_vllm_args_are_read_as_json(monkeypatch, tmp_path):
    monkeypatch.setenv("LORALOOP_ENGINE_CONFIG__VLLM_ARGS", '{"fully_sharded_loras": true}')
    settings = Settings(data_dir=tmp_path)
    assert settings.engine_config.vllm_args == {"fully_sharded_loras": True}
