"""Server settings, read from the environment (pydantic-settings); a typo'd field name fails at construction.

Environment names: MODEL_URI, HF_INTENT_MODEL, MLFLOW_TRACKING_URI, LABELING_STORE_URL, and INTENT_<FIELD>
for the rest (INTENT_ADMIN_TOKEN, INTENT_EXPERT_TOKEN, INTENT_POLL_INTERVAL_S, INTENT_MAX_BATCH_SIZE, ...).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_URI = "models:/intent-classifier@production"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_LABELING_STORE_URL = "sqlite:///labeling.db"
# A single short query stops gaining from more intra-op threads after a few (MiniLM: 2.3 ms on 1, 1.5 on 2).
MAX_AUTO_THREADS = 4


def _env(field: str, *names: str) -> AliasChoices:
    """Accept the field name (constructor) and the given environment names."""
    return AliasChoices(field, *names)


class ServingSettings(BaseSettings):
    """Everything the server reads at start; one instance per app."""

    model_config = SettingsConfigDict(
        env_prefix="INTENT_", extra="forbid", populate_by_name=True, validate_default=True
    )

    model_uri: str = Field(
        DEFAULT_MODEL_URI,
        validation_alias=_env("model_uri", "MODEL_URI"),
        description="the registry URI the server follows, e.g. models:/intent-classifier@production",
    )
    hf_intent_model: str | None = Field(
        None,
        validation_alias=_env("hf_intent_model", "HF_INTENT_MODEL"),
        description="the guide's mode: a local path, hub id or 'mdeberta', loaded directly (no polling)",
    )
    tracking_uri: str = Field(
        DEFAULT_TRACKING_URI, validation_alias=_env("tracking_uri", "MLFLOW_TRACKING_URI")
    )
    poll_interval_s: float = Field(10.0, gt=0, le=3600, description="seconds between two reads of the alias")
    admin_token: SecretStr | None = Field(
        None, description="bearer token of /v1/admin/* and the labeling export"
    )
    expert_token: SecretStr | None = Field(None, description="bearer token of the labeling queue")
    labeling_store_url: str = Field(
        DEFAULT_LABELING_STORE_URL, validation_alias=_env("labeling_store_url", "LABELING_STORE_URL")
    )
    labeling_enabled: bool = Field(
        True, description="mount the labeling routes and capture low-confidence queries"
    )
    max_batch_size: int = Field(64, ge=1, le=4096)
    max_text_length: int = Field(2000, ge=1, le=100_000, description="characters per text")
    top_k: int = Field(3, ge=1, le=100, description="length of each prediction's ranking")
    default_low_confidence_threshold: float = Field(
        0.5, ge=0, le=1, description="used when the serving version has no low_confidence_threshold tag"
    )
    capture_queue_size: int = Field(1000, ge=1, le=1_000_000)
    prediction_cache_size: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="LRU entries of normalised text -> prediction, per model; 0 = off",
    )
    startup_wait_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="start-up waits this long for the first model; then /health answers and /ready is 503",
    )
    # "onnx" gives the same probabilities as PyTorch (within 1e-5) about 2x faster; "onnx-int8" is 5-6x
    # faster but moves scores, so "auto" serves int8 only for a version whose int8 copy passed evaluation.
    acceleration: Literal["auto", "none", "onnx", "onnx-int8"] = Field(
        "auto",
        description="fine-tuned models only: serve an ONNX Runtime copy (int8 weights: onnx-int8) once it "
        "matches the original on probe texts; 'auto' takes the version's serving_acceleration tag (written "
        "by evaluation: onnx-int8 when the int8 copy passed the gates) and otherwise onnx; 'none' serves "
        "PyTorch as loaded",
    )
    # Unset: the CPUs of this process shared among the workers, at most MAX_AUTO_THREADS. On 2 cores the int8
    # MiniLM answers in 2.1 ms (p50 over HTTP) with 2 threads against 3.3 ms with 1, and serves 412 against
    # 327 requests/s to 4 clients (benchmarks/serving.py); ONNX Runtime's threads spin only while a query
    # runs (see acceleration.py), so idle threads cost nothing.
    inference_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch and ONNX Runtime intra-op threads per worker; unset: this process's CPUs divided "
        f"among the workers, 1 to {MAX_AUTO_THREADS}",
    )
    workers: int = Field(
        1, ge=1, le=256, description="uvicorn worker processes sharing the CPUs (`intent-pipeline serve --workers`)"
    )
    inline_max_texts: int = Field(
        1,
        ge=0,
        le=4096,
        description="uncached texts up to this many are classified on the event loop thread (no thread "
        "hand-off); more go to the inference thread. 0 = always the inference thread",
    )

    def threads(self) -> int:
        """Intra-op threads for this worker: `inference_threads`, or the CPUs it may use over the workers."""
        if self.inference_threads is not None:
            return self.inference_threads
        return max(1, min(MAX_AUTO_THREADS, _available_cpus() // self.workers))

    @field_validator("hf_intent_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty HF_INTENT_MODEL= in a compose file means 'not set', not 'load the path ""'."""
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("admin_token", "expert_token", mode="after")
    @classmethod
    def _blank_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty token would let an empty bearer in: treat it as not configured."""
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("model_uri")
    @classmethod
    def _model_uri_has_scheme(cls, value: str) -> str:
        """Catch 'intent-classifier@production' (no scheme) at start, not at the first poll."""
        value = value.strip()
        if ":/" not in value:
            raise ValueError(f"expected a URI such as {DEFAULT_MODEL_URI}, got {value!r}")
        return value


def _available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
