"""Training nodes: validate the parameters, train every candidate kind, register each one in MLflow.

Each candidate is trained by a pure ``train_<kind>`` function (the accuracy benchmark reuses them) and
registered by ``train_and_register_candidates`` inside its own MLflow run nested in the Kedro run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import mlflow
import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from intent_pipeline.classifier import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    PACKAGED_MINILM,
    EnsembleClassifier,
    FineTunedClassifier,
    IntentClassifier,
    LinearClassifier,
    ZeroShotEmbeddingClassifier,
    ZeroShotNLIClassifier,
    resolve_model_source,
)
from intent_pipeline.model_logging import log_classifier

logger = logging.getLogger(__name__)

CandidateKind = Literal["fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli", "ensemble"]
EnsembleMember = Literal["fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli"]
CANDIDATE_KINDS: tuple[str, ...] = get_args(CandidateKind)
LINEAR_BASE_MODEL = "tfidf-word-char+logreg"
PARAMETERS_FILE = "conf/base/parameters_training.yml"
RUN_DIR_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


class FineTuningParams(BaseModel):
    """Hugging Face Trainer recipe for the ``fine_tuned`` candidate."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = PACKAGED_MINILM  # hub id, local directory or package:<module>
    seed: int = 42
    epochs: PositiveInt = 6
    learning_rate: PositiveFloat = 3e-4
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 128
    max_length: int = Field(64, ge=8, le=512)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    early_stopping_patience: int = Field(3, ge=0)  # epochs without a better validation macro-F1; 0 = off
    class_weights: Literal["none", "balanced"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress_bars: bool = True


class LinearParams(BaseModel):
    """TF-IDF word (1-2) + char_wb (2-5) n-grams and a logistic regression."""

    model_config = ConfigDict(extra="forbid")

    C: PositiveFloat = 10.0
    max_iter: PositiveInt = 2000
    class_weights: Literal["none", "balanced"] = "none"


class ZeroShotEmbeddingParams(BaseModel):
    """Label descriptions vs query embeddings; no training."""

    model_config = ConfigDict(extra="forbid")

    model: str = PACKAGED_MINILM


class ZeroShotNLIParams(BaseModel):
    """An NLI model over the label descriptions; trained only when ``nli_model`` is available offline."""

    model_config = ConfigDict(extra="forbid")

    nli_model: str | None = None
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE

    @field_validator("hypothesis_template")
    @classmethod
    def _template_has_slot(cls, template: str) -> str:
        if "{}" not in template:
            raise ValueError(f"hypothesis_template {template!r} must contain '{{}}' (the label description)")
        return template


class EnsembleParams(BaseModel):
    """Weighted average of the members' probabilities."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[EnsembleMember, PositiveFloat] = Field(
        default_factory=lambda: {"fine_tuned": 0.3, "linear": 0.7}, min_length=2)


class TrainingParams(BaseModel):
    """``params:training``; a typo or an unknown key fails the run before anything trains."""

    model_config = ConfigDict(extra="forbid")

    registered_model_name: str = Field("intent-classifier", min_length=1)
    candidates: list[CandidateKind] = Field(
        default_factory=lambda: ["fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli", "ensemble"],
        min_length=1)
    output_root: str = "data/06_models"
    # Older run folders under output_root are deleted (MLflow keeps every model); null keeps them all.
    keep_local_runs: PositiveInt | None = 3
    fine_tuning: FineTuningParams = Field(default_factory=FineTuningParams)
    linear: LinearParams = Field(default_factory=LinearParams)
    zero_shot_embedding: ZeroShotEmbeddingParams = Field(default_factory=ZeroShotEmbeddingParams)
    zero_shot_nli: ZeroShotNLIParams = Field(default_factory=ZeroShotNLIParams)
    ensemble: EnsembleParams = Field(default_factory=EnsembleParams)

    @field_validator("candidates")
    @classmethod
    def _unique_candidates(cls, candidates: list[str]) -> list[str]:
        repeated = sorted(kind for kind, count in Counter(candidates).items() if count > 1)
        if repeated:
            raise ValueError(f"candidates listed twice: {repeated}")
        return candidates

    @model_validator(mode="after")
    def _ensemble_members_are_candidates(self) -> TrainingParams:
        if "ensemble" in self.candidates:
            missing = sorted(set(self.ensemble.weights) - set(self.candidates))
            if missing:
                raise ValueError(f"ensemble.weights names {missing}, not in candidates {self.candidates}")
        return self


def parse_training_params(params: dict[str, Any] | None) -> TrainingParams:
    """Validate ``params:training``; a typo or a bad value fails naming the file and the field."""
    try:
        return TrainingParams.model_validate(params or {})
    except ValidationError as error:
        problems = "; ".join(
            f"training.{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            + (f" (got {issue['input']!r})" if issue["type"] != "missing" else "")
            for issue in error.errors())
        raise ValueError(f"{PARAMETERS_FILE}: invalid training parameters: {problems}") from error


def validate_training_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params:training`` (unknown keys and bad values fail) and fill the defaults."""
    return parse_training_params(params).model_dump(mode="json")


def run_output_dir(output_root: str | Path) -> Path:
    """A fresh directory for this run's models: <output_root>/<UTC time>-<short id>."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(output_root) / f"{stamp}-{uuid.uuid4().hex[:6]}"


def prune_run_dirs(output_root: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` run folders (``run_output_dir`` names); return the deleted ones."""
    root = Path(output_root)
    if keep is None or not root.is_dir():
        return []
    runs = sorted(path for path in root.iterdir() if path.is_dir() and RUN_DIR_NAME.fullmatch(path.name))
    stale = runs[:-keep] if len(runs) > keep else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        logger.info("Deleted %d old model folder(s) under %s (keep_local_runs: %d)", len(stale), root, keep)
    return stale


def texts_and_labels(rows: Sequence[dict[str, Any]], labels: Sequence[str], split: str
                     ) -> tuple[list[str], list[str]]:
    """Split rows into texts and labels; a label outside ``labels`` fails naming the split and row."""
    known = set(labels)
    for index, row in enumerate(rows):
        if row["label"] not in known:
            raise ValueError(f"{split} row {index}: label {row['label']!r} is not in the label set "
                             f"{list(labels)}")
    return [row["text"] for row in rows], [row["label"] for row in rows]


def score_predictions(true_labels: Sequence[str], predicted_labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 (over the labels seen in either list)."""
    return {
        "accuracy": float(accuracy_score(true_labels, predicted_labels)),
        "macro_f1": float(f1_score(true_labels, predicted_labels, average="macro", zero_division=0)),
    }


def score_classifier(classifier: IntentClassifier, rows: Sequence[dict[str, Any]], split: str = "val_split"
                     ) -> dict[str, float]:
    """Accuracy and macro-F1 of ``classifier`` on labeled rows."""
    texts, true_labels = texts_and_labels(rows, classifier.labels, split)
    probabilities = classifier.predict_proba(texts)
    predicted = [classifier.labels[i] for i in np.asarray(probabilities).argmax(axis=1)]
    return score_predictions(true_labels, predicted)


def balanced_class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> list[float]:
    """sklearn's "balanced" weights n / (k * count); a label absent from training gets weight 1."""
    counts = Counter(train_labels)
    total, n_labels = len(train_labels), len(labels)
    return [total / (n_labels * counts[label]) if counts[label] else 1.0 for label in labels]


def resolve_training_device(device: str) -> str:
    """auto -> cuda when available else cpu; cuda without a GPU fails clearly."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.fine_tuning.device is 'cuda' but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use device: auto or cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class WeightedLossTrainer(Trainer):
    """A Trainer whose cross-entropy weighs each class (``class_weights: balanced``)."""

    def __init__(self, *args: Any, class_weights: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.cross_entropy(
            outputs.logits, labels, weight=self.class_weights.to(outputs.logits.device))
        return (loss, outputs) if return_outputs else loss


def load_base_model(base_model: str, labels: Sequence[str]) -> tuple[Any, Any]:
    """Tokenizer + sequence classifier with a fresh ``labels`` head; an unloadable source fails naming it."""
    source = base_model
    try:
        source = resolve_model_source(base_model)
        tokenizer = AutoTokenizer.from_pretrained(source)
        # A base that already has a head of another size (an NLI model, an older classifier) gets a new one.
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as error:
        where = f" (resolved to {source!r})" if source != base_model else ""
        raise ValueError(f"training.fine_tuning.base_model {base_model!r}{where} cannot be loaded as a "
                         f"Hugging Face model: {error}") from error
    return tokenizer, model


def fine_tune_transformer(train_rows: Sequence[dict[str, Any]], val_rows: Sequence[dict[str, Any]],
                          labels: Sequence[str], params: FineTuningParams, work_dir: Path
                          ) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Fine-tune ``base_model`` with the Trainer; return the best epoch's model, the tokenizer, the log."""
    device = resolve_training_device(params.device)
    set_seed(params.seed)  # before the new head is initialised
    tokenizer, model = load_base_model(params.base_model, labels)
    label_ids = {label: i for i, label in enumerate(labels)}

    def encode(rows: Sequence[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        texts, row_labels = texts_and_labels(rows, labels, split)
        encodings = tokenizer(texts, truncation=True, max_length=params.max_length)
        return [{**{key: values[i] for key, values in encodings.items()}, "labels": label_ids[label]}
                for i, label in enumerate(row_labels)]

    def compute_metrics(prediction: Any) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions).argmax(axis=1)
        return score_predictions(prediction.label_ids.tolist(), predicted.tolist())

    arguments = TrainingArguments(
        output_dir=str(work_dir), seed=params.seed, num_train_epochs=params.epochs,
        learning_rate=params.learning_rate, per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size, warmup_steps=params.warmup_ratio,
        weight_decay=params.weight_decay, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch",
        # The best epoch (validation macro-F1) is reloaded at the end; checkpoints hold only the weights.
        load_best_model_at_end=True, metric_for_best_model="macro_f1", greater_is_better=True,
        save_total_limit=1, save_only_model=True, use_cpu=device == "cpu", report_to="none",
        disable_tqdm=not params.progress_bars, dataloader_num_workers=0,
        # Batches of similar lengths pad less: faster epochs on CPU.
        train_sampling_strategy="group_by_length",
    )
    class_weights = None
    if params.class_weights == "balanced":
        class_weights = torch.tensor(balanced_class_weights([row["label"] for row in train_rows], labels))
    patience = params.early_stopping_patience
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    trainer = WeightedLossTrainer(
        model=model, args=arguments, train_dataset=encode(train_rows, "train_split"),
        eval_dataset=encode(val_rows, "val_split"), data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer, compute_metrics=compute_metrics, class_weights=class_weights,
        callbacks=callbacks)
    trainer.train()
    logger.info("fine_tuned: kept %s (validation macro-F1 %s)", trainer.state.best_model_checkpoint,
                trainer.state.best_metric)
    return trainer.model, tokenizer, trainer.state.log_history


def train_fine_tuned(train_rows: Sequence[dict[str, Any]], val_rows: Sequence[dict[str, Any]],
                     label_set: dict[str, str], params: FineTuningParams, model_dir: Path,
                     metadata: dict[str, Any] | None = None) -> tuple[IntentClassifier, list[dict[str, Any]]]:
    """Fine-tune the base model and save it as a classifier (a Hugging Face directory) in ``model_dir``."""
    work_dir = model_dir.with_name(f"{model_dir.name}-checkpoints")
    model, tokenizer, log_history = fine_tune_transformer(train_rows, val_rows, list(label_set), params,
                                                          work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    # Inference truncates where training did.
    classifier = FineTunedClassifier(model, tokenizer, descriptions=dict(label_set), metadata=metadata,
                                     max_length=params.max_length, batch_size=params.eval_batch_size,
                                     device=resolve_training_device(params.device))
    classifier.save(model_dir)
    return classifier, log_history


def build_linear_pipeline(params: LinearParams) -> Pipeline:
    """TF-IDF word (1-2) and char_wb (2-5) n-grams side by side, then a logistic regression."""
    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1)),
    ])
    regression = LogisticRegression(
        C=params.C, max_iter=params.max_iter,
        class_weight="balanced" if params.class_weights == "balanced" else None)
    return make_pipeline(features, regression)


