"""Operating points: logit adjustment over one model's probabilities, tau chosen on validation
data, and the same rule wherever a label is decided (report, predict, evaluate, the server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, trained_once

from pipelines.core.errors import UsageError
from pipelines.data.loaders import load_dataset
from pipelines.evaluation.operating_points import (
    POINTS,
    TAUS,
    OperatingPoints,
    adjusted_probabilities,
    check_point,
    choose,
    choose_tau,
    class_priors,
    tradeoff_curve,
)
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def bayes_posterior(labels: np.ndarray, priors: np.ndarray, seed: int) -> np.ndarray:
    """The exact posterior p(y|x) of a noisy observer of the real skin labels: the likelihood of
    the true class is 3x that of the others, times noise; Bayes' rule with the real priors."""
    rng = np.random.default_rng(seed)
    likelihood = rng.lognormal(0.0, 0.8, size=(len(labels), len(priors)))
    likelihood[np.arange(len(labels)), labels] *= 3.0
    joint = likelihood * priors
    return joint / joint.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def skin_labels():
    dataset = load_dataset(apply_overrides(get_spec("skin"), {"data.source": "sample"}))
    return dataset.train.y, dataset.val.y, dataset.test.y


def test_the_cli_and_the_module_name_the_same_points():
    from pipelines.__main__ import OPERATING_POINTS

    assert OPERATING_POINTS == POINTS == ("accuracy", "balanced")
    assert TAUS[0] == 0.0 and TAUS[-1] == 1.0 and len(TAUS) == 21


def test_priors_are_the_training_frequencies_and_never_zero(skin_labels):
    train, _, _ = skin_labels
    priors = class_priors(train, 7)
    assert priors.sum() == pytest.approx(1.0) and priors.argmax() == 5  # nevi are most of HAM10000
    assert class_priors(np.array([0, 0, 1]), 3)[2] > 0  # an absent class: small, not zero


def test_tau_zero_is_the_argmax_and_adjusted_probabilities_are_probabilities(skin_labels):
    train, _, test = skin_labels
    priors = class_priors(train, 7)
    probabilities = bayes_posterior(test, priors, seed=0)
    points = OperatingPoints(tuple(priors), 0.0, "test", "balanced")
    np.testing.assert_array_equal(points.decide(probabilities), probabilities.argmax(axis=1))
    adjusted = adjusted_probabilities(probabilities, priors, 1.0)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0)


def test_logit_adjustment_trades_accuracy_for_balanced_accuracy_on_real_label_frequencies(skin_labels):
    """Menon et al.: on an exact posterior, tau = 1 (the uniform-prior Bayes rule) gives a
    higher balanced accuracy and a lower accuracy than the argmax (the population Bayes rule)."""
    train, val, test = skin_labels
    priors = class_priors(train, 7)
    curve = tradeoff_curve(test, bayes_posterior(test, priors, seed=1), priors)
    at = {row["tau"]: row for row in curve}
    assert at[1.0]["balanced_accuracy"] > at[0.0]["balanced_accuracy"] + 0.05
    assert at[1.0]["accuracy"] < at[0.0]["accuracy"]
    assert at[1.0]["recall"][4] > at[0.0]["recall"][4]  # melanoma
    chosen = choose_tau(tradeoff_curve(val, bayes_posterior(val, priors, seed=2), priors))
    assert chosen >= 0.5  # chosen on validation data, where the same trade holds


def test_ties_choose_the_smallest_tau():
    curve = [{"tau": t, "balanced_accuracy": b} for t, b in ((0.0, 0.5), (0.3, 0.7), (0.6, 0.7), (1.0, 0.6))]
    assert choose_tau(curve) == 0.3


def test_without_validation_data_tau_is_one_and_says_why(skin_labels):
    train, _, test = skin_labels
    points, curve = choose(get_spec("skin").class_names, train, None, "accuracy")
    assert points.tau == 1.0 and curve is None and "no validation data" in points.tau_source


def test_asking_for_a_point_a_model_does_not_have_is_a_usage_error():
    assert check_point(None, {}, "m") is None
    with pytest.raises(UsageError, match="unknown operating point 'recall'"):
        check_point("recall", {"operating_points": {}}, "m")
    with pytest.raises(UsageError, match="m has no operating points"):
        check_point("balanced", {"usecase": "heart", "threshold": 0.4}, "m")


