"""Column kinds, class order and signature names: one inference for `init --table` and the
csv loader. No model, no files: frames of text cells as `read_csv` gives them."""

import pandas as pd
import pytest

from pipelines.core.errors import PipelineError
from pipelines.data.table_schema import check_signature_names, class_names_of, feature_frame, infer_columns, signature_name


def cells(**columns):
    return pd.DataFrame(columns, dtype=object)


def test_kinds_are_inferred_from_the_values():
    rows = 30
    frame = cells(
        patient_id=[str(1000 + i) for i in range(rows)],  # an integer per row, named like an id
        code=[f"P-{i:04d}" for i in range(rows)],  # text per row: an identifier
        age=[str(40 + i % 17) + ".5" for i in range(rows)],  # numbers
        visits=[str(i) for i in range(rows)],  # unique integers not named like an id: numeric
        cp=[str(1 + i % 4) for i in range(rows)],  # a few integer codes: categorical
        colour=["red", "blue", None][:1] * 10 + ["blue"] * 10 + [None] * 10,  # text with repeats, some missing
        constant=["x"] * rows,
        empty=[None] * rows,
    )
    found = infer_columns(frame)
    assert found.numeric == ["age", "visits"] and found.categorical == ["cp", "colour"] and found.text == ["colour"]
    assert set(found.dropped) == {"patient_id", "code", "constant", "empty"}
    assert found.dropped["patient_id"].startswith("an identifier")
    features = feature_frame(frame, found)
    assert features["colour"].tolist()[-1] == "" and features["cp"].dtype == "float32"


def test_overrides_win_and_are_checked():
    frame = cells(cp=["1", "2", "3", "2"], size=["1.5", "2.5", "1.5", "2"], name=["a", "b", "a", "b"])
    found = infer_columns(frame, numeric=("cp",), categorical=("size",))
    assert found.numeric == ["cp"] and found.categorical == ["size", "name"] and found.text == ["size", "name"]
    with pytest.raises(PipelineError, match="column 'name' is declared numeric \\(tabular.numeric\\) but holds 'a'"):
        infer_columns(frame, numeric=("name",))
    with pytest.raises(PipelineError, match="has no column 'nope' \\(named in tabular.categorical\\)"):
        infer_columns(frame, categorical=("nope",))


def test_free_text_is_refused_naming_the_column_and_the_way_out():
    notes = [f"patient number {i} reported mild pain after the second visit" for i in range(40)]
    frame = cells(notes=notes, age=[str(i) for i in range(40)])
    with pytest.raises(PipelineError) as error:
        infer_columns(frame, where="visits.csv")
    message = str(error.value)
    assert message.startswith("visits.csv, column 'notes' looks like free text (40 distinct values in 40 rows")
    assert 'tabular.drop = ["notes"]' in message and 'tabular.categorical = ["notes"]' in message and "\n" not in message
    assert infer_columns(frame, ("notes",)).numeric == ["age"]  # dropped (tabular.drop): fine


def test_class_order_numbers_and_the_positive_class():
    assert class_names_of(["b", "a", "c", "a"]) == ("a", "b", "c")
    assert class_names_of(["10", "9", "2"]) == ("2", "9", "10")  # numerically
    assert class_names_of(["malignant", "benign"], positive="benign") == ("malignant", "benign")
    with pytest.raises(PipelineError, match="the positive class 'yes' is not a value of the target"):
        class_names_of(["a", "b"], positive="yes")
    with pytest.raises(PipelineError, match="has 3 classes, not 2"):
        class_names_of(["a", "b", "c"], positive="a")


def test_signature_names_are_tensorflow_names_and_never_collide():
    assert signature_name("mean radius") == "mean_radius" and signature_name("age") == "age"
    assert signature_name("_x") == "c_x" and signature_name("BMI (kg/m²)") == "BMI__kg/m__"
    with pytest.raises(PipelineError, match="columns 'a b' and 'a_b' would have the same name 'a_b'"):
        check_signature_names(["a b", "a_b"])
