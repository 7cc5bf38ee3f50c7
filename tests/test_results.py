"""benchmarks/results.py: a benchmark replaces its own section of RESULTS.md, never another's."""

import importlib.util
import json

from conftest import REPO


def load_results_module(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("results", REPO / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "FOLDER", tmp_path)  # write beside the test, not into the repo
    monkeypatch.setattr(module, "RESULTS_MD", tmp_path / "RESULTS.md")
    return module


def test_a_rerun_replaces_its_section_only(tmp_path, monkeypatch):
    results = load_results_module(tmp_path, monkeypatch)
    results.record("digits", "digits", "make bench-digits", "| a | 1 |", {"accuracy": 0.1})
    results.record("skin", "skin", "make bench-skin", "| b | 2 |", {"accuracy": 0.2})
    results.record("digits", "digits", "make bench-digits", "| a | 3 |", {"accuracy": 0.3})
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("<!-- digits -->") == 1 and "| a | 3 |" in text and "| a | 1 |" not in text
    assert "| b | 2 |" in text and text.index("<!-- digits -->") < text.index("<!-- skin -->")
    assert json.loads((tmp_path / "results" / "digits.json").read_text())["data"] == {"accuracy": 0.3}
