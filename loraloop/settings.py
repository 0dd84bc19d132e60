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

from learner.gate import AutoPromote
from serving.auth import ApiKey
from serving.engines.base import EngineConfig

BUILTIN_TINY = "builtin:tiny"


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
        default=BUILTIN_TINY,
        description="Base model: `builtin:tiny` (built offline into the data dir on "
        "first use), a Hugging Face model id, or a local directory.",
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
    learner_min_new_examples: int = Field(
        default=32, ge=1, description="Feedback events that start a learning round at once."
    )
    learner_max_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="A round also starts this long after the last one "
        "if at least one feedback event waits.",
    )
    learner_auto_promote: AutoPromote = Field(
        default="off",
        description="What the learner does with a version that passes the gate: `off` (ops "
        "promote it), `canary` (a canary at 10% of users; the canary controller decides) or "
        "`live`.",
    )
    learner_method: Literal["kto", "sft"] = Field(
        default="kto",
        description="`kto`: thumbs up/down as unpaired preferences; `sft`: fine-tune on the "
        "liked answers and corrections only.",
    )
    learner_learning_rate: float = Field(
        default=1e-3, gt=0, le=1, description="LoRA learning rate of a round (the built-in "
        "tiny model needs about 1e-2).")
    learner_epochs: float = Field(
        default=3.0, gt=0, le=100, description="Passes over a round's examples (the built-in "
        "tiny model needs about 6).")
    learner_rank: int | None = Field(
        default=None, ge=1, le=256, description="LoRA rank of trained adapters, at most "
        "`max_lora_rank`; empty: 8, or `max_lora_rank` if smaller. A change trains the next "
        "version fresh instead of warm-starting.")
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
