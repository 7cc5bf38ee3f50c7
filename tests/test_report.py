import json

import numpy as np
import pytest

from pipelines.evaluation.report import classification_report, to_markdown, write_report

CLASSES = ("a", "b", "c")


def one_hot(labels, confidence=0.8):
    probabilities = np.full((len(labels), 3), (1 - confidence) / 2)
    probabilities[np.arange(len(labels)), labels] = confidence
    return probabilities


def test_metrics_on_a_known_confusion():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    report = classification_report(y_true, one_hot(y_pred), CLASSES)
    assert report["accuracy"] == pytest.approx(6 / 8)
    assert report["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert report["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert report["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert 0.5 < report["macro_auc_ovr"] <= 1


def test_auc_is_left_out_when_a_class_is_absent():
    report = classification_report(np.array([0, 1, 1]), one_hot(np.array([0, 1, 1])), CLASSES)
    assert "macro_auc_ovr" not in report


def test_report_files(tmp_path):
    report = classification_report(np.array([0, 1, 2, 2]), one_hot(np.array([0, 1, 2, 1])), CLASSES)
    paths = write_report(report, tmp_path / "out", "title")
    assert [p.name for p in paths] == ["report.json", "report.md", "confusion_matrix.png"]
    assert json.loads(paths[0].read_text())["accuracy"] == 0.75
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| accuracy | 0.7500 |" in to_markdown(report, "t")
