"""Every alias move of the registered intent classifier: promote, rollback, history, status.

MLflow aliases say what is deployed now but keep no record of who moved them or what held them before
(mlflow issue #2169), and stages are deprecated. This module moves aliases only through `move_alias`,
which records each move as tags, so the registry itself is the audit log:

- on the registered model, one tag per move, `alias_move.<n>` (n zero-padded to 6 digits, 1-based) whose
  value is a small JSON object {"n", "alias", "action", "from", "to", "who", "when", "reason", "via"},
  plus the counter `alias_moves.count`;
- the same tag `alias_move.<n>` on the version the alias moved to and on the version it left.

Each tag value is bounded (the reason is cut to MAX_REASON_CHARS) and well under MLflow's tag value limit.
A move made elsewhere (MLflow UI, a bare MlflowClient) is detected by comparing each alias' current target
with the last recorded move for that alias; `alias_history` reports it as made outside the CLI, and the next
recorded move writes it into the log first (who/when unknown) so the chain from -> to stays unbroken.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "intent-classifier"
STAGING = "staging"
PRODUCTION = "production"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

MOVE_TAG_PREFIX = "alias_move."
MOVE_COUNT_TAG = "alias_moves.count"
MAX_REASON_CHARS = 1000
MAX_WHO_CHARS = 200
VIAS = ("cli", "evaluation", "api")
OUTSIDE_VIA = "outside_cli"
ZERO_SHOT_KIND_PREFIX = "zero_shot"
ZERO_SHOT_NAMES = ("zero-shot", "zero_shot", "zeroshot")


class RegistryError(Exception):
    """An expected registry failure; its message is one line meant for the operator."""


class PromotionRefused(RegistryError):
    """`promote` will not move `production` to the requested version."""


class RollbackImpossible(RegistryError):
    """`rollback` has no valid version to move `production` back to."""


@dataclass(frozen=True)
class AliasMove:
    """One move of one alias: recorded by this module, or detected as made outside the CLI."""

    number: int | None  # the n of the `alias_move.<n>` tag; None for an outside move not yet written down
    alias: str
    action: str  # promote | force_promote | rollback | set | outside
    from_version: int | None
    to_version: int | None  # None: the alias was removed
    who: str | None
    when: str | None  # UTC ISO 8601; None when unknown (outside moves)
    reason: str | None
    via: str  # cli | evaluation | api | outside_cli
    recorded: bool = True

    @property
    def outside_cli(self) -> bool:
        """True for a move made in the MLflow UI or with a bare MlflowClient."""
        return self.via == OUTSIDE_VIA

    def to_tag_value(self) -> str:
        """The compact JSON stored in the `alias_move.<n>` tag."""
        return json.dumps(
            {"n": self.number, "alias": self.alias, "action": self.action, "from": self.from_version,
             "to": self.to_version, "who": self.who, "when": self.when, "reason": self.reason,
             "via": self.via},
            ensure_ascii=False, separators=(",", ":"),
        )

    @classmethod
    def from_tag_value(cls, value: str) -> AliasMove:
        """Parse a stored `alias_move.<n>` tag value."""
        data = json.loads(value)
        return cls(
            number=int(data["n"]), alias=str(data["alias"]), action=str(data.get("action") or "set"),
            from_version=_optional_int(data.get("from")), to_version=_optional_int(data.get("to")),
            who=data.get("who"), when=data.get("when"), reason=data.get("reason"),
            via=str(data.get("via") or "api"), recorded=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for `status --json`)."""
        return {**asdict(self), "outside_cli": self.outside_cli}


