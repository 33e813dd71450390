"""`intent-pipeline`: train, status, promote, rollback, serve, export.

Exit codes: 0 ok; 1 refused or failed, with a one-line reason on stderr (no stack trace for expected errors;
`--debug` shows it); 2 bad command line (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_LABELING_STORE_URL = "sqlite:///labeling.db"


class CommandFailed(Exception):
    """An expected failure of a command; main() prints its one-line message and exits 1."""


@click.group(name="intent_pipeline")
def cli() -> None:
    """Kedro imports `<package>.cli:cli` for project commands; ours are in the `intent-pipeline` command."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `intent-pipeline` console script; returns the exit code."""
    parser = build_parser()
    try:
        # `train` hands every option it does not know to `kedro run`; other commands reject them.
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.kedro_args = unknown
    except SystemExit as exit_:  # --help (0) or a bad command line (2): keep main() returning a code
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from mlflow.exceptions import MlflowException

    from intent_pipeline.registry import RegistryError

    try:
        return int(args.handler(args) or 0)
    except (CommandFailed, RegistryError, MlflowException) as error:
        if args.debug:
            raise
        # MLflow messages (an unreachable server, a bad URI) can span lines: the first one says what failed.
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"intent-pipeline {args.command}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"intent-pipeline {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; the common options are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS on the sub-parsers so a value given before the command is not reset by the sub-parser default.
    common.add_argument("--tracking-uri", default=argparse.SUPPRESS,
                        help="MLflow tracking/registry URI (default: env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    common.add_argument("--model-name", default=argparse.SUPPRESS,
                        help="registered model name (default: intent-classifier)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="verbose logs and full tracebacks")

    parser = argparse.ArgumentParser(
        prog="intent-pipeline",
        description="Train, judge, ship and roll back the intent classifier "
                    "(MLflow aliases staging/production).",
        epilog="Every command also takes --tracking-uri URI, --model-name NAME and --debug. "
               "Exit codes: 0 ok, 1 refused or failed (one line on stderr), 2 bad command line.",
    )
    parser.add_argument("--tracking-uri", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-name", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", parents=[common],
                                 help="versions, metrics, gates, aliases, history")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_status)

    promote = commands.add_parser("promote", parents=[common], help="move 'production' to a gated version")
    source = promote.add_mutually_exclusive_group()
    source.add_argument("--version", type=int, help="the version to promote")
    # No default here: argparse's exclusivity check cannot tell "--from staging" from a "staging" default.
    source.add_argument("--from", dest="from_alias", default=None,
                        help="promote the version holding this alias (default: staging)")
    promote.add_argument("--force", action="store_true",
                         help="promote even if its gates failed (needs --reason)")
    promote.add_argument("--reason", help="why (recorded in the alias history)")
    promote.add_argument("--who", help="who moves it (default: the OS user)")
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser("rollback", parents=[common], help="move 'production' back")
    rollback.add_argument("--to", help="a version number or 'zero-shot' (default: the previous production "
                                       "version, else the newest zero-shot version)")
    rollback.add_argument("--reason", help="why (recorded in the alias history)")
    rollback.add_argument("--who", help="who moves it (default: the OS user)")
    rollback.set_defaults(handler=_rollback)

    train = commands.add_parser(
        "train", parents=[common], allow_abbrev=False,
        help="run the Kedro pipeline (default: data_engineering -> training -> evaluation)",
        description="Runs `kedro run` in the project; every argument after `train` is passed to it, "
                    "e.g. `intent-pipeline train --pipelines training --params training.seed=1`.",
    )
    train.add_argument("--project-dir", type=Path, help="the Kedro project root (default: found from here)")
    train.add_argument("--strict", action="store_true",
                       help="fail (exit 1) when no candidate passes the evaluation gates")
    train.set_defaults(handler=_train)

    serve = commands.add_parser("serve", parents=[common], help="serve the classifier over HTTP")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                       help="server log level (default info)")
    serve.set_defaults(handler=_serve)

    export = commands.add_parser("export", parents=[common], help="export labeled queries for training")
    export.add_argument("--out", type=Path, required=True, help="output file")
    export.add_argument("--format", dest="fmt", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--store-url",
                        help="labeling store URL (default: env LABELING_STORE_URL, "
                             f"else {DEFAULT_LABELING_STORE_URL})")
    export.set_defaults(handler=_export)
    return parser


