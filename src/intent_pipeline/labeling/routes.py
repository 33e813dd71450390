"""The labeling API (`/api/v1/labeling`) and the labeling page (`/expert/labeling`).

Auth matrix (bearer tokens from the environment, compared in constant time):

    route                           INTENT_EXPERT_TOKEN  INTENT_ADMIN_TOKEN  no token  other token
    GET  /api/v1/labeling/queue     200                  200                 401       403
    POST /api/v1/labeling/items/ID  200                  200                 401       403
    GET  /api/v1/labeling/export    403                  200                 401       403
    GET  /expert/labeling           public (the page holds no data; it asks for a token)

A route none of whose tokens is configured answers 503 naming the variable to set.
"""

# No `from __future__ import annotations` here: FastAPI must evaluate Annotated[..., Depends(expert_auth)]
# while the closure variable is in scope.
import hmac
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.exc import SQLAlchemyError

from intent_pipeline.labeling.export import MEDIA_TYPES, iter_export_lines
from intent_pipeline.labeling.store import ItemConflict, ItemNotFound, LabelingStore

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1/labeling"
PAGE_PATH = "/expert/labeling"
EXPERT_TOKEN_ENV = "INTENT_EXPERT_TOKEN"
ADMIN_TOKEN_ENV = "INTENT_ADMIN_TOKEN"
EXPORT_FILENAME = "intent_training_data"
_bearer = HTTPBearer(auto_error=False, description="INTENT_EXPERT_TOKEN or INTENT_ADMIN_TOKEN")


# --- schemas ----------------------------------------------------------------------------------------------

class LabelingItem(BaseModel):
    """A captured query as the queue shows it."""

    id: int
    text: str
    predicted_intent: str | None
    confidence: float | None
    ranking: list[dict[str, Any]] | None
    model_version: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    status: Literal["pending", "labeled", "skipped"]
    label: str | None
    labeled_by: str | None
    labeled_at: datetime | None


class QueueResponse(BaseModel):
    """One page of pending items, the total pending, and the label set to choose from."""

    items: list[LabelingItem]
    total: int
    limit: int
    offset: int
    order: Literal["confidence", "frequency"]
    labels: list[str]


