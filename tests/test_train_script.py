"""scripts/train_intent_classifier.py: argument handling, runtime params, model choice, hub errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_intent_classifier.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_intent_classifier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps({"text": "ciao", "label": "chitchat"}) + "\n", encoding="utf-8")
    return path


def test_missing_data_file_is_a_clear_usage_error(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--data", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "model")])
    assert exit_info.value.code == 2
    assert "--data" in (err := capsys.readouterr().err) and "nope.jsonl: no such file" in err


def test_data_must_be_a_file(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--data", str(tmp_path), "--output", str(tmp_path / "model")])
    assert "not a file" in capsys.readouterr().err


def test_a_destination_is_required(script, data_file, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--data", str(data_file)])
    assert "--output" in capsys.readouterr().err


def test_bad_numbers_are_usage_errors(script, data_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--data", str(data_file), "--output", str(tmp_path), "--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_push_without_output_writes_to_the_repo_name(script, data_file):
    args = script.parse_args(["--data", str(data_file), "--push-to-hub", "pratikoai/intent-classifier-v1"])
    assert args.output == (Path.cwd() / "intent-classifier-v1").resolve()


def test_runtime_params_derive_labels_and_override_only_what_is_given(script, data_file, tmp_path):
    args = script.parse_args(["--data", str(data_file), "--output", str(tmp_path / "m"), "--device", "cuda",
                              "--epochs", "3", "--candidates", "fine_tuned", "linear"])
    params = script.runtime_params(args, tmp_path / "raw")
    assert params == {
        "raw_data_dir": str(tmp_path / "raw"),
        "data_engineering": {"labels": None},
        "training": {"fine_tuning": {"device": "cuda", "epochs": 3}, "candidates": ["fine_tuned", "linear"]},
    }
    bare = script.runtime_params(script.parse_args(["--data", str(data_file), "--output", "m"]), tmp_path)
    assert "training" not in bare


def test_stage_data_names_the_partition_jsonl(script, tmp_path):
    source = tmp_path / "export.txt"
    source.write_text("{}\n")
    staged = script.stage_data(source, tmp_path / "raw")
    assert staged == tmp_path / "raw" / "export.jsonl" and staged.read_text() == "{}\n"


CANDIDATES = [
    {"candidate_name": "fine_tuned", "kind": "fine_tuned", "run_id": "r1", "model_dir": "/m/ft"},
    {"candidate_name": "linear", "kind": "linear", "run_id": "r2", "model_dir": "/m/lin"},
]


def test_choose_model_prefers_the_champion(script):
    summary = {"candidates": [{"candidate_name": "fine_tuned", "run_id": "r1", "champion": False},
                              {"candidate_name": "linear", "run_id": "r2", "champion": True}]}
    chosen, row = script.choose_model(CANDIDATES, summary, "champion")
    assert chosen["kind"] == "linear" and row["run_id"] == "r2"
    assert script.choose_model(CANDIDATES, summary, "fine_tuned")[0]["kind"] == "fine_tuned"


def test_choose_model_falls_back_to_fine_tuned_and_ignores_a_stale_summary(script, capsys):
    stale = {"candidates": [{"candidate_name": "linear", "run_id": "old-run", "champion": True}],
             "no_champion_reason": None}
    chosen, row = script.choose_model(CANDIDATES, stale, "champion")
    assert chosen["kind"] == "fine_tuned" and row is None
    with pytest.raises(script.TrainScriptError, match="no fine-tuned candidate"):
        script.choose_model(CANDIDATES[1:], None, "champion")


def test_write_model_replaces_a_model_but_not_other_folders(script, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / script.MANIFEST_FILE).write_text("{}")
    output = tmp_path / "out"
    output.mkdir()
    (output / script.MANIFEST_FILE).write_text("old")
    (output / "stale.bin").write_text("x")
    script.write_model(model, output)
    assert sorted(p.name for p in output.iterdir()) == [script.MANIFEST_FILE]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(script.TrainScriptError, match="not a model directory"):
        script.write_model(model, precious)


def test_push_to_hub_offline_fails_clearly(script, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(script.TrainScriptError, match=r"--push-to-hub org/model: HF_HUB_OFFLINE is set"):
        script.push_to_hub(tmp_path, "org/model")


def test_push_to_hub_unreachable_fails_clearly(script, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_the_test")
    with pytest.raises(script.TrainScriptError, match=r"--push-to-hub org/model: cannot reach the Hugging"):
        script.push_to_hub(tmp_path, "org/model")


def test_cuda_without_a_gpu_fails_before_training(script, data_file, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main(["--data", str(data_file), "--output", str(tmp_path / "m"), "--device", "cuda"]) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
