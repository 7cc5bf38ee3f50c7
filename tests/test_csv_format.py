"""The csv loader on files as people have them: each bad input is one line naming the file and
what to do; what the loader decides on its own (an id column dropped) is said, not hidden."""

import numpy as np
import pytest

from pipelines.core.errors import PipelineError
from pipelines.data.loaders.csv_format import load_table, read_csv
from pipelines.usecases.spec_file import read_spec_file

ROWS = 24


def usecase(tmp_path, text: str, target="outcome", class_names=("no", "yes"), extra: str = ""):
    csv = tmp_path / "visits.csv"
    csv.write_text(text, encoding="utf-8")
    toml = tmp_path / "visits.toml"
    toml.write_text(f'''title = "Visits"
task = "tabular_classification"
input_shape = [2]
class_names = {list(class_names)!r}
[data]
loader = "csv"
[data.options]
file = "{csv}"
[model]
builder = "tabular_mlp"
[validation]
cv_folds = 2
[tabular]
target = "{target}"
{extra}
'''.replace("'", '"'))
    return read_spec_file(toml)


def table_text(outcomes=None, header="visit_id,age,clinic,outcome"):
    outcomes = outcomes or ["yes" if i % 3 == 0 else "no" for i in range(ROWS)]
    rows = [f"{100 + i},{30 + (i * 7) % 40},{'north' if i % 2 else 'south'},{o}" for i, o in enumerate(outcomes)]
    return "\n".join([header, *rows]) + "\n"


def test_a_table_with_an_id_column_and_a_text_category(tmp_path, capsys):
    table = load_table(usecase(tmp_path, table_text()))
    assert table.numeric == ("age",) and table.categorical == ("clinic",) and table.text_columns() == ("clinic",)
    assert table.class_names == ("no", "yes") and list(table.frames) == ["all"] and table.train_groups == ("all",)
    assert np.bincount(table.targets["all"]).tolist() == [16, 8]
    assert table.notes == ("column 'visit_id' dropped: an identifier (a different integer on every row)",)
    assert "visit_id' dropped" in capsys.readouterr().out


def test_groups_train_and_hold_out(tmp_path):
    spec = usecase(tmp_path, table_text(), extra='group = "clinic"\ntrain_groups = ["south"]')
    table = load_table(spec)
    assert list(table.frames) == ["north", "south"] and table.train_groups == ("south",) and table.categorical == ()
    with pytest.raises(PipelineError, match="tabular.train_groups names east, not in column 'clinic'"):
        load_table(usecase(tmp_path, table_text(), extra='group = "clinic"\ntrain_groups = ["east"]'))


@pytest.mark.parametrize(
    ("text", "target", "message"),
    [
        (table_text(), "diagnosis", "visits.csv has no target column 'diagnosis'; its columns: visit_id, age, clinic, outcome"),
        (table_text(["no"] * ROWS), "outcome", "visits.csv: the target column 'outcome' holds one value ('no') on every row"),
        (table_text(["maybe" if i == 0 else "no" if i % 2 else "yes" for i in range(ROWS)]), "outcome",
         "visits: class_names = ['no', 'yes'], but 'outcome' in visits.csv holds ['maybe', 'no', 'yes']"),
        ("", "outcome", "the file is empty"),
        ("visit_id,age,outcome\n", "outcome", "a header but no data rows"),
    ],
)
def test_bad_tables_are_one_line(tmp_path, text, target, message):
    with pytest.raises(PipelineError) as error:
        load_table(usecase(tmp_path, text, target=target))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("name,outcome\nJos\xe9,yes\n".encode("latin-1"))
    with pytest.raises(PipelineError, match="latin1.csv: not UTF-8 text \\(byte 16\\); save it as CSV UTF-8"):
        read_csv(tmp_path / "latin1.csv")
    with pytest.raises(PipelineError, match="nothing.csv: no such file"):
        read_csv(tmp_path / "nothing.csv")
    with pytest.raises(PipelineError, match="a folder, not a CSV file"):
        read_csv(tmp_path)
    (tmp_path / "ragged.csv").write_text('a,b\n1,2\n"3,4\n')
    with pytest.raises(PipelineError, match="ragged.csv: not a readable CSV"):
        read_csv(tmp_path / "ragged.csv")


def test_european_excel_and_missing_values(tmp_path):
    (tmp_path / "eu.csv").write_text("\ufeffage;weight;outcome\n41;72,5;yes\n?;;no\n")
    frame = read_csv(tmp_path / "eu.csv")
    assert frame.columns.tolist() == ["age", "weight", "outcome"]
    assert frame["weight"].tolist() == ["72.5", None] and frame["age"].tolist() == ["41", None]