def _client_and_name(args: argparse.Namespace):
    from intent_pipeline.registry import DEFAULT_MODEL_NAME, get_client, tracking_uri

    uri = args.tracking_uri or tracking_uri()
    missing = missing_sqlite_file(uri)
    if missing is not None:
        # MLflow would silently create an empty database here; in the wrong folder that hides the real one.
        raise CommandFailed(f"no MLflow database at {missing}: run from the project folder, "
                            "run `intent-pipeline train` first, or pass --tracking-uri")
    return get_client(uri), args.model_name or DEFAULT_MODEL_NAME


def missing_sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI when it does not exist yet, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None if path.exists() else path.resolve()


def _status(args: argparse.Namespace) -> int:
    from intent_pipeline.registry import registry_status, tracking_uri

    client, name = _client_and_name(args)
    status = registry_status(client, name)
    status["tracking_uri"] = args.tracking_uri or tracking_uri()
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        print(format_status(status))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from intent_pipeline.registry import STAGING, promote

    client, name = _client_and_name(args)
    move = promote(client, version=args.version, from_alias=args.from_alias or STAGING, force=args.force,
                   reason=args.reason, who=args.who, name=name)
    print(_describe_move(name, move))
    _warn_if_gate_failed(client, name, move.to_version)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from intent_pipeline.registry import rollback

    client, name = _client_and_name(args)
    move = rollback(client, to=args.to, reason=args.reason, who=args.who, name=name)
    print(_describe_move(name, move))
    _warn_if_gate_failed(client, name, move.to_version)
    return 0


def _with_strict_evaluation(kedro_args: list[str]) -> list[str]:
    """Add `evaluation.strict=true` to the `--params` of a kedro run command line (merging an existing one)."""
    for i, arg in enumerate(kedro_args):
        if arg == "--params" and i + 1 < len(kedro_args):
            return [*kedro_args[:i + 1], f"{kedro_args[i + 1]},evaluation.strict=true", *kedro_args[i + 2:]]
        if arg.startswith("--params="):
            return [*kedro_args[:i], f"{arg},evaluation.strict=true", *kedro_args[i + 1:]]
    return [*kedro_args, "--params", "evaluation.strict=true"]


def _train(args: argparse.Namespace) -> int:
    kedro_args = _with_strict_evaluation(list(args.kedro_args)) if args.strict else list(args.kedro_args)
    _export_tracking_uri(args)
    project_dir = (args.project_dir or find_project_root()).resolve()
    try:
        import click
        from kedro.framework.cli.project import run as kedro_run
        from kedro.framework.startup import bootstrap_project
    except ImportError as error:
        raise CommandFailed(f"training needs the [training] extra ({error}); "
                            "install with: pip install -e '.[training]'") from None
    previous_cwd = Path.cwd()
    os.chdir(project_dir)  # relative paths in the catalog and sqlite:///mlflow.db are project-relative
    try:
        bootstrap_project(project_dir)
        # kedro's own `run` command: the same options as `kedro run`, and it runs through KedroSession.
        kedro_run.main(args=kedro_args, prog_name="intent-pipeline train", standalone_mode=False)
    except click.exceptions.Exit as exit_:  # --help
        return int(exit_.exit_code or 0)
    except click.ClickException as error:
        raise CommandFailed(error.format_message()) from None
    except Exception as error:
        if args.debug:
            raise
        # Kedro has already logged the failing node with its traceback; one line is enough here.
        raise CommandFailed(f"the pipeline failed: {type(error).__name__}: {error}") from None
    finally:
        os.chdir(previous_cwd)
    return 0


def _serve(args: argparse.Namespace) -> int:
    _export_tracking_uri(args)
    if args.model_name and not os.environ.get("MODEL_URI"):
        os.environ["MODEL_URI"] = f"models:/{args.model_name}@production"
    try:
        from intent_pipeline.serving.app import run_server
    except ImportError as error:
        raise CommandFailed(f"the server cannot be imported: {error}") from None
    run_server(host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)
    return 0


