"""data_engineering nodes: validate the labeled export line by line, normalise, deduplicate, split, report.

Every row that enters is accounted for: it is kept in a split, or dropped with a reason
(a rejected line, a duplicate merged into an earlier row, a text whose labels conflict).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intent_pipeline.text import dedup_key, normalise_text

logger = logging.getLogger(__name__)

OPTIONAL_FIELDS = ("id", "labeled_by", "labeled_at", "predicted_label", "confidence", "source")
SPLITS = ("train", "val", "test")


class SplitParams(BaseModel):
    """Fractions of each label that go to validation and test; the rest trains."""

    model_config = ConfigDict(extra="forbid")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = 42

    @model_validator(mode="after")
    def _leave_rows_to_train(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("split.val_fraction + split.test_fraction must be < 1")
        return self


class DataEngineeringParams(BaseModel):
    """Strict schema of `params:data_engineering`: a misspelt key fails the run at its first node."""

    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str] | None = None
    max_rejected_fraction: float = Field(0.05, ge=0.0, le=1.0)
    conflict_policy: Literal["drop", "majority"] = "drop"
    min_examples_per_label: int = Field(200, ge=0)
    on_too_few_examples: Literal["warn", "fail"] = "warn"
    split: SplitParams = SplitParams()


class RejectedLinesError(ValueError):
    """More lines were rejected than `max_rejected_fraction` allows."""


class TooFewExamplesError(ValueError):
    """A label has fewer examples than `min_examples_per_label` and the policy is `fail`."""


def _reject(file: str, line: int, reason: str, detail: str) -> dict[str, Any]:
    return {"file": file, "line": line, "reason": reason, "detail": detail}


def _validate_line(raw: str, file: str, line: int, labels: dict[str, str] | None
                   ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Return (row, None) for a valid line, (None, rejection) otherwise."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # surrogateescape'd bytes: the line was not valid UTF-8
        return None, _reject(file, line, "invalid_utf8", "the line is not valid UTF-8")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, _reject(file, line, "invalid_json", f"not JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(record, dict):
        return None, _reject(file, line, "not_an_object", f"expected a JSON object, got {type(record).__name__}")
    for field in ("text", "label"):
        if field not in record or record[field] is None:
            return None, _reject(file, line, f"missing_{field}", f"field '{field}' is missing")
        if not isinstance(record[field], str):
            return None, _reject(file, line, "wrong_type",
                                 f"field '{field}' must be a string, got {type(record[field]).__name__}")
        if not record[field].strip():
            return None, _reject(file, line, f"empty_{field}", f"field '{field}' is empty")
    label = record["label"].strip()
    if labels is not None and label not in labels:
        return None, _reject(file, line, "unknown_label",
                             f"label '{label}' is not in the label set {sorted(labels)}")
    row = {**record, "label": label, "_file": file, "_line": line}
    return row, None


def validate_labeled_export(raw_intent_labels: dict[str, Callable[[], str]], params: dict[str, Any]
                            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check every line of every export file against the data contract; fail past the rejected fraction."""
    config = DataEngineeringParams.model_validate(params)
    if not raw_intent_labels:
        raise FileNotFoundError("no *.jsonl export found in the raw data folder (data/01_raw by default)")
    rows, rejected, blank_lines = [], [], 0
    for file in sorted(raw_intent_labels):
        for number, raw in enumerate(raw_intent_labels[file]().splitlines(), start=1):
            if not raw.strip():
                blank_lines += 1
                continue
            row, rejection = _validate_line(raw, file, number, config.labels)
            if row is not None:
                rows.append(row)
            else:
                rejected.append(rejection)
                logger.warning("rejected %s line %d (%s): %s", file, number, rejection["reason"],
                               rejection["detail"])
    if blank_lines:
        logger.info("skipped %d blank lines (not rows)", blank_lines)
    total = len(rows) + len(rejected)
    fraction = len(rejected) / total if total else 1.0
    if fraction > config.max_rejected_fraction:
        reasons = Counter(r["reason"] for r in rejected)
        raise RejectedLinesError(
            f"{len(rejected)} of {total} lines rejected ({fraction:.1%} > max_rejected_fraction "
            f"{config.max_rejected_fraction:.1%}); by reason: {dict(reasons)}; first: "
            + "; ".join(f"{r['file']} line {r['line']}: {r['detail']}" for r in rejected[:5])
        )
    return rows, rejected


