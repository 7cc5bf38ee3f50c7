import numpy as np
import pytest

from pipelines.config import apply_overrides
from pipelines.training import class_weights, learning_rate_schedule, spec_fingerprint
from pipelines.usecases import get_spec


def test_class_weights_balance_the_loss():
    y = np.array([0] * 90 + [1] * 10)
    weights = class_weights(y, 3)
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    assert weights[2] == 0.0
    softer = class_weights(y, 3, power=0.5)
    assert softer[1] == pytest.approx(weights[1] ** 0.5) and softer[1] / softer[0] == pytest.approx(3.0)


def test_cosine_schedule_decays_to_one_percent():
    spec = apply_overrides(get_spec("digits"), {"epochs": 2, "learning_rate": 0.01})
    schedule = learning_rate_schedule(spec, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(20)) == pytest.approx(1e-4, rel=1e-3)
    assert learning_rate_schedule(apply_overrides(spec, {"schedule": "constant"}), 10) == 0.01


def test_fingerprint_ignores_export_settings_only():
    spec = get_spec("digits")
    assert spec_fingerprint(spec) == spec_fingerprint(apply_overrides(spec, {"export.enabled": False}))
    assert spec_fingerprint(spec) != spec_fingerprint(apply_overrides(spec, {"epochs": 99}))
