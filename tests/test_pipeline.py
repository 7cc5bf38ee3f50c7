"""End to end on the bundled digits sample: a real 1-epoch train that logs to a real MLflow
store, exports a SavedModel that reloads and predicts; then the export/evaluate verbs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_quiet, trained_once

from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

TINY = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 400}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train once for the module, in its own MLflow store and models folder."""
    with trained_once(tmp_path_factory, "digits", TINY) as run:
        yield run


def test_train_logs_a_complete_mlflow_run(trained):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{trained['root'] / 'mlflow.db'}")
    run = client.get_run(trained["summary"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1"
    assert run.data.params["model.builder"] == "small_cnn"
    assert run.data.params["train_examples"] == str(360)  # 400 minus the 10% validation slice
    tags = run.data.tags
    assert tags["usecase"] == "digits" and tags["data_source"] == "sample"
    assert len(tags["data_sha256"]) == 64 and tags["keras_backend"] == "tensorflow"
    from pipelines.core.runtime import import_keras
    from pipelines.training.strategy import cpu_has_amx_bf16

    assert tags["devices"] == "cpu" and tags["precision"] == ("mixed_bfloat16" if cpu_has_amx_bf16() else "float32")
    # Training set the policy it chose for its own models only.
    assert import_keras().mixed_precision.global_policy().name == "float32"
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [0], name
    assert 0.2 < run.data.metrics["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "evaluation", "saved_model", "spec.json", "MODEL_CARD.md"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.json", "evaluation/report.md", "evaluation/confusion_matrix.png"} <= evaluation
    assert client.get_model_version("digits", "1").run_id == run.info.run_id


def test_export_reloads_and_serves_raw_uint8_images(trained):
    import tensorflow as tf

    from pipelines.data.loaders import load_dataset

    model_dir = Path(trained["summary"]["exported_to"])
    assert model_dir.name == "1" and model_dir.parent.name == "digits"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["input_shape"] == [28, 28] and metadata["class_names"][3] == "3"
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "## Test metrics" in card and f"| accuracy | {metadata['test_metrics']['accuracy']:.4f} |" in card
    images = load_dataset(trained["spec"]).test.x[:5]
    loaded = tf.saved_model.load(str(model_dir))
    for batch in (images[:1], images):  # any batch size
        probabilities = loaded.serve(tf.constant(batch)).numpy()
        assert probabilities.shape == (len(batch), 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises((TypeError, ValueError)):
        loaded.serve(tf.constant(images.astype("float32")))  # the signature is uint8 only
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".export-")]


def test_export_verb_publishes_the_next_version(trained):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINES_MODELS_ROOT", str(trained["root"] / "models"))
        from pipelines.pipeline import run_export

        model_dir = run_export(trained["spec"])
    assert model_dir.name == "2"
    assert json.loads((model_dir / "metadata.json").read_text())["mlflow_run_id"] == trained["summary"]["run_id"]


def test_evaluate_verb_matches_train_metrics(trained, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINES_MODELS_ROOT", str(trained["root"] / "models"))
        from pipelines.pipeline import run_evaluate

        report = run_evaluate(trained["spec"], model_dir=trained["summary"]["exported_to"], out_dir=str(tmp_path))
    assert report["accuracy"] == pytest.approx(trained["summary"]["test"]["accuracy"], abs=1e-6)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "confusion_matrix.png").is_file()


def test_predict_cli_reads_images_and_names_bad_files(trained, tmp_path):
    from conftest import run_cli
    from PIL import Image

    from pipelines.data.loaders import load_dataset

    test = load_dataset(trained["spec"]).test
    grey = tmp_path / "digit.png"
    Image.fromarray(test.x[0]).save(grey)
    colour_large = tmp_path / "digit_rgb.jpg"
    Image.fromarray(test.x[1]).convert("RGB").resize((112, 112)).save(colour_large, quality=95)
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    result = run_cli("predict", "digits", "--model", trained["summary"]["exported_to"], str(grey), str(broken), str(colour_large))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{grey}: ") and lines[1].startswith(f"{colour_large}: ")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {broken}: not a readable image (UnidentifiedImageError); use PNG or JPEG"]
    assert "Traceback" not in result.stderr


def test_same_seed_same_metrics(isolated):
    """Determinism: seeded Python/NumPy/TF and deterministic TF ops give identical results."""
    from pipelines.data.loaders import load_dataset
    from pipelines.training import fit

    spec = apply_overrides(get_spec("digits"), {**TINY, "data.train_limit": 300})
    dataset = load_dataset(spec)
    first = fit.train(spec, dataset).history
    second = fit.train(spec, dataset).history
    assert first == second


