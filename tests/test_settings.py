import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.__main__ import main
from pipelines.core.errors import UsageError
from pipelines.usecases import USECASES, get_spec
from pipelines.usecases.settings import apply_overrides, flatten, resolve_key, validate


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
    with pytest.raises(UsageError, match="expected an int value"):
        apply_overrides(spec, ["epochs=three"])
    with pytest.raises(UsageError, match="key=value"):
        apply_overrides(spec, ["epochs"])


def test_fixed_fields_cannot_be_overridden(spec):
    keys = flatten(spec)
    assert "name" not in keys and "class_names" not in keys and "data.loader" not in keys
    with pytest.raises(UsageError):
        apply_overrides(spec, ["class_names=a,b"])



@pytest.mark.parametrize("usecase", USECASES)
def test_every_default_spec_is_valid(usecase):
    validate(get_spec(usecase))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=-1", "train.epochs=-1: must be >= 1"),
        ("epochs=0", "train.epochs=0: must be >= 1"),
        ("batch_size=0", "train.batch_size=0: must be >= 1"),
        ("model.dropout=1.5", "model.dropout=1.5: must be >= 0 and < 1"),
        ("learning_rate=-1", "train.learning_rate=-1.0: must be > 0"),
        ("learning_rate=nan", "train.learning_rate=nan: must be > 0"),
        ("schedule=linear", "train.schedule=linear: must be one of cosine, constant"),
        ("val_fraction=1", "data.val_fraction=1.0: must be >= 0 and < 1"),
        ("filters=32,0", "model.filters=32,0: must be >= 1"),
        ("warmup_epochs=6", "train.warmup_epochs=6: must be fewer than train.epochs=6"),
        ("fine_tune_epochs=2", "train.fine_tune_epochs=2 needs a pretrained backbone; builder 'small_cnn' has none"),
        ("model.builder=tabular_mlp", "model.builder=tabular_mlp builds tabular_classification models; digits needs one of"),
    ],
)
def test_values_outside_their_domain_are_refused(spec, override, message):
    with pytest.raises(UsageError) as error:
        apply_overrides(spec, [override])
    assert str(error.value).startswith(message) and error.value.exit_code == 2


def test_domains_of_other_tasks_and_builders():
    with pytest.raises(UsageError, match="heart is judged by cross-validation only"):
        apply_overrides(get_spec("heart"), ["cv_folds=0"])
    # Heart's binary/severity choice is an option of its loader (tabular.target names a column).
    with pytest.raises(UsageError, match="data.options.target=other: must be one of binary, severity"):
        apply_overrides(get_spec("heart"), ["target=other"])
    severity = apply_overrides(get_spec("heart"), ["target=severity"])
    assert severity.data.options["target"] == "severity" and severity.tabular.target == "num"
    with pytest.raises(UsageError, match="model.backbone=vgg: must be one of mobilenet"):
        apply_overrides(get_spec("cucumber"), ["backbone=vgg"])
    with pytest.raises(UsageError, match="model.weights=/nonexistent.h5: no such file"):
        apply_overrides(get_spec("cucumber"), ["weights=/nonexistent.h5"])
    assert apply_overrides(get_spec("cucumber"), ["fine_tune_epochs=2"]).train.fine_tune_epochs == 2
    with pytest.raises(UsageError, match="train.fine_tune_epochs=10 with model.weights=none: fine-tuning freezes the BatchNorm"):
        apply_overrides(get_spec("cucumber"), ["weights=none"])
    assert apply_overrides(get_spec("cucumber"), ["weights=none", "fine_tune_epochs=0", "epochs=30"]).train.epochs == 30


