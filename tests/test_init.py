"""`write_usecase_file`: the user's folder, printed, the next command, never over a file."""

import pytest

from pipelines.core.errors import UsageError
from pipelines.usecases.init import write_usecase_file


def test_writes_prints_and_never_overwrites(tmp_path, capsys):
    path = write_usecase_file("grapes", 'title = "Grapes"\n', tmp_path)
    assert path == tmp_path / "grapes.toml" and path.read_text() == 'title = "Grapes"\n'
    out = capsys.readouterr().out
    assert out.startswith('title = "Grapes"\n') and "next: make train-grapes" in out
    with pytest.raises(UsageError, match="grapes.toml exists; init never overwrites"):
        write_usecase_file("grapes", "other", tmp_path)
    assert path.read_text() == 'title = "Grapes"\n'
    with pytest.raises(UsageError, match="'heart' is a built-in use case"):
        write_usecase_file("heart", "x", tmp_path)
    with pytest.raises(UsageError, match="lower-case letters, digits"):
        write_usecase_file("My Grapes", "x", tmp_path)
