"""Output files: atomic, normal permissions, one error naming the path, nothing partial left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ase_search.files import OutputError, atomic_write, atomic_write_text, check_writable


def test_write_creates_parents_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_path_below_a_regular_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "sub" / "out.json"
    for call in (lambda: atomic_write_text(target, "{}"), lambda: check_writable(target)):
        with pytest.raises(OutputError) as err:
            call()
        assert str(err.value) == (f"cannot write {target}: {tmp_path / 'file.txt'} is a file, "
                                  f"not a folder; choose a writable path")
    assert (tmp_path / "file.txt").read_text() == "x"


def test_folder_in_place_of_the_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="it is a folder"):
        check_writable(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_folder_that_refuses_new_files() -> None:
    # /proc refuses new files even to root, who ignores permission bits (the tests run as root).
    for call in (lambda: atomic_write_text("/proc/x.json", "{}"),
                 lambda: check_writable("/proc/sub/x.json")):
        with pytest.raises(OutputError, match="/proc does not accept new files"):
            call()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="does not accept new files"):
            atomic_write_text(folder / "x.json", "{}")
        with pytest.raises(OutputError):
            check_writable(folder / "x.json")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []
