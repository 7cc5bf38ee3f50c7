"""The heart pipeline end to end on the bundled data (tiny CV), a real MLflow store, the
raw-column SavedModel, and the CSV predict command's handling of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, trained_once

from pipelines.tasks.tabular_classification import metrics, youden_threshold
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

TINY = {"cv_repeats": 1, "cv_folds": 2, "epochs": 20}
HEADER = "age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with trained_once(tmp_path_factory, "heart", TINY) as run:
        yield run


def test_one_run_holds_cv_baseline_external_and_site_metrics(trained):
    import mlflow

    client = mlflow.MlflowClient(trained["env"]["MLFLOW_TRACKING_URI"])
    run = client.get_run(trained["summary"]["run_id"])
    metrics_logged = run.data.metrics
    for name in ("cv_keras_roc_auc_mean", "cv_keras_accuracy_sd", "cv_baseline_roc_auc_mean", "cv_keras_brier_mean",
                 "cv_keras_sensitivity_mean", "cv_keras_specificity_mean", "threshold",
                 "external_keras_hungarian_roc_auc", "external_baseline_va_accuracy", "loso_keras_cleveland_roc_auc"):
        assert name in metrics_logged, name
    assert 0.5 < metrics_logged["cv_keras_roc_auc_mean"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/roc_curve.png", "plots/calibration.png"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == {"evaluation/report.md", "evaluation/report.json"}
    assert run.data.params["validation.cv_folds"] == "2"
    # Per fold, by the shared protocol (pipelines.training.cross_validation): step = fold index.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fold_baseline_roc_auc")] == [0, 1]


def test_savedmodel_takes_raw_named_columns_of_any_batch_size(trained):
    import tensorflow as tf

    model_dir = Path(trained["summary"]["exported_to"])
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert 0 < metadata["threshold"] < 1
    assert "Decision threshold" in (model_dir / "MODEL_CARD.md").read_text()
    loaded = tf.saved_model.load(str(model_dir))
    specs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert sorted(specs) == sorted(HEADER.split(","))
    assert all(s.dtype == tf.float32 and s.shape.as_list() == [None] for s in specs.values())
    for batch in (1, 5):
        inputs = {name: tf.constant(np.full(batch, np.nan, np.float32)) for name in specs}
        inputs["cp"] = tf.constant(np.full(batch, 9.0, np.float32))  # unknown category: OOV, no crash
        (probability,) = loaded.signatures["serving_default"](**inputs).values()
        assert probability.shape == (batch, 2) and np.isfinite(probability.numpy()).all()
        np.testing.assert_allclose(probability.numpy().sum(axis=1), 1.0, atol=1e-6)


def test_predict_csv_reports_each_bad_row_and_predicts_the_rest(trained, tmp_path):
    csv = tmp_path / "patients.csv"
    csv.write_text(
        HEADER + ",smoker\n"
        "63,1,1,145,233,1,2,150,0,2.3,3,0,6,yes\n"
        "67,1,4,160,abc,0,2,108,1,1.5,2,3,3,no\n"
        "56,1,9,120,,0,0,162,0,0.8,1,?,?,no\n"
    )
    result = run_cli("predict", "heart", "--model", trained["summary"]["exported_to"], str(csv))
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["row 1", "row 3"]
    stderr = result.stderr.splitlines()
    assert f"error: {csv} row 2, column chol: 'abc' is not a number" in stderr
    assert any(line.startswith(f"error: {csv}: unexpected column(s) smoker") for line in stderr)
    assert any(line.startswith(f"warning: {csv} row 3, column cp: 9 is not a category seen in training") for line in stderr)
    assert "Traceback" not in result.stderr


def test_predict_csv_missing_column_and_clean_file(trained, tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text(HEADER.replace(",thal", "") + "\n63,1,1,145,233,1,2,150,0,2.3,3,0\n")
    result = run_cli("predict", "heart", "--model", trained["summary"]["exported_to"], str(missing))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().startswith(f"error: {missing}: missing column(s) thal")
    clean = tmp_path / "clean.csv"
    clean.write_text(HEADER + "\n63,1,1,145,233,1,2,150,0,2.3,3,0,6\n41,0,2,130,204,0,2,172,0,1.4,1,0,3\n")
    result = run_cli("predict", "heart", "--model", trained["summary"]["exported_to"], str(clean), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["row"] for r in rows] == [1, 2] and all(0 <= r["probability"] <= 1 for r in rows)


def test_binary_metrics_and_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.55, 0.8, 0.9])
    result = metrics(y, p)
    assert result["accuracy"] == pytest.approx(5 / 6) and result["sensitivity"] == 1.0
    assert result["specificity"] == pytest.approx(2 / 3) and result["roc_auc"] == pytest.approx(8 / 9)
    assert result["brier"] == pytest.approx(np.mean((p - y) ** 2))
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.7, 0.6, 0.65, 0.8, 0.9])
    assert youden_threshold(y, p) == pytest.approx(0.6)  # sensitivity 1, specificity 2/3: J = 0.667, the best


def test_evaluate_verb_scores_the_other_sites(trained, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINES_MODELS_ROOT", str(trained["root"] / "models"))
        from pipelines.pipeline import run_evaluate

        report = run_evaluate(apply_overrides(get_spec("heart"), TINY), out_dir=str(tmp_path))
    assert report["examples"] == 294 + 123 + 200 and 0.5 < report["roc_auc"] <= 1


@pytest.mark.parametrize("fmt, why", [
    ("litert", "IntegerLookup) are TensorFlow hash tables"),
    ("onnx", "tf2onnx converts only string <-> int64 ones"),
])
def test_the_table_model_is_refused_by_each_edge_format_in_one_line(trained, fmt, why):
    """Heart's lookups live in the model and neither converter can hold them (measured, see
    pipelines/export/edge.py): refused before any conversion, saying why and what to do."""
    folder = trained["summary"]["exported_to"]
    result = run_cli("export", "heart", "--format", fmt, "--model", folder, env=trained["env"], timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert why in result.stderr and "make serve-heart" in result.stderr
    assert not (Path(folder) / fmt).exists()
