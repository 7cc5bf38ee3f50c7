"""`init NAME --table FILE.csv --target COLUMN` on a real data set a package ships: scikit-
learn's breast cancer data (Wisconsin, 569 patients) as a CSV with a string target and a
patient id, then the two commands a user runs: train (cross-validation with the baseline,
tiny epochs) and predict from raw columns, with the commands docs/tables.md shows, as a user
would run them (only the file names point into the test's folder)."""

import json
import os
import re
import shlex
import subprocess

import pytest
from conftest import REPO, run_cli

DOCS = (REPO / "docs" / "tables.md").read_text()


def documented(prefix: str) -> list[str]:
    """The docs' shell command that starts with `prefix`, as words."""
    for body in re.findall(r"```sh\n(.*?)```", DOCS, re.S):
        for line in body.splitlines():
            if line.startswith(prefix):
                return shlex.split(line, comments=True)
    raise AssertionError(f"docs/tables.md shows no `{prefix} ...` command")


def with_files(words: list[str], files: dict) -> list[str]:
    return [str(files.get(word, word)) for word in words]


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """The CSV, a tracking store, models, reports and use cases folders of its own."""
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("cancer")
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map(dict(enumerate(data.target_names)))  # 0 malignant, 1 benign
    frame.insert(0, "patient_id", range(842302, 842302 + len(frame)))
    # A text category, so the lookup of text values (and an unseen one) is tested too.
    frame["size"] = ["small" if r < 12 else "medium" if r < 17 else "large" for r in frame["mean radius"]]
    csv = root / "breast_cancer.csv"
    frame.to_csv(csv, index=False)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(root / "models"),
           "PIPELINES_REPORTS_ROOT": str(root / "reports"), "PIPELINES_USECASES_DIR": str(root / "usecases"),
           "PIPELINES_DATA_ROOT": str(root / "data")}
    return {"root": root, "csv": csv, "env": env, "frame": frame}


@pytest.fixture(scope="module")
def initialised(cancer):
    command = documented("python -m pipelines init cancer")
    result = run_cli(*with_files(command, {"breast_cancer.csv": cancer["csv"]})[3:], env=cancer["env"])
    assert result.returncode == 0, result.stderr
    return result


def test_init_writes_what_it_found(cancer, initialised):
    path = cancer["root"] / "usecases" / "cancer.toml"
    text = path.read_text()
    assert initialised.stdout.startswith(text) and "next: make train-cancer" in initialised.stdout
    assert "569 rows, 33 columns in breast_cancer.csv" in text
    assert "Class balance of `diagnosis`: benign 357 (62.7%), malignant 212 (37.3%)" in text
    assert "patient_id" in text and "dropped: an identifier" in text
    assert "mean radius" in text and "numeric, 6.981 to 28.11" in text
    assert "categorical, medium (" in text and 'class_names = ["benign", "malignant"]' in text
    assert 'positive_class = "malignant"' in text and "input_shape = [31]" in text
    assert "cv_folds = 5" in text and 'builder = "tabular_mlp"' in text
    again = run_cli("init", "cancer", "--table", str(cancer["csv"]), "--target", "diagnosis", env=cancer["env"])
    assert again.returncode == 2
    assert again.stderr.strip().endswith("init never overwrites a use-case file: choose another name or remove it")
    assert path.read_text() == text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target", "outcome"], "breast_cancer.csv has no target column 'outcome'; its columns: patient_id, mean radius"),
        (["--target", "size", "--positive", "huge"], "the positive class 'huge' is not a value of the target"),
    ],
)
def test_init_refuses_bad_targets_in_one_line(cancer, arguments, message):
    result = run_cli("init", "other", "--table", str(cancer["csv"]), *arguments, env=cancer["env"])
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr
    assert not (cancer["root"] / "usecases" / "other.toml").exists()


