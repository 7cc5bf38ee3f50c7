"""The command line: instant help, one-line errors with exit code 2, no traceback."""

import json
import subprocess
import sys

from conftest import REPO, run_cli


def test_help_imports_no_tensorflow():
    code = (
        "import sys, pipelines.__main__ as m\n"
        "m.main(['list'])\n"
        "heavy = [n for n in ('tensorflow', 'keras', 'mlflow') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "digits" in result.stdout and "small_cnn" in result.stdout


def test_help_lists_the_verbs():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("list", "train", "evaluate", "export", "predict"):
        assert f"  {verb}" in result.stdout


def test_unknown_usecase_is_one_line_exit_2():
    result = run_cli("train", "cats")
    assert result.returncode == 2
    names = ", ".join(__import__("pipelines.usecases", fromlist=["USECASES"]).USECASES)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: unknown use case 'cats'; choose one of: {names}, or write ")
    assert line.endswith("usecases/cats.toml (python -m pipelines init cats --images DIR)")


def test_unknown_set_key_is_one_line_exit_2():
    result = run_cli("train", "digits", "--set", "epohcs=3")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "valid keys:" in result.stderr and "train.epochs" in result.stderr


def test_show_applies_overrides():
    result = run_cli("show", "digits", "--data", "sample", "--set", "epochs=3")
    assert result.returncode == 0
    assert '"epochs": 3' in result.stdout and '"source": "sample"' in result.stdout


def test_show_prints_the_spec_as_the_task_runs_it():
    """skin at `data.image_size=192`: the input shape that the model, export and predict use."""
    result = run_cli("show", "skin", "--set", "data.image_size=192")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert spec["input_shape"] == [192, 192, 3] and spec["data"]["image_size"] == 192


def test_missing_data_dir_is_one_line(tmp_path):
    result = run_cli("train", "digits", "--data-dir", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: --data-dir") and "Traceback" not in result.stderr


def test_predict_without_a_model_says_what_to_do(tmp_path):
    result = run_cli("predict", "digits", "x.png", env={"PIPELINES_MODELS_ROOT": str(tmp_path)})
    assert result.returncode == 1
    assert "run `make train-digits` first or pass --model DIR" in result.stderr


def test_a_reader_that_leaves_early_is_no_error():
    """`show digits | head -1`: the pipe closes before the JSON is written. Exit 141 (a shell's
    SIGPIPE), nothing on stderr: before, it read as a disk error ("check free space")."""
    process = subprocess.Popen([sys.executable, "-m", "pipelines", "show", "digits"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # gone before the child has imported anything
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and errors == "", errors
