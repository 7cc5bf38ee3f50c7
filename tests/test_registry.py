"""The registry gate: a worse version never becomes what `predict` serves; promote moves it by
hand; predict/evaluate take registry references and find the champion without a registry."""

from __future__ import annotations

import shutil

import pytest
from conftest import run_cli

from pipelines.tracking.registry import CHALLENGER, CHAMPION, Candidate, decide, parse_reference

METRIC = "test_accuracy"


@pytest.mark.parametrize(
    ("new", "champion", "alias", "reason"),
    [
        (Candidate("1", 0.5, "a"), None, CHAMPION, "first version"),
        (Candidate("2", 0.9, "a"), Candidate("1", 0.9, "a"), CHAMPION, "0.9000 >= champion v1's 0.9000"),
        (Candidate("2", 0.8, "a"), Candidate("1", 0.9, "a"), CHALLENGER, "0.8000 < champion v1's 0.9000"),
        (Candidate("2", 0.99, "b"), Candidate("1", 0.9, "a"), CHALLENGER, "other test data"),
        (Candidate("2", None, "a"), Candidate("1", 0.9, "a"), CHALLENGER, "logged no test_accuracy"),
        (Candidate("2", float("nan"), "a"), Candidate("1", 0.9, "a"), CHALLENGER, "logged no test_accuracy"),
        (Candidate("1", 0.11, "a", chance=0.114), None, CHALLENGER, "not better than chance (0.1140)"),
        (Candidate("2", 0.95, "a", chance=0.114), Candidate("1", 0.9, "a"), CHAMPION, ">= champion v1's"),
        # A champion without this metric was measured another way (cross-validated vs held out): never compared.
        (Candidate("2", 0.95, "a"), Candidate("1", None, "a"), CHALLENGER,
         "champion v1 logged no test_accuracy: it was measured another way"),
    ],
)
def test_decide(new, champion, alias, reason):
    decision = decide(new, champion, METRIC)
    assert decision.alias == alias and reason in decision.reason


