"""Atomic writes: all or nothing, usual permissions."""
import os

import pytest

from fusion.atomic import atomic_path, write_text_atomic


def test_atomic_write_permissions_and_content(tmp_path):
    p = tmp_path / "a.txt"
    write_text_atomic(p, "hello")
    assert p.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_failed_write_leaves_target_untouched(tmp_path):
    p = tmp_path / "b.ply"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["b.ply"]