def normalise_texts(validated_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise every row's text (NFC, whitespace)."""
    return [{**row, "text": normalise_text(row["text"])} for row in validated_rows]


def resolve_duplicates_and_conflicts(normalised_rows: list[dict[str, Any]], params: dict[str, Any]
                                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Merge duplicate texts; drop (or majority-vote) texts whose labels conflict; count both."""
    config = DataEngineeringParams.model_validate(params)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in normalised_rows:
        groups[dedup_key(row["text"])].append(row)
    examples, conflicts = [], []
    duplicates_merged = conflict_rows_dropped = 0
    for rows in groups.values():
        votes = Counter(row["label"] for row in rows)
        if len(votes) == 1:
            examples.append(rows[0])
            duplicates_merged += len(rows) - 1
            continue
        conflicts.append({"text": rows[0]["text"], "labels": dict(votes),
                          "lines": [f"{r['_file']}:{r['_line']}" for r in rows]})
        (top, top_votes), (_, second_votes) = votes.most_common(2)
        if config.conflict_policy == "majority" and top_votes > second_votes:
            examples.append(next(row for row in rows if row["label"] == top))
            duplicates_merged += top_votes - 1
            conflict_rows_dropped += len(rows) - top_votes
        else:
            conflict_rows_dropped += len(rows)
    for conflict in conflicts:
        logger.warning("conflicting labels for %r: %s (%s)", conflict["text"], conflict["labels"],
                       ", ".join(conflict["lines"]))
    summary = {"duplicates_merged": duplicates_merged, "conflicting_label_rows_dropped": conflict_rows_dropped,
               "conflicting_texts": conflicts, "conflict_policy": config.conflict_policy}
    return examples, summary


def build_label_set(intent_examples: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, str]:
    """The configured label -> description map, or one derived from the data when none is configured."""
    config = DataEngineeringParams.model_validate(params)
    if config.labels is not None:
        return dict(config.labels)
    return {label: label.replace("_", " ") for label in sorted({row["label"] for row in intent_examples})}


def check_examples_per_label(intent_examples: list[dict[str, Any]], intent_label_set: dict[str, str],
                             params: dict[str, Any]) -> dict[str, Any]:
    """Count examples per label against the minimum; warn or fail as configured."""
    config = DataEngineeringParams.model_validate(params)
    counts = Counter(row["label"] for row in intent_examples)
    per_label = {label: counts.get(label, 0) for label in intent_label_set}
    below = {label: n for label, n in per_label.items() if n < config.min_examples_per_label}
    if below:
        message = (f"labels below min_examples_per_label={config.min_examples_per_label}: "
                   + ", ".join(f"{label} ({n})" for label, n in below.items()))
        if config.on_too_few_examples == "fail":
            raise TooFewExamplesError(message)
        logger.warning(message)
    return {"examples_per_label": per_label, "min_examples_per_label": config.min_examples_per_label,
            "labels_below_minimum": below}


def _split_rank(text: str, seed: int) -> str:
    """A seeded pseudo-random sort key of a text that does not depend on the other rows."""
    return hashlib.sha256(f"{seed}:{dedup_key(text)}".encode()).hexdigest()


def split_examples(intent_examples: list[dict[str, Any]], params: dict[str, Any]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Stratified, seeded train/val/test split, stable when new exports add rows.

    Each label's rows are ordered by a seeded hash of their text and cut by the configured fractions. A row's
    place does not depend on the other rows, so adding an export moves at most a boundary row or two of the
    previous split: the model now in production was not trained on the new test split, and the regression
    gate compares it fairly.
    """
    split = DataEngineeringParams.model_validate(params).split
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in intent_examples:
        by_label[row["label"]].append(row)
    train, val, test = [], [], []
    for label in sorted(by_label):
        rows = sorted(by_label[label], key=lambda r: _split_rank(r["text"], split.seed))
        n_test = round(len(rows) * split.test_fraction) if len(rows) >= 3 else 0
        n_val = round(len(rows) * split.val_fraction) if len(rows) - n_test >= 2 else 0
        test += rows[:n_test]
        val += rows[n_test:n_test + n_val]
        train += rows[n_test + n_val:]
    # Rows leave without the bookkeeping fields; provenance stays in the data report. Labels are interleaved.
    rng = random.Random(split.seed)
    parts = [[{k: v for k, v in row.items() if not k.startswith("_")} for row in part] for part in (train, val, test)]
    for part in parts:
        rng.shuffle(part)
    return parts[0], parts[1], parts[2]


def data_version(train: list[dict], val: list[dict], test: list[dict]) -> str:
    """A content hash of the three splits: the same data gives the same version."""
    digest = hashlib.sha256()
    for name, part in zip(SPLITS, (train, val, test), strict=True):
        for text, label in sorted((row["text"], row["label"]) for row in part):
            digest.update(f"{name}\t{label}\t{text}\n".encode())
    return digest.hexdigest()[:12]


def build_data_report(validated_rows: list[dict[str, Any]], rejected_intent_rows: list[dict[str, Any]],
                      dedup_summary: dict[str, Any], label_count_check: dict[str, Any],
                      intent_label_set: dict[str, str], train_split: list[dict[str, Any]],
                      val_split: list[dict[str, Any]], test_split: list[dict[str, Any]]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data report (JSON + a logged table) and its headline numbers as MLflow metrics."""
    splits = dict(zip(SPLITS, (train_split, val_split, test_split), strict=True))
    dropped = dict(Counter(r["reason"] for r in rejected_intent_rows))
    if dedup_summary["duplicates_merged"]:
        dropped["duplicate"] = dedup_summary["duplicates_merged"]
    if dedup_summary["conflicting_label_rows_dropped"]:
        dropped["conflicting_labels"] = dedup_summary["conflicting_label_rows_dropped"]
    rows_in = len(validated_rows) + len(rejected_intent_rows)
    rows_kept = sum(len(part) for part in splits.values())
    if rows_in != rows_kept + sum(dropped.values()):  # the accounting promise of the report
        raise AssertionError(f"row accounting broken: in={rows_in} kept={rows_kept} dropped={dropped}")
    counts = {label: {name: sum(row["label"] == label for row in part) for name, part in splits.items()}
              for label in intent_label_set}
    report = {
        "data_version": data_version(train_split, val_split, test_split),
        "files": sorted({row["_file"] for row in validated_rows} | {r["file"] for r in rejected_intent_rows}),
        "rows_in": rows_in,
        "rows_kept": rows_kept,
        "rows_dropped": sum(dropped.values()),
        "rows_dropped_by_reason": dropped,
        "duplicates_merged": dedup_summary["duplicates_merged"],
        "conflicting_texts": dedup_summary["conflicting_texts"],
        "conflict_policy": dedup_summary["conflict_policy"],
        "rejected_lines": rejected_intent_rows,
        "labels": intent_label_set,
        "labels_below_minimum": label_count_check["labels_below_minimum"],
        "counts_per_label_per_split": counts,
        "split_sizes": {name: len(part) for name, part in splits.items()},
    }
    logger.info("data report\n%s", format_data_report(report))
    metrics = {key: {"value": float(report[key]), "step": 0}
               for key in ("rows_in", "rows_kept", "rows_dropped", "duplicates_merged")}
    metrics.update({f"split_{name}": {"value": float(n), "step": 0} for name, n in report["split_sizes"].items()})
    return report, metrics


def format_data_report(report: dict[str, Any]) -> str:
    """The data report as a plain-text table for logs and terminals."""
    lines = [f"data version {report['data_version']}  files: {', '.join(report['files'])}",
             f"rows in {report['rows_in']} = kept {report['rows_kept']} + dropped {report['rows_dropped']}"]
    for reason, n in sorted(report["rows_dropped_by_reason"].items()):
        lines.append(f"  dropped {reason:<20} {n:>6}")
    lines.append(f"conflicting texts: {len(report['conflicting_texts'])} (policy {report['conflict_policy']})")
    width = max([len(label) for label in report["counts_per_label_per_split"]] + [5])
    lines.append(f"{'label':<{width}} {'train':>6} {'val':>6} {'test':>6} {'total':>6}")
    for label, per_split in report["counts_per_label_per_split"].items():
        total = sum(per_split.values())
        lines.append(f"{label:<{width}} {per_split['train']:>6} {per_split['val']:>6} {per_split['test']:>6} "
                     f"{total:>6}")
    sizes = report["split_sizes"]
    lines.append(f"{'total':<{width}} {sizes['train']:>6} {sizes['val']:>6} {sizes['test']:>6} "
                 f"{report['rows_kept']:>6}")
    return "\n".join(lines)
