import pytest

from baeraser_lib.atomic import atomic_open


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "figures.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["figures.json"]
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o644"
