"""`intent-pipeline` through main([...]): exit codes, stdout/stderr, and what each command hands on."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
from mlflow import MlflowClient

from intent_pipeline.cli import find_project_root, main
from intent_pipeline.registry import DEFAULT_MODEL_NAME, PRODUCTION, STAGING, get_client, move_alias


def new_registry(uri: str, template: Path, source_dir: Path, name: str = DEFAULT_MODEL_NAME) -> MlflowClient:
    """A registry at `uri` with v1 zero-shot (gate failed), v2 linear (passed), v3 fine-tuned (failed)."""
    shutil.copyfile(template, uri.removeprefix("sqlite:///"))
    client = get_client(uri)
    client.create_registered_model(name)
    source_dir.mkdir(exist_ok=True)
    for kind, gate, accuracy in [("zero_shot_embedding", "false", "0.62"), ("linear", "true", "0.93"),
                                 ("fine_tuned", "false", "0.88")]:
        client.create_model_version(name, source=str(source_dir),
                                    tags={"kind": kind, "gate_passed": gate, "accuracy": accuracy})
    return client


@pytest.fixture()
def client(mlflow_tracking, migrated_mlflow_db, tmp_path) -> MlflowClient:
    return new_registry(mlflow_tracking, migrated_mlflow_db, tmp_path / "model_src")


def production_of(client, name=DEFAULT_MODEL_NAME) -> int | None:
    value = client.get_registered_model(name).aliases.get(PRODUCTION)
    return int(value) if value is not None else None


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_promote_from_staging_then_rollback_and_status_shows_both_moves(client, capsys):
    move_alias(client, STAGING, 2, reason="champion", via="evaluation")
    capsys.readouterr()

    assert main(["promote", "--from", "staging", "--who", "alice", "--reason", "release 1"]) == 0
    out = capsys.readouterr().out
    assert "intent-classifier@production: no version -> version 2" in out and "alice" in out
    assert production_of(client) == 2

    # On a fresh project there is no earlier production version: the zero-shot version is the target.
    assert main(["rollback", "--reason", "drift"]) == 0
    captured = capsys.readouterr()
    assert "version 2 -> version 1" in captured.out
    assert "note: version 1 has gate_passed=false" in captured.err
    assert production_of(client) == 1

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    history = out.split("Alias history (oldest first)")[1]
    promote_row = next(line for line in history.splitlines() if "promote" in line)
    rollback_row = next(line for line in history.splitlines() if "rollback" in line)
    assert promote_row.split()[3:7] == ["production", "promote", "none", "v2"]
    assert "alice" in promote_row and "release 1" in promote_row
    assert rollback_row.split()[3:7] == ["production", "rollback", "v2", "v1"]
    assert "drift" in rollback_row
    assert "`rollback` with no --to goes to: nothing" in out


def test_rollback_to_zero_shot_and_to_a_version(client, capsys):
    assert main(["promote", "--version", "2"]) == 0
    assert main(["rollback", "--to", "zero-shot"]) == 0
    assert production_of(client) == 1
    assert main(["rollback", "--to", "2", "--reason", "zero-shot too weak"]) == 0
    assert production_of(client) == 2
    assert "version 1 -> version 2" in capsys.readouterr().out


def test_default_rollback_goes_to_the_previous_production_version(client, capsys):
    assert main(["promote", "--version", "2"]) == 0
    assert main(["promote", "--version", "3", "--force", "--reason", "needs the new label"]) == 0
    assert production_of(client) == 3

    assert main(["rollback"]) == 0
    assert production_of(client) == 2
    assert main(["rollback"]) == 0  # no earlier production version: the zero-shot one
    assert production_of(client) == 1
    capsys.readouterr()
    assert main(["rollback"]) == 1
    assert_one_line_error(capsys.readouterr().err, "intent-pipeline rollback:", "nothing to roll back to")


def test_promote_of_a_failed_version_is_refused_with_one_line(client, capsys):
    assert main(["promote", "--version", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, "intent-pipeline promote:", "did not pass the evaluation gates",
                          "--force --reason")
    assert production_of(client) is None

    assert main(["promote", "--version", "3", "--force"]) == 1
    assert_one_line_error(capsys.readouterr().err, "--force needs a non-empty --reason")
    assert production_of(client) is None


def test_rollback_to_a_missing_version_fails_with_one_line(client, capsys):
    assert main(["rollback", "--to", "17"]) == 1
    assert_one_line_error(capsys.readouterr().err, "version 17 of 'intent-classifier' does not exist")


def test_status_flags_an_alias_moved_with_mlflowclient(client, capsys):
    assert main(["promote", "--version", "2"]) == 0
    client.set_registered_model_alias(DEFAULT_MODEL_NAME, PRODUCTION, "3")  # as the MLflow UI would
    capsys.readouterr()

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: alias 'production' was moved outside the CLI" in out
    assert "now v3, last recorded v2" in out
    outside_row = [line for line in out.split("Alias history")[1].splitlines() if "outside CLI" in line]
    assert len(outside_row) == 1
    assert outside_row[0].split()[:6] == ["-", "?", "production", "outside", "v2", "v3"]

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    outside = [(m["alias"], m["from_version"], m["to_version"], m["outside_cli"])
               for m in status["outside_moves"]]
    assert outside == [(PRODUCTION, 2, 3, True)]


def test_status_table_and_json(client, capsys):
    move_alias(client, STAGING, 2, reason="champion", via="evaluation")
    capsys.readouterr()

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert rows["2"][1] == "linear"
    assert {"0.9300", "pass", "staging"} <= set(rows["2"])
    assert rows["3"][1] == "fine_tuned" and "FAIL" in rows["3"]
    assert "Aliases: staging -> v2" in out

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["aliases"] == {STAGING: 2}
    assert [v["version"] for v in status["versions"]] == [1, 2, 3]
    assert status["history"][0]["via"] == "evaluation"


def test_status_of_a_fresh_registry_says_to_train(mlflow_tracking, migrated_mlflow_db, capsys):
    shutil.copyfile(migrated_mlflow_db, mlflow_tracking.removeprefix("sqlite:///"))
    assert main(["status"]) == 0
    assert "No versions registered yet: run `intent-pipeline train`." in capsys.readouterr().out


def test_a_missing_sqlite_database_is_not_created(mlflow_tracking, tmp_path, capsys):
    (tmp_path / "mlflow.db").unlink()  # the fixture's store is a copied, migrated database
    for command in (["status"], ["promote"], ["rollback"]):
        assert main(command) == 1
        assert_one_line_error(capsys.readouterr().err, f"no MLflow database at {tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_errors_are_one_line(mlflow_tracking, capsys):
    assert main(["status", "--tracking-uri", "nosuchscheme://x"]) == 1
    assert_one_line_error(capsys.readouterr().err, "intent-pipeline status:")


def test_tracking_uri_and_model_name_options_before_or_after_the_command(
        mlflow_tracking, migrated_mlflow_db, tmp_path, capsys):
    other_uri = f"sqlite:///{tmp_path / 'team.db'}"
    other = new_registry(other_uri, migrated_mlflow_db, tmp_path / "src", name="team-model")

    assert main(["--tracking-uri", other_uri, "--model-name", "team-model", "promote", "--version", "2"]) == 0
    assert production_of(other, "team-model") == 2
    capsys.readouterr()
    assert main(["status", "--json", "--tracking-uri", other_uri, "--model-name", "team-model"]) == 0
    assert json.loads(capsys.readouterr().out)["aliases"] == {PRODUCTION: 2}
    # The env default (mlflow_tracking, an empty registry) was not touched.
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_tracking
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["registered"] is False


def test_bad_command_lines_exit_2(mlflow_tracking, capsys):
    assert main(["promote", "--version", "two"]) == 2
    assert main(["status", "--verbose-typo"]) == 2
    assert main(["promote", "--version", "2", "--from", "staging"]) == 2  # one source only
    assert main([]) == 2
    assert main(["--help"]) == 0


@pytest.fixture()
def fake_module(monkeypatch):
    """Install a stand-in module (the serving and labeling modules are written by other engineers)."""
    def install(name: str, **attributes) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
        return module
    return install


def test_serve_hands_host_port_workers_to_run_server(fake_module, monkeypatch):
    calls = []
    fake_module("intent_pipeline.serving.app", run_server=lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("MODEL_URI", raising=False)

    assert main(["serve", "--host", "0.0.0.0", "--port", "9001", "--workers", "3", "--log-level", "warning"]) == 0
    assert main(["serve", "--model-name", "team-model"]) == 0

    assert calls == [{"host": "0.0.0.0", "port": 9001, "workers": 3, "log_level": "warning"},
                     {"host": "127.0.0.1", "port": 8000, "workers": 1, "log_level": "info"}]
    assert os.environ["MODEL_URI"] == "models:/team-model@production"


def test_export_hands_store_out_and_format_to_export_labels(fake_module, monkeypatch, tmp_path, capsys):
    calls = []

    def export_labels(store_url, out_path, fmt):
        calls.append((store_url, Path(out_path), fmt))
        return 42

    fake_module("intent_pipeline.labeling.export", export_labels=export_labels)
    monkeypatch.setenv("LABELING_STORE_URL", "sqlite:///from_env.db")

    assert main(["export", "--out", str(tmp_path / "labels.csv"), "--format", "csv"]) == 0
    assert "exported 42 labeled queries" in capsys.readouterr().out
    assert main(["export", "--out", "x.jsonl", "--store-url", "postgresql://db/labels"]) == 0
    assert calls == [("sqlite:///from_env.db", tmp_path / "labels.csv", "csv"),
                     ("postgresql://db/labels", Path("x.jsonl"), "jsonl")]


def test_export_failure_is_one_line(fake_module, capsys):
    def export_labels(store_url, out_path, fmt):
        raise ValueError("no labeled queries in the store")

    fake_module("intent_pipeline.labeling.export", export_labels=export_labels)
    assert main(["export", "--out", "labels.jsonl"]) == 1
    assert_one_line_error(capsys.readouterr().err, "intent-pipeline export:",
                          "no labeled queries in the store")


@pytest.fixture()
def fake_kedro_run(monkeypatch):
    """Replace kedro's `run` command and bootstrap; record the args and the working directory they saw."""
    import kedro.framework.cli.project as kedro_project
    import kedro.framework.startup as kedro_startup

    seen: dict = {}

    class FakeRun:
        error: Exception | None = None

        def main(self, args, prog_name, standalone_mode):
            seen.update(args=args, cwd=Path.cwd(), standalone_mode=standalone_mode,
                        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
            if self.error:
                raise self.error

    fake = FakeRun()
    monkeypatch.setattr(kedro_project, "run", fake)
    monkeypatch.setattr(kedro_startup, "bootstrap_project", lambda path: seen.update(bootstrapped=Path(path)))
    return fake, seen


@pytest.fixture()
def kedro_project_dir(tmp_path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.kedro]\npackage_name = "intent_pipeline"\n')
    return project


def test_train_runs_kedro_in_the_project_with_the_args_passed_through(fake_kedro_run, kedro_project_dir,
                                                                      monkeypatch):
    fake, seen = fake_kedro_run
    monkeypatch.chdir(kedro_project_dir.parent)

    code = main(["train", "--project-dir", str(kedro_project_dir), "--tracking-uri", "sqlite:///team.db",
                 "--pipelines", "training", "--params", "training.seed=7"])

    assert code == 0
    assert seen["args"] == ["--pipelines", "training", "--params", "training.seed=7"]
    assert seen["cwd"] == seen["bootstrapped"] == kedro_project_dir.resolve()
    assert seen["tracking_uri"] == "sqlite:///team.db"
    assert seen["standalone_mode"] is False
    assert Path.cwd() == kedro_project_dir.parent  # the working directory is restored


def test_train_finds_the_project_root_from_a_subfolder(fake_kedro_run, kedro_project_dir, monkeypatch):
    _, seen = fake_kedro_run
    (kedro_project_dir / "data" / "01_raw").mkdir(parents=True)
    monkeypatch.chdir(kedro_project_dir / "data" / "01_raw")
    assert main(["train"]) == 0
    assert seen["args"] == [] and seen["cwd"] == kedro_project_dir.resolve()
    assert find_project_root(kedro_project_dir / "data") == kedro_project_dir.resolve()


def test_train_failure_is_one_line(fake_kedro_run, kedro_project_dir, capsys):
    import click

    fake, _ = fake_kedro_run
    fake.error = click.NoSuchOption("--pipelnes")
    assert main(["train", "--project-dir", str(kedro_project_dir), "--pipelnes", "x"]) == 1
    assert_one_line_error(capsys.readouterr().err, "intent-pipeline train:", "--pipelnes")

    fake.error = RuntimeError("gate failed under --strict")
    assert main(["train", "--project-dir", str(kedro_project_dir)]) == 1
    assert_one_line_error(capsys.readouterr().err,
                          "the pipeline failed: RuntimeError: gate failed under --strict")


def test_strict_adds_the_evaluation_parameter_to_kedro_params():
    from intent_pipeline.cli import _with_strict_evaluation

    assert _with_strict_evaluation([]) == ["--params", "evaluation.strict=true"]
    assert _with_strict_evaluation(["--params", "training.seed=1", "--pipeline", "x"]) == [
        "--params", "training.seed=1,evaluation.strict=true", "--pipeline", "x"]
    assert _with_strict_evaluation(["--params=a=1"]) == ["--params=a=1,evaluation.strict=true"]
