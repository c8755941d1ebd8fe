"""Issue 15, item 11 and the moved files: where `lookalike query --sheet` writes, through the
real command line (a collection indexed in one process, queried in others)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.cli.test_reliability_args import indexed_colour_folder, lookalike, one_line_error
from tests.end_to_end.test_reliability import FAKE, colour_folder

PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    return indexed_colour_folder(tmp_path_factory.mktemp("sheet"))


def sheet(coll: Path, target: Path | str, *extra: str):
    return lookalike("query", str(coll), "c0/00.png", "-k", "3", "--sheet", str(target), *extra)


def test_a_new_sheet_is_written_atomically_in_the_format_of_its_extension(collection, tmp_path):
    _, coll = collection
    for name, magic in [("new.png", PNG), ("new.jpg", JPEG), ("new.JPEG", JPEG)]:
        done = sheet(coll, tmp_path / "out" / name)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "out" / name).read_bytes().startswith(magic), name
    assert (tmp_path / "out" / "new.webp").exists() is False
    assert sheet(coll, tmp_path / "out" / "new.webp").returncode == 0
    data = (tmp_path / "out" / "new.webp").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["new.JPEG", "new.jpg", "new.png", "new.webp"]  # no temporary file left


def test_an_existing_file_is_written_into_also_through_a_link(collection, tmp_path):
    _, coll = collection
    target = tmp_path / "kept.png"
    target.write_bytes(b"old")
    target.chmod(0o640)
    (tmp_path / "hard.png").hardlink_to(target)
    (tmp_path / "link.png").symlink_to(target)
    inode = target.stat().st_ino
    for name in ("kept.png", "link.png"):
        done = sheet(coll, tmp_path / name)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "link.png").is_symlink()
        assert target.stat().st_ino == inode and stat.S_IMODE(target.stat().st_mode) == 0o640
        assert (tmp_path / "hard.png").read_bytes().startswith(PNG)  # the same file, written


def special_targets(tmp_path: Path) -> dict[str, Path]:
    """Targets a sheet must never replace nor write to: name -> path."""
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "to-fifo.png").symlink_to(tmp_path / "fifo.png")
    targets = {
        "fifo": tmp_path / "fifo.png",
        "folder": tmp_path / "folder.png",
        "link to a missing file": tmp_path / "dangling.png",
        "link to a fifo": tmp_path / "to-fifo.png",
    }
    if os.geteuid() == 0:  # a copy of /dev/full's device node (as root, the case)
        full = os.stat("/dev/full").st_rdev
        os.mknod(tmp_path / "full.png", stat.S_IFCHR | 0o666, full)
        targets["device"] = tmp_path / "full.png"
    return targets


def test_a_folder_fifo_or_device_is_refused_and_left_as_it_was(
    collection, tmp_path, record_property
):
    _, coll = collection
    targets = special_targets(tmp_path)
    before = {name: os.lstat(path) for name, path in targets.items()}
    for name, path in targets.items():
        err = one_line_error(sheet(coll, path))
        assert str(path) in err, (name, err)
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode) == (before[name].st_ino, before[name].st_mode), name
    record_property("sheet_targets_refused", len(targets))


@pytest.mark.parametrize("name", ["sheet.gif", "sheet", "sheet.png.txt"])
def test_an_unknown_extension_is_refused_naming_the_path(collection, tmp_path, name):
    _, coll = collection
    err = one_line_error(sheet(coll, tmp_path / name))
    assert str(tmp_path / name) in err and ".png" in err
    assert not (tmp_path / name).exists()


def test_a_sheet_of_moved_files_warns_naming_them_and_exits_1(tmp_path):
    root = colour_folder(tmp_path / "photos", per_colour=3)
    coll = tmp_path / "coll"
    assert lookalike("index", str(root), "-c", str(coll), *FAKE).returncode == 0
    shutil.move(root / "c1", tmp_path / "elsewhere")  # the others' images moved away
    shutil.move(root / "c2", tmp_path / "elsewhere2")
    out = tmp_path / "sheet.png"
    done = lookalike("query", str(coll), "c0/00.png", "-k", "8", "--json", "--sheet", str(out))
    assert done.returncode == 1, done.stderr
    assert out.read_bytes().startswith(PNG)
    gone = {f"{root}/c{c}/{i:02d}.png" for c in (1, 2) for i in range(3)}
    warned = done.stderr.splitlines()
    assert len(warned) == len(gone) and "Traceback" not in done.stderr
    assert {line.split(": ")[2] for line in warned} == gone, warned
    assert all(
        line.startswith("lookalike: warning: ") and "no such file" in line for line in warned
    )