def test_the_cli_refuses_an_unknown_point_before_loading_anything():
    result = run_cli("predict", "skin", "--operating-point", "recall", "x.png")
    assert result.returncode == 2 and "invalid choice: 'recall'" in result.stderr


@pytest.fixture(scope="module")
def skin_model(tmp_path_factory):
    with trained_once(tmp_path_factory, "skin", {"data.source": "sample", "train.epochs": 1, "data.train_limit": 400}) as run:
        yield run


def test_a_run_reports_both_points_chosen_on_validation_and_exports_them(skin_model):
    report = skin_model["summary"]["report"]
    section = report["operating_points"]
    assert set(section["points"]) == set(POINTS) and section["priority_classes"] == ["mel"]
    assert "validation" in section["tau_source"] and section["tau"] in TAUS
    assert section["points"]["accuracy"]["accuracy"] == pytest.approx(report["accuracy"])  # the same argmax
    assert len(section["curve"]["test"]) == len(section["curve"]["validation"]) == len(TAUS)
    metadata = json.loads((Path(skin_model["summary"]["exported_to"]) / "metadata.json").read_text())
    assert metadata["operating_points"]["tau"] == section["tau"] and metadata["operating_points"]["default"] == "balanced"
    assert len(metadata["operating_points"]["priors"]) == 7


def test_evaluate_at_each_point_reproduces_the_run_through_the_exported_model(skin_model):
    from pipelines.pipeline import run_evaluate

    spec, summary = skin_model["spec"], skin_model["summary"]
    model, out = summary["exported_to"], skin_model["root"] / "evaluate"
    balanced = summary["report"]["operating_points"]["points"]["balanced"]
    at_accuracy = run_evaluate(spec, model_dir=model, out_dir=str(out / "a"), operating_point="accuracy")
    at_balanced = run_evaluate(spec, model_dir=model, out_dir=str(out / "b"), operating_point="balanced")
    assert at_accuracy["accuracy"] == pytest.approx(summary["report"]["accuracy"], abs=1e-6)
    assert at_balanced["accuracy"] == pytest.approx(balanced["accuracy"], abs=1e-6)
    assert at_balanced["balanced_accuracy"] == pytest.approx(balanced["balanced_accuracy"], abs=1e-6)
    assert at_balanced["operating_point"] == "balanced"
    assert "| balanced |" in (out / "b" / "report.md").read_text()


def test_predict_labels_at_the_default_point_unless_told(skin_model):
    from pipelines.serving.predict import predict_files

    images = load_dataset(skin_model["spec"]).test.x
    model_dir = Path(skin_model["summary"]["exported_to"])
    files = []
    from PIL import Image

    for index in range(6):
        files.append(str(skin_model["root"] / f"lesion{index}.png"))
        Image.fromarray(images[index]).save(files[-1])
    default = predict_files(model_dir, files)
    argmax = predict_files(model_dir, files, operating_point="accuracy")
    points = OperatingPoints.from_metadata(json.loads((model_dir / "metadata.json").read_text()))
    probabilities = np.array([[dict(p.top)[c] if c in dict(p.top) else 0.0 for c in get_spec("skin").class_names]
                              for p in predict_files(model_dir, files, top_k=7)])
    classes = get_spec("skin").class_names
    assert [p.label for p in default] == [classes[i] for i in points.decide(probabilities, "balanced")]
    assert [p.label for p in argmax] == [p.top[0][0] for p in argmax]
    assert {p.operating_point for p in default} == {"balanced"}


def test_the_served_model_labels_at_the_point_its_config_names(skin_model):
    """`serve --operating-point` reaches the scoring server as MLflow's model_config; the
    serving wrapper's own copy of the rule agrees with this module's."""
    import mlflow.pyfunc

    images = load_dataset(skin_model["spec"]).test.x[:40]
    classes = list(skin_model["spec"].class_names)
    points = OperatingPoints.from_metadata(json.loads((Path(skin_model["summary"]["exported_to"]) / "metadata.json").read_text()))
    served = {}
    for config, point in ((None, "balanced"), ({"operating_point": "accuracy"}, "accuracy")):
        records = mlflow.pyfunc.load_model("models:/skin/1", model_config=config).predict(images)
        probabilities = np.array([[record[name] for name in classes] for record in records])
        served[point] = [record["label"] for record in records]
        assert served[point] == [classes[i] for i in points.decide(probabilities, point)]
    # MLflow ignores a config key the model was not logged with: the override must change answers.
    assert served["balanced"] != served["accuracy"]
