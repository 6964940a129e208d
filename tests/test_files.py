import pytest

from mscm_jax.files import write_atomically


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def fail_halfway(tmp):
        assert tmp.suffix == ".json" and tmp != path
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail_halfway)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

    write_atomically(tmp_path / "new" / "results.json", lambda tmp: tmp.write_text("new"))
    write_atomically(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and (tmp_path / "new" / "results.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "results.json"]