@pytest.mark.slow  # test_sigkill_then_the_same_command_ends_as_if_never_killed covers the harder case in `make test`
def test_killed_run_resumes_in_the_same_mlflow_run(isolated):
    """Ctrl-C after the first epoch, then the same command: training continues from the
    backup, in the same MLflow run, and the run ends FINISHED with every epoch logged."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import mlflow
    from conftest import REPO

    args = [sys.executable, "-m", "pipelines", "train", "digits", "--data", "sample", "--no-export",
            "--set", "train_limit=2000", "--set", "epochs=3"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not backups("digits", "training_metadata.json") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (killed,) = client.search_runs(client.get_experiment_by_name("digits").experiment_id)
    assert killed.info.status == "KILLED"

    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming interrupted MLflow run {killed.info.run_id}" in resumed.stdout
    assert "Epoch 1/3" not in resumed.stdout  # the first epoch is not trained again
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")} == {0, 1, 2}
    assert not backups("digits")


def backups(usecase: str, inside: str = "") -> list:
    """The per-run backup folders of `usecase` (or the files named `inside` them)."""
    from pipelines.core import paths

    folder = paths.checkpoints_dir(usecase)
    found = [p for p in folder.glob("backup-*") if p.is_dir()] if folder.is_dir() else []
    return [p / inside for p in found if (p / inside).exists()] if inside else found


def train_command(*overrides: str) -> list[str]:
    import sys

    args = [sys.executable, "-m", "pipelines", "train", "digits", "--data", "sample"]
    for override in overrides:
        args += ["--set", override]
    return args


def test_sigkill_then_the_same_command_ends_as_if_never_killed(isolated):
    """kill -9 after the first completed epoch: the same command resumes from the backup, in the
    same MLflow run, and ends with exactly the metrics of an uninterrupted run (same seed)."""
    import os
    import signal
    import subprocess
    import time

    import mlflow
    from conftest import REPO

    command = train_command("train_limit=1000", "epochs=3")
    uninterrupted = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    assert_quiet(uninterrupted.stderr)  # a whole train (fit, export, MLflow model, registry) warns of nothing

    killed = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not backups("digits", "training_metadata.json") and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming interrupted MLflow run" in resumed.stdout

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    first, second = (run.data.metrics for run in runs)
    for name in ("test_accuracy", "test_log_loss", "test_macro_auc_ovr"):
        assert second[name] == pytest.approx(first[name], abs=1e-6), name
    assert {m.step for m in client.get_metric_history(runs[1].info.run_id, "val_loss")} == {0, 1, 2}
    assert not backups("digits")


def test_two_runs_at_once_keep_their_own_backups(isolated):
    """Two identical commands started together: two MLflow runs, two exported versions, both
    FINISHED; and an export staging folder left by a killed process is cleaned up."""
    import os
    import subprocess

    import mlflow
    from conftest import REPO

    from pipelines.core import paths

    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = paths.usecase_models_dir("digits") / f".export-{dead.pid}-1"
    abandoned.mkdir(parents=True)
    (abandoned / "saved_model.pb").write_bytes(b"half written")

    command = train_command("train_limit=600", "epochs=2")
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-2000:]
        assert "resuming" not in output  # neither took the other's backup for an interrupted run

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:
        assert {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")} == {0, 1}
    versions = sorted(p.name for p in paths.usecase_models_dir("digits").iterdir() if p.name.isdigit())
    assert versions == ["1", "2"]
    assert not abandoned.exists() and not backups("digits")


def test_an_unwritable_models_folder_is_one_line_before_any_work(isolated, tmp_path):
    from conftest import run_cli

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("train", "digits", "--data", "sample", env={"PIPELINES_MODELS_ROOT": str(blocker / "models")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot write to {blocker / 'models' / 'digits'}")
    assert not (isolated / "mlflow.db").exists()  # no run was started


def test_a_fault_mid_run_fails_the_run_with_its_reason(isolated):
    """The checkpoints folder vanishes under a running fit (a disk pulled, a clean-up script):
    one line, exit 1, the MLflow run FAILED with the reason as a tag, no version published."""
    import os
    import shutil
    import subprocess
    import time

    import mlflow
    from conftest import REPO

    from pipelines.core import paths

    process = subprocess.Popen(train_command("train_limit=1000", "epochs=4"), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not backups("digits", "training_metadata.json") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    checkpoints = paths.checkpoints_dir("digits")
    shutil.rmtree(checkpoints)
    checkpoints.write_text("in the way")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: ")
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["failure"]
    assert not [p for p in paths.usecase_models_dir("digits").iterdir() if p.name.isdigit()]
