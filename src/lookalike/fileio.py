"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sqlite3
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import CollectionError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    # Created like any other program's file (0o666 less the umask, not mkstemp's 0o600), so
    # that another account can read a collection or a sheet where the umask allows it.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        # A failed write() names no file; the caller's message should ("disk full writing X").
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


# What reading a damaged .npz raises besides OSError and ValueError: a broken zip, or a
# deflated member (atomic_save_npz's `compressed`) whose stream is corrupt.
UNREADABLE_NPZ = (zipfile.BadZipFile, zlib.error)


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """`compressed`: deflated, for fitted state read whole (int8 components deflate by a
    fifth to a third); not for what is written and read once, as an index run's chunks."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def link_if_identical(original: Path, copy: Path) -> bool:
    """Make `copy` a hard link to `original` when their bytes are equal: one copy on disk
    (a generation's exact index holds the very vectors of its fused.npy). Where the file
    system has no hard links the copy stays. Returns whether it was linked."""
    if not (original.is_file() and copy.is_file()):
        return False
    if original.stat().st_size != copy.stat().st_size:
        return False
    with open(original, "rb") as a, open(copy, "rb") as b:
        while chunk := a.read(1 << 20):
            if chunk != b.read(len(chunk)):
                return False
    tmp = copy.with_name(f".{copy.name}.{uuid.uuid4().hex}.link")
    try:
        os.link(original, tmp)
    except OSError:
        return False
    os.replace(tmp, copy)
    return True


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def disk_full_is_an_error(collection: Path) -> Iterator[None]:
    """Turn "no space left" from any writer into a message that says what is still safe.

    Every write is staged or atomic, so a full disk never damages the committed state.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise CollectionError(_disk_full_message(exc.filename or collection, collection)) from exc
    except sqlite3.OperationalError as exc:
        if "disk is full" not in str(exc):
            raise
        raise CollectionError(
            _disk_full_message(Path(collection) / "catalog.sqlite", collection)
        ) from exc


def no_room_left(path: Path) -> bool:
    """Whether the file system of `path` (or of its nearest existing parent) has no free
    block or no free inode left."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


def _disk_full_message(written: str | Path, collection: Path) -> str:
    if not (Path(collection) / "manifest.json").is_file():
        return (
            f"no space left on device while creating {written}: the collection {collection} "
            "was not made; free some space (or inodes: files) and run the same command again"
        )
    return (
        f"no space left on device while writing {written}; the collection {collection} "
        "still answers queries from its last committed state: free some space and run the "
        "same command to resume"
    )