def tracking_uri() -> str:
    """The tracking/registry URI: env MLFLOW_TRACKING_URI, else the project's sqlite database."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def get_client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient whose tracking and registry URIs are both `uri` (default: `tracking_uri()`)."""
    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def current_user() -> str:
    """The OS user running the command (the default `who` of a move)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # containers without a passwd entry for the uid
        return os.environ.get("USER") or "unknown"


def utc_now_iso() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def move_alias(
    client: MlflowClient,
    alias: str,
    version: int | str,
    *,
    name: str = DEFAULT_MODEL_NAME,
    reason: str | None,
    who: str | None = None,
    via: str = "cli",
    action: str = "set",
) -> AliasMove:
    """Point `alias` at `version` and record the move (who, when, from, to, reason, via) as tags."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, got {via!r}")
    model = _get_registered_model(client, name)
    target = _get_version(client, name, version)
    to_version = int(target.version)
    current = _optional_int(model.aliases.get(alias))
    recorded = _recorded_moves(model.tags)
    next_number = max([m.number for m in recorded] + [_optional_int(model.tags.get(MOVE_COUNT_TAG)) or 0]) + 1

    # The alias is the truth, so it moves first: if writing the record then fails, the move still shows,
    # as a move made outside the CLI, instead of a record claiming a move that never happened.
    client.set_registered_model_alias(name, alias, str(to_version))
    moves: list[AliasMove] = []
    last_to = _last_recorded_targets(recorded).get(alias)
    if last_to != current:
        moves.append(AliasMove(
            number=next_number, alias=alias, action="outside", from_version=last_to, to_version=current,
            who=None, when=None, via=OUTSIDE_VIA,
            reason=f"moved outside the CLI; noticed at the next recorded move ({utc_now_iso()})",
        ))
        next_number += 1
    moves.append(AliasMove(
        number=next_number, alias=alias, action=action, from_version=current, to_version=to_version,
        who=_bounded(who or current_user(), MAX_WHO_CHARS), when=utc_now_iso(),
        reason=_bounded((reason or "").strip(), MAX_REASON_CHARS) or None, via=via,
    ))
    for move in moves:
        key = _move_tag_key(move.number)
        value = move.to_tag_value()
        client.set_registered_model_tag(name, key, value)
        for involved in {move.from_version, move.to_version} - {None}:
            try:
                client.set_model_version_tag(name, str(involved), key, value)
            except MlflowException:  # the version left behind may have been deleted since
                logger.debug("version %s of %s is gone; move %s tagged on the model only",
                             involved, name, key)
    client.set_registered_model_tag(name, MOVE_COUNT_TAG, str(next_number))
    move = moves[-1]
    logger.info("alias %r of %s: version %s -> %s (%s by %s via %s)", alias, name,
                move.from_version, move.to_version, action, move.who, via)
    return move


def promote(
    client: MlflowClient,
    *,
    version: int | str | None = None,
    from_alias: str = STAGING,
    force: bool = False,
    reason: str | None = None,
    who: str | None = None,
    name: str = DEFAULT_MODEL_NAME,
    via: str = "cli",
) -> AliasMove:
    """Move `production` to `version` (default: the version holding `from_alias`) if its gates passed."""
    reason = (reason or "").strip() or None
    if force and not reason:
        raise PromotionRefused("--force needs a non-empty --reason (it is recorded in the alias history)")
    model = _get_registered_model(client, name)
    via_alias = version is None
    if version is None:
        held = model.aliases.get(from_alias)
        if held is None:
            raise PromotionRefused(
                f"no version of '{name}' holds the alias '{from_alias}'; pass --version N "
                f"(aliases now: {_format_aliases(model.aliases)})"
            )
        version = held
    target = _get_version(client, name, version)
    number = int(target.version)
    if target.status != "READY":
        raise PromotionRefused(f"version {number} of '{name}' is not ready (status {target.status})")
    if _optional_int(model.aliases.get(PRODUCTION)) == number:
        raise PromotionRefused(f"version {number} of '{name}' already holds '{PRODUCTION}'; nothing to do")
    gate = target.tags.get("gate_passed")
    action = "promote"
    if gate != "true":
        if not force:
            raise PromotionRefused(
                f"version {number} of '{name}' did not pass the evaluation gates "
                f"(gate_passed={gate if gate is not None else 'missing'}); "
                "to promote it anyway use --force --reason '...'"
            )
        action = "force_promote"
    if reason is None and via_alias:
        reason = f"promoted from '{from_alias}'"
    return move_alias(client, PRODUCTION, number, name=name, reason=reason, who=who, via=via, action=action)


