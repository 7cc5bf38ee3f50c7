"""Heart CSVs as users save them (Excel, European Excel, hand edits): each problem is one line
naming the file (and row, line or column), and every row that can be predicted still is. The
reading and checking are tested here without a model; test_tabular_pipeline.py runs the CLI on
a trained one."""

import numpy as np
import pytest

from pipelines.serving.predict_table import prepare

HEADER = "age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal"
METADATA = {"columns": HEADER.split(","), "categories": {"cp": [1, 2, 3, 4]}}
ROWS = ["63,1,1,145,233,1,2,150,0,2.3,3,0,6", "67,1,4,160,286,0,2,108,1,1.5,2,3,3", "41,0,2,130,204,0,2,172,0,1.4,1,0,3"]


def write(tmp_path, text, name="patients.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def test_a_clean_file(tmp_path):
    frame, rows, errors, warnings = prepare(write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n"), METADATA)
    assert rows == [1, 2, 3] and errors == [] and warnings == []
    assert frame["oldpeak"].tolist() == pytest.approx([2.3, 1.5, 1.4]) and frame.dtypes.unique().tolist() == [np.float32]


def test_empty_file_and_header_only(tmp_path):
    for text, message in (("", "the file is empty; expected a header row"), ("\n \n", "the file is empty"),
                          (HEADER + "\n", "a header but no data rows")):
        path = write(tmp_path, text)
        frame, rows, errors, _ = prepare(path, METADATA)
        assert frame is None and rows == [] and len(errors) == 1 and errors[0].startswith(f"{path}: {message}")


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    frame, rows, errors, _ = prepare(path, METADATA)
    assert errors == [] and rows == [1, 2, 3] and frame["age"].tolist() == [63, 67, 41]


def test_semicolons_with_decimal_commas_are_accepted(tmp_path):
    """Decided: accepted. A header with `;` and no `,` is unambiguous, and then a comma in a
    cell can only be a decimal comma (European Excel writes `2,3`)."""
    text = "\n".join(line.replace(",", ";") for line in [HEADER, *ROWS]).replace("2.3", "2,3").replace("1.5", "1,5")
    frame, rows, errors, _ = prepare(write(tmp_path, text + "\n"), METADATA)
    assert errors == [] and rows == [1, 2, 3]
    assert frame["oldpeak"].tolist() == pytest.approx([2.3, 1.5, 1.4]) and frame["age"].tolist() == [63, 67, 41]


def test_mixed_separators_name_the_missing_columns(tmp_path):
    path = write(tmp_path, HEADER.replace(",", ";", 3) + "\n" + ROWS[0] + "\n")  # a half-converted file
    frame, _, errors, _ = prepare(path, METADATA)
    assert frame is None and len(errors) == 1 and errors[0].startswith(f"{path}: missing column(s) age, sex, cp, trestbps")
    assert errors[0].endswith("(the header mixes ';' and ',': use one separator)")


def test_duplicated_column_refuses_the_file(tmp_path):
    path = write(tmp_path, HEADER + ",age\n" + "\n".join(row + ",64" for row in ROWS) + "\n")
    frame, rows, errors, _ = prepare(path, METADATA)
    assert frame is None and rows == []
    assert errors == [f"{path}: column(s) age appear more than once; keep one of each"]


def test_rows_with_too_many_or_too_few_fields_are_skipped_by_number(tmp_path):
    lines = [HEADER, ROWS[0], ROWS[1] + ",99", "", ROWS[2], "50,1,2"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    frame, rows, errors, _ = prepare(path, METADATA)
    assert rows == [1, 3] and frame["age"].tolist() == [63, 41]  # row numbers count data rows, blank lines skipped
    assert errors == [f"{path} row 2 (line 3): 14 fields, the header has 13; row skipped",
                      f"{path} row 4 (line 6): 3 fields, the header has 13; row skipped"]


def test_an_unreadable_file_is_one_error_not_an_exception(tmp_path):
    path = tmp_path / "latin1.csv"
    raw = HEADER.encode() + b"\n63,1,1,145,233,1,2,150,0,2.3,3,0,\xe9\n"  # Latin-1, as older Excel saves
    path.write_bytes(raw)
    _, _, errors, _ = prepare(str(path), METADATA)
    offset = raw.index(b"\xe9")
    assert errors == [f"{path}: not UTF-8 text (byte {offset}); save it as CSV UTF-8"]
    _, _, errors, _ = prepare(str(tmp_path / "absent.csv"), METADATA)
    assert errors == [f"{tmp_path / 'absent.csv'}: no such file"]