class LabelDecision(BaseModel):
    """An expert's decision on one item: {"label": "calculator"} or {"skip": true}."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, min_length=1, max_length=200)
    skip: bool = False
    labeled_by: str | None = Field(None, max_length=200, description="default: the token's role")

    @model_validator(mode="after")
    def _label_xor_skip(self) -> Self:
        if (self.label is None) == (not self.skip):
            raise ValueError('send either {"label": "<label>"} or {"skip": true}, not both and not neither')
        return self


# --- auth -------------------------------------------------------------------------------------------------

def _secret_value(token: SecretStr | str | None) -> str | None:
    """The token as a string; None when unset or blank (an empty token must not let an empty bearer in)."""
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    return value if value and value.strip() else None


def _bearer_auth(tokens: dict[str, str | None], unconfigured_message: str) -> Callable[..., str]:
    """A dependency that returns the role whose token was presented: 503 / 401 / 403 otherwise."""
    configured = {role: token.encode("utf-8") for role, token in tokens.items() if token}

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
        if not configured:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, unconfigured_message)
        if credentials is None or not credentials.credentials:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                "missing token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        presented = credentials.credentials.encode("utf-8")
        matched = None
        for role, token in configured.items():  # every token compared, in constant time each
            if hmac.compare_digest(presented, token) and matched is None:
                matched = role
        if matched is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token may not use this route")
        return matched

    return authorize


@contextmanager
def _store_errors() -> Iterator[None]:
    """A database failure (read-only file, server down) answers 503, not a stack trace."""
    try:
        yield
    except SQLAlchemyError as error:
        logger.warning("labeling store error: %s", (str(error).splitlines() or [""])[0][:200])
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the labeling store is unavailable") from None


def _current_labels(labels_provider: Callable[[], list[str]]) -> list[str]:
    try:
        return list(labels_provider() or [])
    except Exception:  # noqa: BLE001 - e.g. no model loaded yet; the queue still shows
        logger.warning("labels_provider failed", exc_info=True)
        return []


# --- routers ----------------------------------------------------------------------------------------------

def create_labeling_router(store: LabelingStore, labels_provider: Callable[[], list[str]],
                           expert_token: SecretStr | str | None, admin_token: SecretStr | str | None
                           ) -> APIRouter:
    """The labeling API: pending queue, label/skip decisions, and the export (see the module docstring)."""
    expert, admin = _secret_value(expert_token), _secret_value(admin_token)
    expert_auth = _bearer_auth(
        {"expert": expert, "admin": admin},
        f"labeling is not configured: set {EXPERT_TOKEN_ENV} (experts) or {ADMIN_TOKEN_ENV} on the server",
    )
    admin_auth = _bearer_auth({"admin": admin},
                              f"the export is not configured: set {ADMIN_TOKEN_ENV} on the server")
    router = APIRouter(prefix=API_PREFIX, tags=["labeling"])

    @router.get("/queue", response_model=QueueResponse)
    def queue(_role: Annotated[str, Depends(expert_auth)],
              limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
              order: Literal["confidence", "frequency"] = "confidence") -> QueueResponse:
        """Pending items: least confident first (order=confidence) or most seen first (order=frequency)."""
        with _store_errors():
            page = store.queue(limit=limit, offset=offset, order=order)
        return QueueResponse(items=page.items, total=page.total, limit=limit, offset=offset, order=order,
                             labels=_current_labels(labels_provider))

    @router.post("/items/{item_id}", response_model=LabelingItem,
                 responses={404: {"description": "no such item"}, 409: {"description": "already decided"},
                            422: {"description": "label outside the label set"}})
    def decide(item_id: int, decision: LabelDecision, role: Annotated[str, Depends(expert_auth)]
               ) -> LabelingItem:
        """Label ({"label": ...}) or skip ({"skip": true}) an item; 409 with the current label if decided."""
        who = (decision.labeled_by or "").strip() or role
        try:
            with _store_errors():
                if decision.skip:
                    item = store.skip_item(item_id, who)
                else:
                    allowed = _current_labels(labels_provider)
                    if not allowed:
                        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                            "the label set is not available yet (no model loaded)")
                    if decision.label not in allowed:
                        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {
                            "message": f"label {decision.label!r} is not in the label set; allowed: "
                                       + ", ".join(allowed),
                            "label": decision.label, "allowed": allowed})
                    item = store.label_item(item_id, decision.label, who)
        except ItemNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no labeling item with id {item_id}") from None
        except ItemConflict as conflict:
            current = conflict.current
            raise HTTPException(status.HTTP_409_CONFLICT, jsonable_encoder({
                "message": f"item {item_id} is already {current['status']}"
                           + (f" as {current['label']!r}" if current["label"] else "")
                           + (f" by {current['labeled_by']}" if current["labeled_by"] else ""),
                **{key: current[key] for key in ("id", "status", "label", "labeled_by", "labeled_at")},
            })) from None
        return LabelingItem(**item)

    @router.get("/export", response_class=StreamingResponse,
                responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}})
    def export(_role: Annotated[str, Depends(admin_auth)],
               format: Annotated[Literal["jsonl", "csv"], Query(description="jsonl or csv")] = "jsonl",  # noqa: A002
               ) -> StreamingResponse:
        """Every labeled item in the export contract (text, label, id, labeled_by, labeled_at, ...)."""
        with _store_errors():  # the first batch is read here so a dead store is a 503, not a cut stream
            items = store.iter_labeled()
            first = next(items, None)
        rows = items if first is None else itertools.chain([first], items)
        return StreamingResponse(
            iter_export_lines(rows, format), media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}.{format}"',
                     "Cache-Control": "no-store"},
        )

    return router


@cache
def _static(name: str) -> str:
    return resources.files("intent_pipeline.labeling").joinpath("static", name).read_text(encoding="utf-8")


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Query texts come from users: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
}


def create_labeling_page_router() -> APIRouter:
    """The labeling page at /expert/labeling (plain HTML + JS, Italian), and its script and stylesheet."""
    router = APIRouter(tags=["labeling"], include_in_schema=False)

    @router.get(PAGE_PATH, response_class=HTMLResponse)
    def labeling_page() -> HTMLResponse:
        return HTMLResponse(_static("labeling.html"), headers=_PAGE_HEADERS)

    @router.get(f"{PAGE_PATH}/labeling.js")
    def labeling_script() -> Response:
        return Response(_static("labeling.js"), media_type="text/javascript; charset=utf-8",
                        headers=_PAGE_HEADERS)

    @router.get(f"{PAGE_PATH}/labeling.css")
    def labeling_stylesheet() -> Response:
        return Response(_static("labeling.css"), media_type="text/css; charset=utf-8", headers=_PAGE_HEADERS)

    return router
