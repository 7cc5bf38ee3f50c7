import pytest

from pipelines.config import apply_overrides, flatten, resolve_key
from pipelines.errors import UsageError
from pipelines.usecases import get_spec


@pytest.fixture
def spec():
    return get_spec("digits")


def test_short_and_dotted_keys_resolve(spec):
    assert resolve_key(spec, "epochs") == "train.epochs"
    assert resolve_key(spec, "train.epochs") == "train.epochs"
    assert resolve_key(spec, "dropout") == "model.dropout"


def test_overrides_are_parsed_to_the_field_type(spec):
    new = apply_overrides(spec, ["epochs=3", "batch_size=256", "learning_rate=1e-4", "deterministic=false", "filters=16,32,64"])
    assert new.train.epochs == 3 and new.train.batch_size == 256
    assert new.train.learning_rate == pytest.approx(1e-4)
    assert new.train.deterministic is False
    assert new.model.params["filters"] == (16, 32, 64)
    assert spec.train.epochs != 3  # the original is untouched (frozen dataclasses)


def test_none_and_tuple_values(spec):
    new = apply_overrides(spec, ["data_dir=/tmp/x", "augmentation=rotate:0.1,zoom"])
    assert new.data.data_dir == "/tmp/x" and new.model.augmentation == ("rotate:0.1", "zoom")
    assert apply_overrides(new, ["data_dir=none"]).data.data_dir is None


def test_unknown_key_lists_the_valid_ones(spec):
    with pytest.raises(UsageError) as error:
        apply_overrides(spec, ["epoch=3"])
    assert "unknown --set key 'epoch'" in str(error.value) and "train.epochs" in str(error.value)
    assert error.value.exit_code == 2


def test_bad_values_and_syntax(spec):
    with pytest.raises(UsageError, match="expected a int value"):
        apply_overrides(spec, ["epochs=three"])
    with pytest.raises(UsageError, match="key=value"):
        apply_overrides(spec, ["epochs"])


def test_fixed_fields_cannot_be_overridden(spec):
    keys = flatten(spec)
    assert "name" not in keys and "class_names" not in keys and "data.loader" not in keys
    with pytest.raises(UsageError):
        apply_overrides(spec, ["class_names=a,b"])
