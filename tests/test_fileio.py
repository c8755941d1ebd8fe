"""fileio.link_if_identical: one copy on disk only where the bytes are the same."""

from __future__ import annotations

from lookalike.fileio import link_if_identical


def test_only_equal_files_become_one(tmp_path):
    original = tmp_path / "a.npy"
    original.write_bytes(b"x" * 3_000_000)
    same, other, shorter = (tmp_path / n for n in ("same", "other", "shorter"))
    same.write_bytes(b"x" * 3_000_000)
    other.write_bytes(b"x" * 2_999_999 + b"y")  # differs in its last chunk only
    shorter.write_bytes(b"x" * 10)
    assert link_if_identical(original, same)
    assert same.stat().st_ino == original.stat().st_ino
    assert not link_if_identical(original, other) and not link_if_identical(original, shorter)
    assert other.stat().st_ino != original.stat().st_ino
    assert not link_if_identical(original, tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "other", "same", "shorter"]
