"""Accuracy benchmark: train each candidate kind on a dataset's train split, score it on its test split.

    python benchmarks/accuracy.py --dataset bundled
    python benchmarks/accuracy.py --dataset massive-it --candidates fine_tuned linear ensemble
    python benchmarks/accuracy.py --dataset my_export.jsonl --limit-train 500 \
        --set fine_tuning.learning_rate=1e-4 --set fine_tuning.epochs=8

The training code is the training pipeline's (``train_candidate``) with the project's training parameters
(conf/base + conf/local, then ``--set`` overrides). ``bundled`` and a JSONL path go through the
data_engineering split (labels from the parameters for ``bundled``, from the file for a path); MASSIVE it-IT
uses its own train / validation / test files from ../shared/datasets/raw/massive-it (read in place).
Nothing is logged to MLflow; models go to a temporary directory. Prints one row per candidate: accuracy,
macro-F1, training seconds, test size. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402
from kedro.config import OmegaConfigLoader  # noqa: E402
from kedro.io import DataCatalog, MemoryDataset  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402

from intent_pipeline.pipelines import data_engineering  # noqa: E402
from intent_pipeline.pipelines.training import nodes  # noqa: E402
from intent_pipeline.serving.acceleration import onnx_copy  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MASSIVE_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "raw" / "massive-it"
SPLITS = ("train_split", "val_split", "test_split", "intent_label_set")
logger = logging.getLogger("benchmarks.accuracy")


def load_project_parameters(runtime_params: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """The project's parameters and catalog config (conf/base merged with conf/local)."""
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base",
                               default_run_env="local", runtime_params=runtime_params or {})
    return loader["parameters"], loader["catalog"]


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a nested parameter dict."""
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator:
            raise SystemExit(f"--set {override!r}: expected key=value, e.g. fine_tuning.epochs=8")
        *parents, leaf = key.strip().split(".")
        target = params
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = yaml.safe_load(raw)
    return params


def split_with_data_engineering(raw_dir: Path, derive_labels: bool) -> dict[str, Any]:
    """Run data_engineering (validation, dedup, stratified split) on the JSONL files in ``raw_dir``."""
    parameters, catalog_config = load_project_parameters({"raw_data_dir": str(raw_dir)})
    de_params = dict(parameters["data_engineering"])
    if derive_labels:
        de_params["labels"] = None  # the label set comes from the file, as in train_intent_classifier.py
    catalog = DataCatalog.from_config({"raw_intent_labels": catalog_config["raw_intent_labels"]})
    catalog["params:data_engineering"] = MemoryDataset(de_params)
    pipeline = data_engineering.create_pipeline().to_outputs(*SPLITS)
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in SPLITS}


def read_massive(split: str) -> list[dict[str, str]]:
    """One MASSIVE it-IT file as {"text", "label"} rows (utterance, intent)."""
    path = MASSIVE_DIR / f"massive_{split}.json"
    if not path.exists():
        raise SystemExit(f"MASSIVE it-IT file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record = json.loads(line)
                try:
                    rows.append({"text": record["utt"], "label": record["intent"]})
                except KeyError as error:
                    raise SystemExit(f"{path}:{number}: no field {error}") from error
    return rows


def massive_splits() -> dict[str, Any]:
    """MASSIVE it-IT's own train / validation / test; label descriptions are the intent names in words."""
    train, val, test = read_massive("train"), read_massive("validation"), read_massive("test")
    labels = sorted({row["label"] for row in train})
    return {"train_split": train, "val_split": val, "test_split": test,
            "intent_label_set": {label: label.replace("_", " ") for label in labels}}


