"""LiteRT and ONNX beside a published digits version, end to end on the bundled sample: a real
1-epoch train, real conversions, each file run by its own runtime (ai-edge-litert, onnxruntime)
on the sample's whole test split, logged on the version's MLflow run; a file that disagrees with
the SavedModel is not published; a process where TensorFlow cannot be imported classifies a
real photo with the int8 file. The other image use cases convert alike (slow: `make test-all`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, trained_once

from pipelines.core.errors import PipelineError
from pipelines.export import edge

# `train` makes the LiteRT files itself (export.formats); the ONNX file comes from the export verb's function.
FAST = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 2000, "export.formats": ("litert",)}
# In the child, importing these fails (`sys.modules[name] = None`): what a device without them sees.
# The project's predict verb may use the rest of the stack, never TensorFlow or Keras (which loads it);
# the device script needs NumPy, Pillow and the runtime alone.
WITHOUT_TENSORFLOW = ("tensorflow", "keras")
DEVICE_ONLY = (*WITHOUT_TENSORFLOW, "jax", "mlflow", "sklearn", "pandas", "scipy", "matplotlib", "h5py", "onnx", "tf2onnx")


def run_without(blocked: tuple, module: str, *arguments: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    code = (f"import runpy, sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
            "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n")
    return subprocess.run([sys.executable, "-c", code, module, *arguments], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained digits version: LiteRT made by `train`, ONNX by the export verb's own function."""
    with trained_once(tmp_path_factory, "digits", FAST) as run:
        from pipelines.pipeline import run_export_formats

        folder = Path(run["summary"]["exported_to"])
        assert set(run["summary"]["formats"]) == {"litert"}, run["summary"]
        run["formats"] = run_export_formats(run["spec"], ("onnx",), model=str(folder))
        run["folder"] = folder
        yield run


def test_both_formats_are_published_verified_and_described(exported):
    folder = exported["folder"]
    for path in ("litert/model_int8.tflite", "litert/model_float16.tflite", "onnx/model.onnx", "litert/metadata.json"):
        assert (folder / path).is_file(), path
    assert not list(folder.glob(".litert-*")) and not list(folder.glob(".onnx-*"))
    metadata = json.loads((folder / "metadata.json").read_text())
    files = {**metadata["exports"]["litert"]["files"], **metadata["exports"]["onnx"]["files"]}
    variables = sum(p.stat().st_size for p in (folder / "variables").iterdir())
    assert files["model_int8.tflite"]["bytes"] <= variables / 4  # int8 weights: about a quarter of float32
    for name, info in files.items():
        figures = info["verification"]
        assert figures["examples"] == 1000, name  # the sample's whole test split
        assert figures["argmax_agreement"] >= 0.99, (name, figures)
        assert figures["savedmodel_accuracy"] - figures["accuracy"] <= 0.01, (name, figures)
        assert "macro_auc_ovr" in figures and "savedmodel_macro_auc_ovr" in figures
    assert metadata["exports"]["litert"]["calibration_images"] == 300
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.count("## Exported formats") == 1 and "`litert/model_int8.tflite`" in card and "`onnx/model.onnx`" in card


def test_the_versions_run_gets_the_files_and_figures(exported):
    import mlflow

    client = mlflow.MlflowClient(exported["env"]["MLFLOW_TRACKING_URI"])
    run_id = exported["summary"]["run_id"]
    assert {a.path for a in client.list_artifacts(run_id, "litert")} >= {"litert/model_int8.tflite", "litert/model_float16.tflite"}
    assert "onnx/model.onnx" in {a.path for a in client.list_artifacts(run_id, "onnx")}
    metrics = client.get_run(run_id).data.metrics
    assert metrics["litert_int8_argmax_agreement"] >= 0.99 and metrics["onnx_argmax_agreement"] >= 0.99
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/saved_model/metadata.json"))
    assert set(logged["exports"]) == {"litert", "onnx"}


def test_a_file_that_disagrees_with_the_savedmodel_is_not_published(exported, monkeypatch):
    """The same real conversion, checked against a reference it cannot match (the SavedModel's
    answers for other images): refused with its figures, nothing published, no staging left."""
    from pipelines.data.loaders import load_dataset

    for name, value in exported["env"].items():
        monkeypatch.setenv(name, value)
    folder = exported["folder"]
    before = (folder / "onnx" / "model.onnx").read_bytes()
    test = load_dataset(exported["spec"]).test
    other = np.eye(10, dtype=np.float32)[(test.y + 1) % 10]  # confidently wrong on every image
    with pytest.raises(PipelineError, match=r"onnx model.onnx not published: argmax agrees .* on \d+\.\d+% on 1000 images") as error:
        edge.export_format(folder, "onnx", other, test.x, test.y)
    assert "\n" not in str(error.value)
    assert (folder / "onnx" / "model.onnx").read_bytes() == before  # the verified file stays
    assert not list(folder.glob(".onnx-*"))


def test_an_int8_file_past_its_gate_is_left_out_and_float16_still_published(exported, tmp_path):
    """A real int8 conversion calibrated on black images only (every activation range collapses
    to zero) answers garbage and is refused with its figures; the float16 file of the same
    conversion, which needs no calibration, passes and is published alone; the card says both."""
    import tensorflow as tf

    from pipelines.data.loaders import load_dataset
    from pipelines.export import saved_model

    folder = tmp_path / "1"
    shutil.copytree(exported["folder"], folder, ignore=shutil.ignore_patterns("litert", "onnx"))
    test = load_dataset(exported["spec"]).test
    loaded = tf.saved_model.load(str(folder))
    reference = saved_model.call_serving(loaded, test.x)
    entry = edge.export_format(folder, "litert", reference, test.x, test.y, np.zeros((20, *test.x.shape[1:]), np.uint8))
    assert set(entry["files"]) == {"model_float16.tflite"} and set(entry["refused"]) == {"model_int8.tflite"}
    assert sorted(p.name for p in (folder / "litert").iterdir()) == ["metadata.json", "model_float16.tflite"]
    refused = entry["refused"]["model_int8.tflite"]
    assert refused["verification"]["argmax_agreement"] < 0.99 and "litert model_int8.tflite not published" in refused["reason"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "`litert/model_float16.tflite`" in card and "`litert/model_int8.tflite`: not published, past the gate" in card
    assert not list(folder.glob(".litert-*"))


def test_a_process_without_tensorflow_classifies_a_photo_with_the_int8_file(exported, tmp_path):
    """A real test digit as a phone photo would arrive (RGB JPEG, 10x larger), classified by the
    project's predict verb and by the device script on the litert/ folder copied alone."""
    from PIL import Image

    from pipelines.data.loaders import load_dataset

    test = load_dataset(exported["spec"]).test
    index = int(np.flatnonzero(test.y == 7)[0])
    photo = tmp_path / "seven.jpg"
    Image.fromarray(test.x[index]).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB").save(photo, quality=92)
    device = tmp_path / "device"
    shutil.copytree(exported["folder"] / "litert", device)  # what is copied onto the device

    env = {**exported["env"], "PYTHONPATH": str(REPO)}
    model = str(device / "model_int8.tflite")
    for blocked, module, arguments in ((WITHOUT_TENSORFLOW, "pipelines", ["predict", "digits", "--model", model, "--json", str(photo)]),
                                       (DEVICE_ONLY, "pipelines.serving.device_predict", [model, "--json", str(photo)])):
        result = run_without(blocked, module, *arguments, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout.splitlines()[-1])
        assert answer["label"] == "7" and answer["file"] == str(photo), answer


def test_unreadable_file_and_wrong_usecase_are_one_line(exported, tmp_path):
    model = exported["folder"] / "onnx" / "model.onnx"
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    result = run_cli("predict", "digits", "--model", str(model), str(bad), env=exported["env"])
    assert result.returncode == 1 and result.stderr.strip().startswith("error: ") and "not a readable image" in result.stderr
    result = run_cli("predict", "clothing", "--model", str(model), str(bad), env=exported["env"])
    assert result.returncode == 1 and result.stderr.strip() == f"error: {model} is a 'digits' model, not 'clothing'"


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_serve_format_puts_the_verified_file_behind_the_same_mlflow_model(exported, monkeypatch, fmt):
    """What `serve --format` hands to MLflow's scoring server, loaded as the server loads it
    (without HTTP: tests/test_serve.py covers the server): same answers, same refusals."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from pipelines.data.loaders import load_dataset
    from pipelines.serving.serve import edge_serving_model

    for name, value in exported["env"].items():
        monkeypatch.setenv(name, value)
    folder = exported["folder"]
    served = mlflow.pyfunc.load_model(edge_serving_model("digits", str(folder), fmt))
    images = load_dataset(exported["spec"]).test.x[:8]
    expected = edge.run_file(folder / fmt / ("model.onnx" if fmt == "onnx" else "model_int8.tflite"), images).argmax(axis=1)
    assert [record["label"] for record in served.predict(images.tolist())] == [str(i) for i in expected]
    with pytest.raises(MlflowException, match="got floats"):
        served.predict((images / 255.0).tolist())
    # The scoring server calls predict from several threads at once, with batches of any size.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: served.predict(images[: 1 + n % 8].tolist()), range(64)))
    assert all([record["label"] for record in answer] == [str(i) for i in expected[: len(answer)]] for answer in answers)


def test_table_models_are_refused_before_any_work_saying_why(tmp_path):
    metadata = {"usecase": "heart", "columns": ["age", "sex"]}
    with pytest.raises(PipelineError, match="HashTableV2.*SELECT_TF_OPS.*make serve-heart"):
        edge.check_exportable(metadata, "litert", tmp_path)
    with pytest.raises(PipelineError, match="tf2onnx converts only string <-> int64 ones.*make serve-heart"):
        edge.check_exportable(metadata, "onnx", tmp_path)


def test_export_verb_refuses_mixed_options_in_one_line():
    result = run_cli("export", "digits", "--format", "litert", "--checkpoint", "x.keras")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --format litert converts a published version (--model REF), not a --checkpoint"
    result = run_cli("export", "digits", "--model", "models/digits/1")
    assert result.returncode == 2 and "--format litert or onnx" in result.stderr


# Each converts with its views kept and is checked by both runtimes, in `make test` (issue 22's
# done-when), on models trained one short epoch on the samples. Such weak models may fail the
# int8 gate (measured 2026-12-02 on sample models: clothing at 3 epochs agreed on 98.9%, cucumber
# near chance on 46%: near-tied probabilities flip their argmax under int8 rounding); then the
# refusal must be the gate's, with its figures. The full-data figures: `make bench-edge`.
@pytest.mark.parametrize("usecase,overrides", [
    ("clothing", {"train.epochs": 1, "data.train_limit": 1000}),  # 2 mirror views in the graph
    ("skin", {"train.epochs": 1, "data.train_limit": 1000}),  # 8 views
    ("cucumber", {"train.epochs": 1, "train.fine_tune_epochs": 0, "validation.cv_folds": 0}),  # MobileNet, upsampled to 128
])
def test_every_image_usecase_converts_with_its_views(tmp_path_factory, usecase, overrides):
    import mlflow

    with trained_once(tmp_path_factory, usecase, {"data.source": "sample", "export.formats": ("litert", "onnx"), **overrides}) as run:
        formats = run["summary"].get("formats", {})
        assert formats["onnx"]["files"]["model.onnx"]["verification"]["argmax_agreement"] >= 0.99
        if "litert" in formats:  # each variant published past its gate, or left out with its figures
            for name, info in formats["litert"]["files"].items():
                assert info["verification"]["argmax_agreement"] >= 0.99, (usecase, name, info["verification"])
            for name, info in formats["litert"].get("refused", {}).items():
                assert f"litert {name} not published: argmax agrees" in info["reason"], info
        else:
            tags = mlflow.MlflowClient(run["env"]["MLFLOW_TRACKING_URI"]).get_run(run["summary"]["run_id"]).data.tags
            assert "litert model_int8.tflite not published: argmax agrees" in tags["export_litert_failed"], tags  # both refused: the first
