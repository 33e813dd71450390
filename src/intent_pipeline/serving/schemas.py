"""Request and response bodies of the serving API.

The request model is built per app (`classify_request_model`) so the limits from the settings (text
length, batch size) are part of the schema: they show in the OpenAPI page and fail with pydantic's 422.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator


class ClassifyRequestBase(BaseModel):
    """{"text": "..."} for one query or {"texts": ["...", ...]} for a batch; exactly one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "quanto pago di IRPEF su 35.000 euro?"},
                {"texts": ["cos'è il regime forfettario?", "ciao"]},
            ],
        },
    )

    text: StrictStr | None = None
    texts: list[StrictStr] | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            blank = [i for i, text in enumerate(value) if not text.strip()]
            if blank:
                raise ValueError(f"texts at positions {blank[:20]} are empty or only whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ClassifyRequestBase:
        if self.text is None and self.texts is None:
            raise ValueError("give 'text' (one string) or 'texts' (a list of strings)")
        if self.text is not None and self.texts is not None:
            raise ValueError("give either 'text' or 'texts', not both")
        return self

    @property
    def batch(self) -> list[str]:
        """The texts to classify, one or many."""
        return [self.text] if self.text is not None else list(self.texts or [])


def classify_request_model(max_text_length: int, max_batch_size: int) -> type[ClassifyRequestBase]:
    """The request model with this app's limits."""
    limited_text = Annotated[StrictStr, Field(max_length=max_text_length)]

    class ClassifyRequest(ClassifyRequestBase):
        text: limited_text | None = Field(
            None, description=f"one query, at most {max_text_length} characters"
        )
        texts: list[limited_text] | None = Field(
            None,
            min_length=1,
            max_length=max_batch_size,
            description=f"1 to {max_batch_size} queries, each at most {max_text_length} characters",
        )

    return ClassifyRequest


class RankedIntentOut(BaseModel):
    intent: str
    score: float


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str | None
    kind: str


class PredictionOut(BaseModel):
    intent: str
    confidence: float
    low_confidence: bool = Field(
        description="confidence under the serving version's low-confidence threshold"
    )
    ranking: list[RankedIntentOut] = Field(description="best first, top-k long")
    model: ModelRef


class BatchPredictionOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="one per text, in order; all from one model version")


class ModelInfoOut(BaseModel):
    ready: bool
    mode: str = Field(
        description="alias (follows the registry alias), uri (a fixed URI) or hf (HF_INTENT_MODEL)"
    )
    model_uri: str
    name: str | None
    version: str | None
    alias: str | None
    kind: str | None
    labels: list[str]
    low_confidence_threshold: float | None
    loaded_at: str | None
    source: str | None
    acceleration: str | None = Field(description="none, onnx or onnx-int8: how the model runs")
    inference_threads: int = Field(description="intra-op threads of this worker")
    last_poll: str | None
    last_error: str | None
    reload_successes: int
    reload_failures: int
    poll_interval_s: float | None


class ReloadOut(BaseModel):
    outcome: str = Field(description="swapped, unchanged, skipped, failed or unreachable")
    version: str | None
    error: str | None


def format_validation_errors(error: RequestValidationError) -> str:
    """One readable line per problem: 'body.texts.3: String should have at most 2000 characters'."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item.get("loc", ()))
        if item.get("type") == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            position = item["loc"][-1] if len(item.get("loc", ())) > 1 else "?"
            lines.append(f"invalid JSON at character {position}: {reason}".rstrip(": "))
            continue
        message = str(item.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        kind = item.get("type")
        if kind == "string_too_long":
            message = f"text too long: {message}"
        elif kind == "too_long" and item.get("loc", ())[-1:] == ("texts",):
            message = f"batch too large: {message}"
        if item.get("type") == "missing" and item.get("loc") == ("body",):
            message = 'the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}'
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def jsonable_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's error list without the raw input (a 2000-character text echoed back) and exceptions."""
    cleaned = []
    for item in error.errors():
        entry = {key: item[key] for key in ("type", "loc", "msg") if key in item}
        context = item.get("ctx")
        if context:
            entry["ctx"] = {
                key: value if isinstance(value, int | float | str | bool) else str(value)
                for key, value in context.items()
            }
        cleaned.append(entry)
    return cleaned