def rollback(
    client: MlflowClient,
    *,
    to: int | str | None = None,
    reason: str | None = None,
    who: str | None = None,
    name: str = DEFAULT_MODEL_NAME,
    via: str = "cli",
) -> AliasMove:
    """Move `production` back: by default to the previous production version (else the zero-shot version),
    to the newest zero-shot version with `to="zero-shot"`, or to version `to`."""
    model = _get_registered_model(client, name)
    current = _optional_int(model.aliases.get(PRODUCTION))
    if to is None:
        target, why = default_rollback_target(client, name)
        if target is None:
            raise RollbackImpossible(
                f"nothing to roll back to: the history of '{name}' holds no earlier '{PRODUCTION}' version "
                f"(now: {current if current is not None else 'none'}) and no other zero-shot version exists; "
                "use --to N"
            )
        reason = reason or f"default target: {why}"
    elif str(to).strip().lower() in ZERO_SHOT_NAMES:
        zero_shot = find_zero_shot_version(client, name)
        if zero_shot is None:
            raise RollbackImpossible(
                f"no version of '{name}' has a kind starting with '{ZERO_SHOT_KIND_PREFIX}'; "
                "a default training run registers one"
            )
        target = int(zero_shot.version)
    else:
        try:
            requested = int(str(to).strip())
        except ValueError:
            raise RollbackImpossible(f"--to takes a version number or 'zero-shot', got {to!r}") from None
        target = int(_get_version(client, name, requested).version)
    if target == current:
        raise RollbackImpossible(f"version {target} of '{name}' already holds '{PRODUCTION}'; nothing to do")
    return move_alias(client, PRODUCTION, target, name=name, reason=reason, who=who, via=via,
                      action="rollback")


def alias_history(client: MlflowClient, name: str = DEFAULT_MODEL_NAME) -> list[AliasMove]:
    """Every alias move, oldest first; moves made outside the CLI and not yet recorded come last."""
    model = _get_registered_model(client, name)
    recorded = _recorded_moves(model.tags)
    return recorded + _unrecorded_outside_moves(model.aliases, recorded)


def production_lineage(history: list[AliasMove]) -> list[int]:
    """The stack of production versions the history implies: a promote pushes, a rollback pops back."""
    lineage: list[int] = []
    for move in history:
        if move.alias != PRODUCTION or move.to_version is None:
            continue
        if move.action == "rollback":
            if move.to_version in lineage:
                # Rolling back to v drops everything put in production after v: those are the bad ones.
                del lineage[len(lineage) - lineage[::-1].index(move.to_version):]
            else:
                if lineage and lineage[-1] == move.from_version:
                    lineage.pop()
                lineage.append(move.to_version)
        elif not lineage or lineage[-1] != move.to_version:
            lineage.append(move.to_version)
    return lineage


def previous_production_version(client: MlflowClient, name: str = DEFAULT_MODEL_NAME) -> int | None:
    """The default rollback target: the newest earlier production version that still exists."""
    model = _get_registered_model(client, name)
    current = _optional_int(model.aliases.get(PRODUCTION))
    history = alias_history(client, name)
    existing = {int(v.version) for v in _all_versions(client, name)}
    for candidate in reversed(production_lineage(history)):
        if candidate != current and candidate in existing:
            return candidate
    return None


def default_rollback_target(client: MlflowClient, name: str = DEFAULT_MODEL_NAME) -> tuple[int | None, str]:
    """Where `rollback` with no target goes: the previous production version, else the zero-shot fallback."""
    previous = previous_production_version(client, name)
    if previous is not None:
        return previous, "the previous production version"
    # A fresh project has no earlier production version; the zero-shot version every default run registers
    # is the rollback target that always exists.
    current = _optional_int(_get_registered_model(client, name).aliases.get(PRODUCTION))
    zero_shot = find_zero_shot_version(client, name)
    if zero_shot is not None and int(zero_shot.version) != current:
        return int(zero_shot.version), ("no earlier production version recorded: "
                                        "fell back to the zero-shot version")
    return None, "nothing to roll back to"


