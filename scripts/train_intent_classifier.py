"""Train an intent classifier from a labeled JSONL export (the training guide's command).

    python scripts/train_intent_classifier.py --data intent_training_data.jsonl \
        --output ./intent-classifier-v1
    python scripts/train_intent_classifier.py --data intent_training_data.jsonl \
        --push-to-hub pratikoai/intent-classifier-v1 --device cuda

A thin wrapper around the Kedro pipelines: data_engineering (labels derived from the file) -> training (every
candidate registered in MLflow) -> evaluation (gates, `staging` to the champion). The chosen model (the
evaluation champion, else the fine-tuned candidate) is written to --output as a directory that
``load_classifier(DIR)`` and ``HF_INTENT_MODEL=DIR`` load; for a fine-tuned model it is a Hugging Face model
directory (config.json, weights, tokenizer). The guide's "Evaluation Results:" block is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_FILE = "intent_classifier.json"  # classifier.MANIFEST_FILE; imported lazily below to start fast
CANDIDATE_KINDS = ("fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli", "ensemble")


class TrainScriptError(RuntimeError):
    """A failure the user can fix; printed without a traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments; a missing --data file or no destination is a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="labeled JSONL export (text, label per line)")
    parser.add_argument("--output", type=Path,
                        help="directory to write the model to (default with --push-to-hub: ./<repo name>)")
    parser.add_argument("--push-to-hub", metavar="REPO",
                        help="also upload the model to this Hugging Face Hub repository")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="fine-tuning device (default: the parameters' auto)")
    parser.add_argument("--base-model", help="hub id, local directory or package:<module> to fine-tune")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs")
    parser.add_argument("--learning-rate", type=float, help="fine-tuning learning rate")
    parser.add_argument("--batch-size", type=int, help="fine-tuning batch size")
    parser.add_argument("--max-length", type=int, help="fine-tuning max tokens per text")
    parser.add_argument("--seed", type=int, help="fine-tuning seed")
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATE_KINDS,
                        help="candidate kinds to train (default: the training parameters' list)")
    parser.add_argument("--select", choices=("champion", "fine_tuned"), default="champion",
                        help="which model goes to --output: the evaluation champion (default; the fine-tuned "
                             "candidate when there is none) or always the fine-tuned candidate")
    parser.add_argument("--skip-evaluation", action="store_true",
                        help="run data_engineering and training only (writes the fine-tuned candidate)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file" if not args.data.exists()
                     else f"--data {args.data}: not a file")
    for name in ("epochs", "batch_size", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.learning_rate is not None and args.learning_rate <= 0:
        parser.error(f"--learning-rate must be > 0, got {args.learning_rate}")
    if args.output is None:
        if not args.push_to_hub:
            parser.error("give --output DIR, --push-to-hub REPO, or both")
        args.output = Path(args.push_to_hub.rstrip("/").split("/")[-1])
    args.data, args.output = args.data.resolve(), args.output.resolve()
    return args


def runtime_params(args: argparse.Namespace, raw_data_dir: Path) -> dict[str, Any]:
    """Kedro runtime params: the raw data folder, labels from the file, the fine-tuning overrides."""
    fine_tuning = {key: value for key, value in {
        "device": args.device, "base_model": args.base_model, "epochs": args.epochs,
        "learning_rate": args.learning_rate, "batch_size": args.batch_size, "max_length": args.max_length,
        "seed": args.seed,
    }.items() if value is not None}
    training: dict[str, Any] = {"fine_tuning": fine_tuning} if fine_tuning else {}
    if args.candidates:
        training["candidates"] = args.candidates
    params: dict[str, Any] = {"raw_data_dir": str(raw_data_dir), "data_engineering": {"labels": None}}
    if training:
        params["training"] = training
    return params


def stage_data(data: Path, raw_data_dir: Path) -> Path:
    """Copy the export into the folder the catalog reads (every *.jsonl there is one partition)."""
    raw_data_dir.mkdir(parents=True, exist_ok=True)
    target = raw_data_dir / f"{data.stem}.jsonl"
    shutil.copyfile(data, target)
    return target


def run_pipelines(params: dict[str, Any], pipelines: list[str]) -> tuple[list[dict], dict | None]:
    """Run the Kedro pipelines in one session; return trained_candidates and evaluation_summary (or None)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT, runtime_params=params) as session:
        catalog = session.load_context().catalog
        session.run(pipeline_names=pipelines)
    candidates = catalog.load("trained_candidates")
    summary = catalog.load("evaluation_summary") if "evaluation" in pipelines else None
    return candidates, summary


def choose_model(candidates: list[dict], summary: dict | None, select: str) -> tuple[dict, dict | None]:
    """The candidate to ship and its evaluation summary row: the champion, else the fine-tuned candidate."""
    by_name = {candidate["candidate_name"]: candidate for candidate in candidates}
    rows = {row["candidate_name"]: row for row in (summary or {}).get("candidates", [])
            if row.get("run_id") in {c["run_id"] for c in candidates}}  # never a stale summary's rows
    champion = next((name for name, row in rows.items() if row.get("champion")), None)
    if select == "champion" and champion in by_name:
        return by_name[champion], rows[champion]
    if summary is not None and select == "champion":
        print(f"No evaluation champion ({summary.get('no_champion_reason') or 'no candidate passed'}): "
              "writing the fine-tuned candidate.")
    fine_tuned = next((c for c in candidates if c["kind"] == "fine_tuned"), None)
    if fine_tuned is None:
        raise TrainScriptError(f"no fine-tuned candidate was trained (candidates: {sorted(by_name)}) and no "
                               "champion was chosen; add fine_tuned to --candidates")
    return fine_tuned, rows.get(fine_tuned["candidate_name"])


def write_model(model_dir: Path, output: Path) -> Path:
    """Copy the saved classifier to ``output`` (replacing a model written there before, nothing else)."""
    if not (model_dir / MANIFEST_FILE).exists():
        raise TrainScriptError(f"the trained model directory {model_dir} has no {MANIFEST_FILE}")
    if output.exists() and any(output.iterdir()):
        if not (output / MANIFEST_FILE).exists():
            raise TrainScriptError(f"--output {output} exists and is not a model directory; "
                                   "choose another path")
        shutil.rmtree(output)
    shutil.copytree(model_dir, output)
    return output


def evaluation_report(row: dict | None) -> str | None:
    """The guide's "Evaluation Results:" block of the chosen candidate (from its MLflow run), or None."""
    if row is None:
        return None
    try:
        import mlflow

        return mlflow.artifacts.load_text(f"runs:/{row['run_id']}/evaluation/report.txt").rstrip()
    except Exception:  # noqa: BLE001 - the report is a convenience; fall back to the summary's numbers
        return (f"Evaluation Results: {row['candidate_name']} (version {row.get('version')})\n"
                f"  Accuracy: {row['accuracy']:.3f}\n  F1 (weighted): {row['weighted_f1']:.3f}\n"
                f"  F1 (macro): {row['macro_f1']:.3f}")


def push_to_hub(model_dir: Path, repo_id: str) -> str:
    """Upload ``model_dir`` to the Hugging Face Hub repo; a hub that cannot be reached is a clear error."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    fallback = (f"the model is saved in {model_dir}; push it later with "
                f"`hf upload {repo_id} {model_dir}` or this script's --push-to-hub")
    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(folder_path=str(model_dir), repo_id=repo_id,
                                   commit_message="Upload intent classifier")
    except OfflineModeIsEnabled as error:
        raise TrainScriptError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so the Hugging Face Hub "
                               f"cannot be reached (unset it to push); {fallback}") from error
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if status in (401, 403) else ""
        raise TrainScriptError(f"--push-to-hub {repo_id}: the Hugging Face Hub refused the upload: "
                               f"HTTP {status}{hint}; {fallback}") from error
    except (OSError, ConnectionError) as error:
        raise TrainScriptError(f"--push-to-hub {repo_id}: cannot reach the Hugging Face Hub "
                               f"({type(error).__name__}: {error}); {fallback}") from error
    except Exception as error:  # httpx/requests transport errors do not share a base class with OSError
        if "connect" in type(error).__name__.lower() or "timeout" in type(error).__name__.lower():
            raise TrainScriptError(f"--push-to-hub {repo_id}: cannot reach the Hugging Face Hub "
                                   f"({type(error).__name__}: {error}); {fallback}") from error
        raise
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"


def main(argv: list[str] | None = None) -> int:
    """Run the pipelines on --data, write the chosen model to --output, optionally push it."""
    args = parse_args(argv)
    for name, value in (("KEDRO_DISABLE_TELEMETRY", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device cuda: torch {torch.__version__} sees no CUDA GPU on this machine "
                  "(install a CUDA build of torch, or use --device auto/cpu)", file=sys.stderr)
            return 2
    pipelines = ["data_engineering", "training"] + ([] if args.skip_evaluation else ["evaluation"])
    os.chdir(PROJECT_ROOT)  # mlflow.db, mlruns/ and data/ are the project's, wherever the script is run from
    try:
        with tempfile.TemporaryDirectory(prefix="intent-training-data-") as temporary:
            raw_data_dir = Path(temporary)
            stage_data(args.data, raw_data_dir)
            print(f"Training on {args.data} (pipelines: {' -> '.join(pipelines)})", flush=True)
            candidates, summary = run_pipelines(runtime_params(args, raw_data_dir), pipelines)
        if not candidates:
            raise TrainScriptError("the training pipeline produced no candidates")
        chosen, row = choose_model(candidates, summary, "fine_tuned" if args.skip_evaluation else args.select)
        output = write_model(Path(chosen["model_dir"]), args.output)
        report = evaluation_report(row)
        if report:
            print(report)
        print(f"\nModel: {chosen['candidate_name']} ({chosen['kind']}, {chosen['model_uri']}) "
              f"written to {output}")
        print(f"Serve it with HF_INTENT_MODEL={output}")
        if args.push_to_hub:
            url = push_to_hub(output, args.push_to_hub)
            print(f"Pushed to {url}; serve it with HF_INTENT_MODEL={args.push_to_hub}")
    except TrainScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