def test_init_refuses_a_target_with_one_value_and_an_unreadable_file(cancer, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("a,b\n1,x\n2,x\n")
    result = run_cli("init", "one", "--table", str(one), "--target", "b", env=cancer["env"])
    assert result.returncode == 1 and "the target column 'b' holds one value ('x') on every row" in result.stderr
    result = run_cli("init", "one", "--table", str(tmp_path / "missing.csv"), "--target", "b", env=cancer["env"])
    assert result.returncode == 1 and result.stderr.strip() == f"error: {tmp_path / 'missing.csv'}: no such file"


@pytest.fixture(scope="module")
def trained(cancer, initialised):
    command = documented("make train-cancer EPOCHS=")  # the quick look: 2 epochs, one 2-fold CV
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *command[1:]], capture_output=True, text=True,
                            timeout=900, env={**os.environ, **cancer["env"]})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    models = sorted((cancer["root"] / "models" / "cancer").glob("[0-9]*"))
    return {"result": result, "model_dir": models[-1]}


def test_train_cross_validates_against_the_baseline_and_exports_raw_columns(cancer, trained):
    import mlflow

    assert "column 'patient_id' dropped" in trained["result"].stdout
    client = mlflow.MlflowClient(cancer["env"]["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("cancer").experiment_id])
    for name in ("cv_keras_roc_auc_mean", "cv_baseline_roc_auc_mean", "cv_keras_brier_mean", "threshold"):
        assert name in run.data.metrics, name
    assert run.data.metrics["cv_baseline_roc_auc_mean"] > 0.95  # logistic regression on this data: ~0.99
    metadata = json.loads((trained["model_dir"] / "metadata.json").read_text())
    assert metadata["class_names"] == ["benign", "malignant"] and "patient_id" not in metadata["columns"]
    assert metadata["column_types"]["size"] == "text" and metadata["signature_names"]["mean radius"] == "mean_radius"
    assert sorted(metadata["categories"]["size"]) == ["large", "medium", "small"]
    card = (trained["model_dir"] / "MODEL_CARD.md").read_text()
    assert "column 1 is P(malignant)" in card and "breast_cancer.csv" in card


def test_predict_from_raw_columns_with_an_unseen_category(cancer, trained, tmp_path):
    rows = cancer["frame"].drop(columns=["patient_id", "diagnosis"]).iloc[[0, 19]].copy()  # malignant, benign
    rows.iloc[1, rows.columns.get_loc("size")] = "huge"  # never seen in training: the lookup's OOV bucket
    csv = tmp_path / "new_patients.csv"
    rows.to_csv(csv, index=False)
    command = with_files(documented("python -m pipelines predict cancer"), {"new_patients.csv": csv})
    result = run_cli(*command[3:], env=cancer["env"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"row [12]: P\(malignant\) \d\.\d{3} -> (benign|malignant) \(threshold \d\.\d{3}\)", line)
                                   for line in lines), lines
    assert "row 2, column size: 'huge' is not a category seen in training" in result.stderr
    as_json = run_cli(*command[3:], "--json", env=cancer["env"])
    assert [json.loads(line)["row"] for line in as_json.stdout.splitlines()] == [1, 2]


def test_the_served_model_takes_raw_column_names_and_text(cancer, trained):
    """The MLflow model behind `serve` (loaded in-process on the exported folder, as the scoring
    server loads it): raw names with spaces, a text category, null for not recorded."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    from pipelines.export.mlflow_model import SavedModelClassifier

    model = SavedModelClassifier()
    model.load_context(SimpleNamespace(artifacts={"saved_model": str(trained["model_dir"])}, model_config={}))
    row = cancer["frame"].drop(columns=["patient_id", "diagnosis"]).iloc[0]
    request = {name: [None if name == "size" else float(value) if name != "size" else value] for name, value in row.items()}
    (answer,) = model.predict(None, request)
    assert set(answer) == {"benign", "malignant", "label"} and abs(answer["benign"] + answer["malignant"] - 1) < 1e-6
    with pytest.raises(MlflowException, match="column 'size' takes text \\(a category name\\), got 3"):
        model.predict(None, {**request, "size": [3]})