@pytest.mark.parametrize(
    ("usecase", "overrides", "message"),
    [
        ("cucumber", ["cv_folds=1"], "validation.cv_folds=1: must be 0 (the held-out test split) or at least 2 folds"),
        ("heart", ["cv_folds=1"], "validation.cv_folds=1: must be 0"),
        ("digits", ["cv_repeats=3"], "validation.cv_repeats=3 repeats cross-validation, which is off (cv_folds=0)"),
        ("skin", ["cv_folds=5", "early_stopping_patience=3"], "train.early_stopping_patience=3: with cv_folds every fit runs"),
        ("digits", ["views=3"], "data.views=3 stacks RGB photos as channels: only colour image use cases"),
        ("cucumber", ["views=0"], "data.views=0: must be >= 1"),
    ],
)
def test_cross_validation_and_views_rules(usecase, overrides, message):
    with pytest.raises(UsageError) as error:
        apply_overrides(get_spec(usecase), overrides)
    assert str(error.value).startswith(message)


def test_one_cv_setting_for_every_task():
    """`cv_folds` is one key, `validation.cv_folds`, whatever the task: no use case finds it ambiguous."""
    for usecase in USECASES:
        spec = apply_overrides(get_spec(usecase), ["cv_folds=3", "cv_repeats=2"])
        assert (spec.validation.cv_folds, spec.validation.cv_repeats) == (3, 2)
    assert get_spec("heart").validation.cv_folds == 5 and get_spec("digits").validation.cv_folds == 0


def test_image_size_is_a_key_only_where_the_loader_resizes():
    """Skin's loader decodes and resizes HAM10000 JPEGs; MNIST, CIFAR and CSV loaders read arrays
    as they are, so `data.image_size` there would change nothing: refused like an unknown key."""
    skin = get_spec("skin")
    assert skin.data.image_size == 28 and apply_overrides(skin, ["image_size=192"]).data.image_size == 192
    with pytest.raises(UsageError, match="data.image_size=2000: must be >= 0 and <= 1024"):
        apply_overrides(skin, ["data.image_size=2000"])
    for usecase in ("digits", "clothing", "heart", "cucumber"):
        assert "data.image_size" not in flatten(get_spec(usecase)), usecase
        with pytest.raises(UsageError, match="unknown --set key 'data.image_size'"):
            apply_overrides(get_spec(usecase), ["data.image_size=64"])
    # cucumber's `image_size` stays its backbone's (the README's `SET="image_size=160 ..."`) ...
    assert apply_overrides(get_spec("cucumber"), ["image_size=160"]).model.params["image_size"] == 160
    # ... and skin with a backbone has both: the short key names them.
    transfer = apply_overrides(skin, ["model.builder=transfer"])
    with pytest.raises(UsageError, match="ambiguous for skin: use one of data.image_size, model.image_size"):
        apply_overrides(transfer, ["image_size=192"])


def test_a_bad_value_is_refused_before_any_data_is_loaded(tmp_path):
    """No download, no TensorFlow: the full-data default would otherwise start fetching MNIST."""
    from conftest import run_cli

    result = run_cli("train", "digits", "--set", "epochs=-1", env={"PIPELINES_DATA_ROOT": str(tmp_path)})
    assert result.returncode == 2 and result.stderr == "error: train.epochs=-1: must be >= 1\n"
    assert not any(tmp_path.iterdir())


KEYS = sorted({key for usecase in USECASES for key in flatten(get_spec(usecase))} | {"epoch", "model", "", "train."})


@settings(max_examples=300, deadline=None)
@given(
    usecase=st.sampled_from(USECASES),
    key=st.sampled_from(KEYS) | st.text(max_size=12),
    value=st.one_of(
        st.text(max_size=12),
        st.integers().map(str),
        st.floats().map(str),
        st.sampled_from(["none", "true", "1,2", "[1, 2]", "(", "nan", "-0"]),
    ),
)
def test_no_override_reaches_a_traceback(usecase, key, value):
    """Whatever `--set key=value` a user types, `show` answers with the spec or a one-line error."""
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(["show", usecase, f"--set={key}={value}"])
    assert code in (0, 2)
    if code == 2:
        assert stderr.getvalue().startswith("error: ") and stderr.getvalue().count("\n") == 1