def find_zero_shot_version(client: MlflowClient, name: str = DEFAULT_MODEL_NAME) -> ModelVersion | None:
    """The newest version whose `kind` tag starts with "zero_shot" (the always-present rollback target)."""
    zero_shot = [v for v in _all_versions(client, name)
                 if str(v.tags.get("kind", "")).startswith(ZERO_SHOT_KIND_PREFIX)]
    return max(zero_shot, key=lambda v: int(v.version), default=None)


def registry_status(client: MlflowClient, name: str = DEFAULT_MODEL_NAME) -> dict[str, Any]:
    """Versions (kind, created, metrics, gate, aliases), current aliases and the alias history."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return {"model": name, "registered": False, "aliases": {}, "versions": [], "history": [],
                "outside_moves": [], "rollback_target": None,
                "rollback_target_reason": "nothing to roll back to"}
    aliases = {alias: int(v) for alias, v in sorted(model.aliases.items())}
    aliases_by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        aliases_by_version.setdefault(v, []).append(alias)
    versions = [
        {
            "version": int(v.version),
            "kind": v.tags.get("kind"),
            "created": _ms_to_iso(v.creation_timestamp),
            "accuracy": _optional_float(v.tags.get("accuracy")),
            "macro_f1": _optional_float(v.tags.get("macro_f1")),
            "gate_passed": v.tags.get("gate_passed"),
            "aliases": aliases_by_version.get(int(v.version), []),
            "status": v.status,
            "run_id": v.run_id,
        }
        for v in sorted(_all_versions(client, name), key=lambda v: int(v.version))
    ]
    history = alias_history(client, name)
    rollback_target, rollback_why = default_rollback_target(client, name)
    return {
        "model": name,
        "registered": True,
        "aliases": aliases,
        "versions": versions,
        "history": [m.to_dict() for m in history],
        "outside_moves": [m.to_dict() for m in history if m.outside_cli and not m.recorded],
        "rollback_target": rollback_target,
        "rollback_target_reason": rollback_why,
    }


def _recorded_moves(tags: dict[str, str]) -> list[AliasMove]:
    """The moves stored as `alias_move.<n>` tags, ordered by n."""
    moves = []
    for key, value in tags.items():
        if not key.startswith(MOVE_TAG_PREFIX):
            continue
        try:
            moves.append(AliasMove.from_tag_value(value))
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring unreadable alias history tag %s: %s", key, error)
    return sorted(moves, key=lambda m: m.number)


def _last_recorded_targets(recorded: list[AliasMove]) -> dict[str, int | None]:
    """alias -> the version its last recorded move pointed to."""
    return {move.alias: move.to_version for move in recorded}


def _unrecorded_outside_moves(aliases: dict[str, str], recorded: list[AliasMove]) -> list[AliasMove]:
    """Aliases whose current target differs from their last recorded move: moved outside the CLI."""
    last_to = _last_recorded_targets(recorded)
    current = {alias: int(v) for alias, v in aliases.items()}
    return [
        AliasMove(number=None, alias=alias, action="outside", from_version=last_to.get(alias),
                  to_version=current.get(alias), who=None, when=None, reason=None, via=OUTSIDE_VIA,
                  recorded=False)
        for alias in sorted(set(current) | set(last_to))
        if current.get(alias) != last_to.get(alias)
    ]


def _get_registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"no registered model named '{name}' at {client.tracking_uri}; "
                "run `intent-pipeline train` first"
            ) from None
        raise


def _get_version(client: MlflowClient, name: str, version: int | str) -> ModelVersion:
    try:
        number = int(str(version).strip())
    except ValueError:
        raise RegistryError(f"a version is a number, got {version!r}") from None
    try:
        return client.get_model_version(name, str(number))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"version {number} of '{name}' does not exist") from None
        raise


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    versions: list[ModelVersion] = []
    page_token = None
    escaped = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name='{escaped}'", page_token=page_token)
        versions.extend(page)
        page_token = page.token
        if not page_token:
            return versions


def _move_tag_key(number: int) -> str:
    return f"{MOVE_TAG_PREFIX}{number:06d}"


def _format_aliases(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _optional_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