def test_parse_reference():
    assert parse_reference("models:/digits@champion") == ("digits", "alias", "champion")
    assert parse_reference("models:/digits/3") == ("digits", "version", "3")
    for bad in ("models:/digits", "models:/digits/x", "models:/@champion", "models:/a/b/c"):
        with pytest.raises(ValueError, match="bad model reference"):
            parse_reference(bad)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A useful run (v1), then a run at a learning rate too small to learn anything (v2)."""
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    root = tmp_path_factory.mktemp("registry")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(root / "models")}
    tiny = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 400}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from pipelines.pipeline import run_train

        good = run_train(apply_overrides(get_spec("digits"), tiny))
        bad = run_train(apply_overrides(get_spec("digits"), {**tiny, "train.learning_rate": 1e-7}))
    return {"root": root, "env": env, "good": good, "bad": bad}


def test_a_worse_version_is_only_the_challenger(two_runs):
    import mlflow

    good, bad = two_runs["good"], two_runs["bad"]
    assert (good["registered_version"], good["alias"]) == ("1", CHAMPION)
    assert (bad["registered_version"], bad["alias"]) == ("2", CHALLENGER)
    assert bad["test"]["accuracy"] < good["test"]["accuracy"]
    client = mlflow.MlflowClient(two_runs["env"]["MLFLOW_TRACKING_URI"])
    assert str(client.get_model_version_by_alias("digits", CHAMPION).version) == "1"
    assert client.get_run(bad["run_id"]).data.tags["registry_alias"] == CHALLENGER
    bad_run = client.get_run(bad["run_id"])
    assert "not better than chance" in bad_run.data.tags["registry_reason"] and bad_run.data.tags["useless_model"] == "true"
    assert bad_run.data.metrics["chance_level"] == pytest.approx(0.114, abs=0.02)  # the sample's majority class share
    assert (two_runs["root"] / "models" / "digits" / "champion").read_text().strip() == "1"


def test_predict_defaults_to_the_champion_not_the_latest(two_runs):
    import json

    result = run_cli("predict", "digits", "--json", str(sample_png(two_runs["root"])), env=two_runs["env"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"].endswith("/digits/1")
    result = run_cli("predict", "digits", "--json", "--model", "models:/digits/2", str(sample_png(two_runs["root"])), env=two_runs["env"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"].endswith("/digits/2")
    result = run_cli("predict", "digits", "--model", "models:/digits@nope", "x.png", env=two_runs["env"])
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: registered model 'digits' has no alias 'nope' in {two_runs['env']['MLFLOW_TRACKING_URI']}; see `make compare`")


def test_promote_by_hand_then_a_copied_models_folder_knows_its_champion(two_runs, tmp_path):
    import json

    import mlflow

    result = run_cli("promote", "digits", "2", "--reason", "testing the promote verb", env=two_runs["env"])
    assert result.returncode == 0, result.stderr
    client = mlflow.MlflowClient(two_runs["env"]["MLFLOW_TRACKING_URI"])
    assert str(client.get_model_version_by_alias("digits", CHAMPION).version) == "2"
    assert "promoted by hand" in client.get_model_version("digits", "2").tags["gate"]
    assert (two_runs["root"] / "models" / "digits" / "champion").read_text().strip() == "2"

    # No registry at hand: the copied folder's `champion` file says which version is served.
    copy = tmp_path / "models"
    shutil.copytree(two_runs["root"] / "models", copy)
    offline = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'absent.db'}", "PIPELINES_MODELS_ROOT": str(copy)}
    result = run_cli("predict", "digits", "--json", str(sample_png(two_runs["root"])), env=offline)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == str(copy / "digits" / "2")
    assert not (tmp_path / "absent.db").exists()  # asking for the champion created no store

    result = run_cli("promote", "digits", "9", env=two_runs["env"])
    assert result.returncode == 1 and "no version '9' of registered model 'digits'" in result.stderr
    assert "Traceback" not in result.stderr


def sample_png(folder):
    import numpy as np
    from conftest import REPO
    from PIL import Image

    path = folder / "digit.png"
    if not path.is_file():
        with np.load(REPO / "data" / "samples" / "digits" / "test.npz") as sample:
            Image.fromarray(sample["x"][0]).save(path)
    return path


def test_a_models_root_alone_never_answers_with_the_default_stores_champion(two_runs, tmp_path):
    """The issue's `make demo` then `make test`: a checkout whose default mlflow.db has a champion
    exported elsewhere, and PIPELINES_MODELS_ROOT pointing at an empty folder. The checkout is a
    copy of the package beside a copy of a real store (its default store, MLFLOW_TRACKING_URI
    unset), so the real checkout's mlflow.db is never read."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "pipelines", checkout / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(two_runs["root"] / "mlflow.db", checkout / "mlflow.db")
    image = str(sample_png(two_runs["root"]))
    unnamed = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}

    def predict(**env):
        return subprocess.run([sys.executable, "-m", "pipelines", "predict", "digits", "--json", image], cwd=checkout,
                              capture_output=True, text=True, timeout=300, env={**unnamed, **env})

    empty = tmp_path / "empty-models"
    result = predict(PIPELINES_MODELS_ROOT=str(empty))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"sqlite:///{checkout / 'mlflow.db'}" in result.stderr  # the copy's default store was asked
    assert "outside PIPELINES_MODELS_ROOT" in result.stderr and "run `make train-digits` first or pass --model DIR" in result.stderr

    # The champion lies under the models root given: the default store's registry answers.
    result = predict(PIPELINES_MODELS_ROOT=str(two_runs["root"] / "models"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"].startswith(str(two_runs["root"] / "models" / "digits"))

    # The user names the store: its champion wins over the (empty) models root.
    result = predict(PIPELINES_MODELS_ROOT=str(empty), MLFLOW_TRACKING_URI=f"sqlite:///{checkout / 'mlflow.db'}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"].startswith(str(two_runs["root"] / "models" / "digits"))