def train_linear(train_rows: Sequence[dict[str, Any]], label_set: dict[str, str], params: LinearParams,
                 model_dir: Path, metadata: dict[str, Any] | None = None) -> IntentClassifier:
    """Fit the TF-IDF + logistic regression baseline and save it in ``model_dir``."""
    texts, labels = texts_and_labels(train_rows, list(label_set), "train_split")
    pipeline = build_linear_pipeline(params).fit(texts, labels)
    classifier = LinearClassifier(pipeline, list(label_set), descriptions=dict(label_set), metadata=metadata)
    classifier.save(model_dir)
    return classifier


def build_zero_shot_embedding(label_set: dict[str, str], params: ZeroShotEmbeddingParams, model_dir: Path,
                              metadata: dict[str, Any] | None = None) -> IntentClassifier:
    """Label descriptions vs query embeddings (no training); saved in ``model_dir``."""
    classifier = ZeroShotEmbeddingClassifier.from_pretrained(
        resolve_model_source(params.model), list(label_set), dict(label_set), metadata=metadata)
    classifier.save(model_dir)
    return classifier


def nli_model_unavailable_reason(nli_model: str | None) -> str | None:
    """Why ``nli_model`` cannot be used offline, or None when its files are on this machine."""
    if not nli_model:
        return "training.zero_shot_nli.nli_model is not set"
    try:
        source = resolve_model_source(nli_model)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve means "not available"
        return f"{nli_model!r} does not resolve: {exc}"
    if Path(source).is_dir():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # a hub id counts only when it is already in the local cache: training never downloads
        snapshot_download(str(source), local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        return (f"{nli_model!r} is neither a local directory nor in the Hugging Face cache "
                f"({exc.__class__.__name__})")
    return None


def build_zero_shot_nli(label_set: dict[str, str], params: ZeroShotNLIParams, model_dir: Path,
                        metadata: dict[str, Any] | None = None) -> IntentClassifier:
    """The NLI zero-shot classifier over the label descriptions (no training); saved in ``model_dir``."""
    classifier = ZeroShotNLIClassifier.from_pretrained(
        resolve_model_source(params.nli_model), list(label_set), dict(label_set),
        hypothesis_template=params.hypothesis_template, metadata=metadata)
    classifier.save(model_dir)
    return classifier


def build_ensemble(members: dict[str, IntentClassifier], params: EnsembleParams, model_dir: Path,
                   metadata: dict[str, Any] | None = None) -> IntentClassifier:
    """Average the members' probabilities with ``params.weights``; saved in ``model_dir``."""
    classifier = EnsembleClassifier([members[kind] for kind in params.weights], list(params.weights.values()),
                                    metadata=metadata)
    classifier.save(model_dir)
    return classifier


def candidate_params(kind: str, config: TrainingParams) -> dict[str, Any]:
    """The parameters that define one candidate (logged to MLflow and hashed)."""
    if kind == "fine_tuned":
        return config.fine_tuning.model_dump(mode="json")
    if kind == "linear":
        return {**config.linear.model_dump(mode="json"), "word_ngrams": [1, 2], "char_wb_ngrams": [2, 5]}
    if kind == "zero_shot_embedding":
        return config.zero_shot_embedding.model_dump(mode="json")
    if kind == "zero_shot_nli":
        return config.zero_shot_nli.model_dump(mode="json")
    members = {member: candidate_params(member, config) for member in config.ensemble.weights}
    return {"weights": config.ensemble.weights, "members": members}


def candidate_base_model(kind: str, config: TrainingParams) -> str:
    """What a candidate is built on (a version tag): a model source, or the linear recipe."""
    if kind == "ensemble":
        return "+".join(f"{kind}:{candidate_base_model(kind, config)}" for kind in config.ensemble.weights)
    return {
        "fine_tuned": config.fine_tuning.base_model,
        "linear": LINEAR_BASE_MODEL,
        "zero_shot_embedding": config.zero_shot_embedding.model,
        "zero_shot_nli": str(config.zero_shot_nli.nli_model),
    }[kind]


def params_hash(params: dict[str, Any]) -> str:
    """sha256 of the parameters as canonical JSON."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory, or "unknown" outside a repository."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} for ``mlflow.log_params``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def ordered_candidates(candidates: Sequence[str]) -> list[str]:
    """The candidates with the ensemble last, so its members are trained first."""
    return sorted(candidates, key=lambda kind: kind == "ensemble")


def skip_reason(kind: str, config: TrainingParams) -> str | None:
    """Why a listed candidate cannot be trained in this run (None: it can)."""
    if kind == "zero_shot_nli":
        return nli_model_unavailable_reason(config.zero_shot_nli.nli_model)
    return None


def train_candidate(kind: str, train_rows: Sequence[dict[str, Any]], val_rows: Sequence[dict[str, Any]],
                    label_set: dict[str, str], config: TrainingParams, model_dir: Path,
                    trained: dict[str, IntentClassifier], metadata: dict[str, Any] | None = None
                    ) -> tuple[IntentClassifier, list[dict[str, Any]]]:
    """Train (or build) one candidate kind into ``model_dir``; return it and the Trainer's epoch log."""
    if kind == "fine_tuned":
        return train_fine_tuned(train_rows, val_rows, label_set, config.fine_tuning, model_dir, metadata)
    if kind == "linear":
        return train_linear(train_rows, label_set, config.linear, model_dir, metadata), []
    if kind == "zero_shot_embedding":
        return build_zero_shot_embedding(label_set, config.zero_shot_embedding, model_dir, metadata), []
    if kind == "zero_shot_nli":
        return build_zero_shot_nli(label_set, config.zero_shot_nli, model_dir, metadata), []
    return build_ensemble(trained, config.ensemble, model_dir, metadata), []


def log_epoch_metrics(log_history: Sequence[dict[str, Any]]) -> None:
    """Per-epoch validation metrics and training loss of the Trainer, as MLflow metric histories."""
    for entry in log_history:
        step = int(round(entry.get("epoch", 0)))
        for source, name in (("eval_macro_f1", "epoch_val_macro_f1"), ("eval_accuracy", "epoch_val_accuracy"),
                             ("eval_loss", "epoch_val_loss"), ("loss", "epoch_train_loss")):
            if source in entry:
                mlflow.log_metric(name, float(entry[source]), step=step)


def candidate_record(kind: str, run_id: str, info: Any, model_name: str, model_dir: Path,
                     train_seconds: float, base_model: str) -> dict[str, Any]:
    """The ``trained_candidates`` entry evaluation reads for one registered candidate."""
    version = info.registered_model_version
    return {
        "kind": kind, "candidate_name": kind, "run_id": run_id, "model_name": model_name,
        "model_version": None if version is None else str(version),
        "model_uri": info.model_uri if version is None else f"models:/{model_name}/{version}",
        "model_dir": str(model_dir.resolve()), "train_seconds": round(train_seconds, 2),
        "base_model": base_model,
    }


def train_and_register_candidates(train_split: list[dict[str, Any]], val_split: list[dict[str, Any]],
                                  intent_label_set: dict[str, str], data_report: dict[str, Any],
                                  training_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Train each candidate in its own nested MLflow run, log and register it; return their records."""
    config = parse_training_params(training_config)
    data_version = str(data_report["data_version"])
    commit = git_commit()
    run_dir = run_output_dir(config.output_root)
    logger.info("Training %s on %d rows (validation %d, data version %s) into %s", config.candidates,
                len(train_split), len(val_split), data_version, run_dir)
    trained: dict[str, IntentClassifier] = {}
    seconds: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    for kind in ordered_candidates(config.candidates):
        reason = skip_reason(kind, config)
        if reason:
            logger.warning("%s skipped: %s", kind, reason)
            continue
        params = candidate_params(kind, config)
        base_model = candidate_base_model(kind, config)
        tags = {"kind": kind, "base_model": base_model, "data_version": data_version, "git_commit": commit,
                "params_hash": params_hash(params)}
        with mlflow.start_run(nested=True, run_name=kind) as run:
            mlflow.set_tags({"candidate_kind": kind, "data_version": data_version})
            mlflow.log_params(flatten_params({"kind": kind, "base_model": base_model,
                                              "train_rows": len(train_split), "val_rows": len(val_split),
                                              **params}))
            started = time.perf_counter()
            classifier, log_history = train_candidate(kind, train_split, val_split, intent_label_set, config,
                                                      run_dir / kind, trained, metadata=dict(tags))
            # An ensemble costs its members' training plus its own assembly.
            members = config.ensemble.weights if kind == "ensemble" else {}
            seconds[kind] = time.perf_counter() - started + sum(seconds.get(m, 0.0) for m in members)
            trained[kind] = classifier
            validation = score_classifier(classifier, val_split)
            log_epoch_metrics(log_history)
            mlflow.log_metrics({"train_seconds": seconds[kind], "val_accuracy": validation["accuracy"],
                                "val_macro_f1": validation["macro_f1"]})
            logger.info("%s: validation accuracy %.3f, macro-F1 %.3f, %.1f s", kind, validation["accuracy"],
                        validation["macro_f1"], seconds[kind])
            info = log_classifier(classifier, name="model", tags=tags,
                                  registered_model_name=config.registered_model_name,
                                  input_example=[row["text"] for row in val_split[:2]])
            records.append(candidate_record(kind, run.info.run_id, info, config.registered_model_name,
                                            run_dir / kind, seconds[kind], base_model))
    prune_run_dirs(config.output_root, config.keep_local_runs)
    return records
