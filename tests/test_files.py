"""Atomic writes: a reader or a crash sees the old file or the new one, never a part; temporaries
are ours, and a killed writer's are removed by the next write; output paths are checked before any
work."""

import os
import subprocess
import sys

import pytest

from latentdiff.errors import UserError
from latentdiff.files import TMP_SUFFIX, atomic_folder, atomic_write, check_output, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("crash")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    # a real process that dies (SIGKILL) in the middle of a write: its pid is gone afterwards
    code = ("import os, sys; from latentdiff.files import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n    f.write(b'x' * 1000); f.flush(); "
            "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.txt")], check=False)
    left = [p for p in os.listdir(tmp_path) if p.endswith(TMP_SUFFIX)]
    assert len(left) == 1 and not (tmp_path / "a.txt").exists()
    write_text(tmp_path / "a.txt", "new")
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "new"


def test_folders_appear_whole_and_replace_an_old_one_only_when_complete(tmp_path):
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "f", replace=True) as tmp:
        (tmp / "x").write_text("2")
        raise RuntimeError("crash")
    assert (tmp_path / "f" / "x").read_text() == "1" and os.listdir(tmp_path) == ["f"]
    with atomic_folder(tmp_path / "f", replace=True) as tmp:
        (tmp / "y").write_text("3")
    assert os.listdir(tmp_path / "f") == ["y"] and os.listdir(tmp_path) == ["f"]


def test_output_checks_create_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    for path, kind, words in ((tmp_path / "out", "file", "no extension"),
                              (tmp_path, "file", "is a folder"),
                              (tmp_path / "file" / "o.png", "file", "which is a file"),
                              (tmp_path / "file", "new folder", "already exists"),
                              (tmp_path / "file", "folder", "a file"),
                              ("/proc/o.png", "file", "not writable")):
        with pytest.raises(UserError, match=words):
            check_output(path, "--out", (".png",) if kind == "file" else (), kind)
    deeper = tmp_path / "new" / "deeper" / "o.png"
    assert check_output(deeper, "--out", (".png",)) == deeper
    assert sorted(os.listdir(tmp_path)) == ["file"]
