import json

import pytest

from pipelines.core.errors import PipelineError
from pipelines.modeling.builders import cpu_bfloat16_pays
from pipelines.training.strategy import _pick_precision, cpu_has_amx_bf16, setup_distribution


@pytest.fixture(autouse=True)
def _restore_precision_policy():
    # setup_distribution sets Keras' global policy, as training wants; later tests want theirs.
    from pipelines.core.runtime import import_keras

    keras = import_keras()
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_cpu_gets_one_device_in_bfloat16_only_with_amx():
    setup = setup_distribution("auto")
    expected = "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"
    assert (setup.backend, setup.strategy, setup.replicas, setup.precision) == ("tensorflow", "default", 1, expected)
    assert setup.global_batch(128) == 128
    assert setup.as_tags()["devices"] == "cpu"


def test_models_that_bfloat16_slows_down_stay_float32_on_cpu():
    assert setup_distribution("auto", cpu_bfloat16=False).precision == "float32"
    assert not cpu_bfloat16_pays("transfer") and cpu_bfloat16_pays("residual_cnn")
    assert setup_distribution("mixed_bfloat16", cpu_bfloat16=False).precision == "mixed_bfloat16"  # asked for: given


def test_precision_choice():
    assert _pick_precision("auto", [], True) == "float32"
    assert _pick_precision("auto", [], True, cpu_bf16=True) == "mixed_bfloat16"
    assert _pick_precision("auto", ["gpu"], True) == "mixed_bfloat16"
    assert _pick_precision("auto", ["gpu"], False) == "mixed_float16"
    assert _pick_precision("float32", ["gpu"], True) == "float32"


def test_multi_worker_tf_config_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(PipelineError, match="KERAS_BACKEND=jax"):
        setup_distribution("auto")