def stratified_subset(rows: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """About ``size`` rows keeping each label's share (at least one row per label)."""
    if size >= len(rows):
        return rows
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    subset = []
    for label_rows in by_label.values():
        rng.shuffle(label_rows)
        subset.extend(label_rows[:max(1, round(len(label_rows) * size / len(rows)))])
    rng.shuffle(subset)
    return subset


def load_dataset(name: str, work_dir: Path) -> dict[str, Any]:
    """bundled | massive-it | a JSONL path -> train/val/test splits and the label set."""
    if name == "massive-it":
        return massive_splits()
    if name == "bundled":
        return split_with_data_engineering(PROJECT_ROOT / "data" / "01_raw", derive_labels=False)
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"--dataset {name!r}: not 'bundled', 'massive-it' or an existing JSONL file")
    raw_dir = work_dir / "raw"
    raw_dir.mkdir(exist_ok=True)
    shutil.copy(path, raw_dir / f"{path.stem}.jsonl")
    return split_with_data_engineering(raw_dir, derive_labels=True)


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as an aligned text table."""
    header = ("candidate", "accuracy", "macro-F1", "train s", "test n")
    rows = [header] + [(r["candidate"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                        f"{r['train_seconds']:.1f}", str(r["test_n"])) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_benchmark(splits: dict[str, Any], config: nodes.TrainingParams, candidates: list[str],
                  work_dir: Path) -> list[dict[str, Any]]:
    """Train each candidate with the pipeline's node functions and score it on the test split."""
    trained: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    results = []
    for kind in nodes.ordered_candidates(candidates):
        reason = nodes.skip_reason(kind, config)
        if reason:
            print(f"{kind}: skipped ({reason})", flush=True)
            continue
        print(f"{kind}: training on {len(splits['train_split'])} rows ...", flush=True)
        started = time.perf_counter()
        classifier, _ = nodes.train_candidate(kind, splits["train_split"], splits["val_split"],
                                              splits["intent_label_set"], config, work_dir / kind, trained)
        members = config.ensemble.weights if kind == "ensemble" else {}
        seconds[kind] = time.perf_counter() - started + sum(seconds.get(m, 0.0) for m in members)
        trained[kind] = classifier
        scores = nodes.score_classifier(classifier, splits["test_split"], "test_split")
        results.append({"candidate": kind, **scores, "train_seconds": seconds[kind],
                        "test_n": len(splits["test_split"])})
        print(f"{kind}: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}, "
              f"{seconds[kind]:.1f} s", flush=True)
        if kind == "fine_tuned":  # what the server runs when evaluation passes it (INTENT_ACCELERATION=auto)
            int8 = onnx_copy(classifier, quantize=True, threads=None)
            scores = nodes.score_classifier(int8, splits["test_split"], "test_split")
            results.append({"candidate": "fine_tuned int8 copy", **scores, "train_seconds": seconds[kind],
                            "test_n": len(splits["test_split"])})
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, build the splits, train and score each candidate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True,
                        help="bundled | massive-it | path to a labeled JSONL export")
    parser.add_argument("--candidates", nargs="+", choices=nodes.CANDIDATE_KINDS,
                        help="kinds to train (default: training.candidates of the parameters)")
    parser.add_argument("--limit-train", type=int, help="a stratified subset of this many training rows")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training parameter, e.g. fine_tuning.epochs=8 (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results (and the parameters) to this file")
    parser.add_argument("--models-dir", type=Path,
                        help="keep the trained models here (default: a temporary directory, deleted)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    dataset = args.dataset if args.dataset in ("bundled", "massive-it") else str(Path(args.dataset).resolve())
    json_path = args.json.resolve() if args.json else None
    models_dir = args.models_dir.resolve() if args.models_dir else None
    os.chdir(PROJECT_ROOT)  # the catalog's relative paths (data/01_raw) are the project's
    parameters, _ = load_project_parameters()
    training = apply_overrides(dict(parameters["training"]), args.overrides)
    if args.candidates:
        training["candidates"] = args.candidates
    config = nodes.parse_training_params(training)
    with tempfile.TemporaryDirectory(prefix="accuracy-benchmark-") as temporary:
        work_dir = models_dir or Path(temporary)
        work_dir.mkdir(parents=True, exist_ok=True)
        splits = load_dataset(dataset, work_dir)
        if args.limit_train:
            splits["train_split"] = stratified_subset(splits["train_split"], args.limit_train,
                                                      config.fine_tuning.seed)
        sizes = ", ".join(f"{name.removesuffix('_split')} {len(splits[name])}" for name in SPLITS[:3])
        print(f"dataset {args.dataset}: {len(splits['intent_label_set'])} labels, {sizes}; "
              f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}", flush=True)
        results = run_benchmark(splits, config, config.candidates, work_dir)
    print()
    print(f"Accuracy on {args.dataset} (test split, {len(splits['test_split'])} examples)")
    print(format_table(results))
    if json_path:
        json_path.write_text(json.dumps({"dataset": args.dataset, "train_rows": len(splits["train_split"]),
                                         "parameters": config.model_dump(mode="json"), "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