def _export(args: argparse.Namespace) -> int:
    store_url = args.store_url or os.environ.get("LABELING_STORE_URL") or DEFAULT_LABELING_STORE_URL
    try:
        from intent_pipeline.labeling.export import export_labels
    except ImportError as error:
        raise CommandFailed(f"the labeling export cannot be imported: {error}") from None
    try:
        count = export_labels(store_url, args.out, args.fmt)
    except (OSError, ValueError) as error:
        raise CommandFailed(f"export to {args.out} failed: {error}") from None
    print(f"exported {count} labeled queries to {args.out} ({args.fmt})")
    return 0


def _export_tracking_uri(args: argparse.Namespace) -> None:
    if args.tracking_uri:
        # kedro-mlflow's mlflow.yml and the server's settings read the tracking URI from the env.
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder with a Kedro pyproject.toml, from `start` (cwd) up, else this package's project."""
    for folder in [(start or Path.cwd()).resolve(), *(start or Path.cwd()).resolve().parents]:
        if _is_kedro_project(folder):
            return folder
    source_project = Path(__file__).resolve().parents[2]  # src/intent_pipeline/cli.py -> project root
    if _is_kedro_project(source_project):
        return source_project
    raise CommandFailed("no Kedro project found (a pyproject.toml with [tool.kedro]); pass --project-dir")


def _is_kedro_project(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and "[tool.kedro]" in pyproject.read_text(encoding="utf-8")


def _describe_move(name: str, move) -> str:
    before = f"version {move.from_version}" if move.from_version is not None else "no version"
    reason = f": {move.reason}" if move.reason else ""
    return (f"{name}@{move.alias}: {before} -> version {move.to_version} "
            f"({move.action} by {move.who}, {move.when}){reason}")


def _warn_if_gate_failed(client, name: str, version: int | None) -> None:
    if version is None:
        return
    gate = client.get_model_version(name, str(version)).tags.get("gate_passed")
    if gate != "true":
        print(f"note: version {version} has gate_passed={gate or 'missing'}", file=sys.stderr)


def format_status(status: dict[str, Any]) -> str:
    """The human-readable `status`: versions table, aliases, alias history, outside-CLI warnings."""
    name = status["model"]
    lines = [f"Model {name}  ({status.get('tracking_uri', '')})"]
    if not status["registered"]:
        lines.append("No versions registered yet: run `intent-pipeline train`.")
        return "\n".join(lines)
    lines.append("Aliases: " + (", ".join(f"{a} -> v{v}" for a, v in status["aliases"].items()) or "none"))
    lines.append("")
    rows = [
        [str(v["version"]), v["kind"] or "?", _short_time(v["created"]), _metric(v["accuracy"]),
         _metric(v["macro_f1"]), _gate(v["gate_passed"]), ", ".join(v["aliases"])]
        for v in reversed(status["versions"])
    ]
    lines += _table(["version", "kind", "created (UTC)", "accuracy", "macro_f1", "gate", "aliases"], rows)
    lines.append("")
    lines.append("Alias history (oldest first)")
    if status["history"]:
        rows = [
            [str(m["number"]) if m["recorded"] else "-", _short_time(m["when"]) if m["when"] else "?",
             m["alias"], m["action"], _version(m["from_version"]), _version(m["to_version"]),
             m["who"] or "?", "outside CLI" if m["outside_cli"] else m["via"], m["reason"] or ""]
            for m in status["history"]
        ]
        lines += _table(["#", "when (UTC)", "alias", "action", "from", "to", "who", "via", "reason"], rows)
    else:
        lines.append("  no alias moves recorded")
    for move in status["outside_moves"]:
        lines.append(
            f"WARNING: alias '{move['alias']}' was moved outside the CLI (MLflow UI or API): now "
            f"{_version(move['to_version'])}, last recorded {_version(move['from_version'])}; "
            "who and when unknown."
        )
    target = status["rollback_target"]
    lines.append("")
    where = f"{_version(target)} ({status['rollback_target_reason']})" if target is not None else "nothing"
    lines.append(f"`rollback` with no --to goes to: {where}")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def _short_time(iso: str | None) -> str:
    return iso.replace("T", " ").removesuffix("+00:00") if iso else "?"


def _metric(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _gate(value: str | None) -> str:
    return {"true": "pass", "false": "FAIL"}.get(value or "", "-")


def _version(value: int | None) -> str:
    return f"v{value}" if value is not None else "none"


if __name__ == "__main__":
    sys.exit(main())
