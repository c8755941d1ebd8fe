"""The collection's catalog: one SQLite row per file seen under the indexed root."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.names import from_stored, to_stored

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- relative to the indexed root, '/' separated;
                                        -- a BLOB of the raw bytes when it is not UTF-8
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,               -- ok | error
    error TEXT,
    detector TEXT,
    faces TEXT NOT NULL DEFAULT '[]',   -- JSON: every face found, best first
    head_box TEXT,                      -- JSON [x0, y0, x1, y1]
    fallback INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
"""


@dataclass
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    status: str
    id: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    detector: str | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    head_box: tuple[int, int, int, int] | None = None
    fallback: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "sha256": self.sha256,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "detector": self.detector,
            "faces": self.faces,
            "head_box": list(self.head_box) if self.head_box else None,
            "fallback": self.fallback,
        }


_COLUMNS = (
    "id, path, size, mtime_ns, sha256, width, height, status, error, detector, faces, "
    "head_box, fallback"
)


def _row_to_record(row: tuple[Any, ...]) -> FileRecord:
    head_box = json.loads(row[11]) if row[11] else None
    return FileRecord(
        id=row[0],
        path=from_stored(row[1]),
        size=row[2],
        mtime_ns=row[3],
        sha256=row[4],
        width=row[5],
        height=row[6],
        status=row[7],
        error=row[8],
        detector=row[9],
        faces=json.loads(row[10]),
        head_box=tuple(head_box) if head_box else None,
        fallback=bool(row[12]),
    )


class Catalog:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            # WAL: readers (queries) never block on the indexing writer.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def all(self) -> list[FileRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM files ORDER BY path").fetchall()
        return [_row_to_record(r) for r in rows]

    def by_status(self, status: str) -> list[FileRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE status = ? ORDER BY path", (status,)
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def get_many(self, ids: Iterable[int]) -> dict[int, FileRecord]:
        ids = [int(i) for i in ids]
        found: dict[int, FileRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE id IN ({marks})", chunk
            ):
                found[row[0]] = _row_to_record(row)
        return found

    def by_path(self, path: str) -> FileRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE path = ?", (to_stored(path),)
        ).fetchone()
        return _row_to_record(row) if row else None

    def by_sha256(self, sha256: str) -> list[FileRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE sha256 = ? AND status = 'ok'", (sha256,)
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def upsert(self, records: Iterable[FileRecord]) -> None:
        """Insert or replace rows by path, in one transaction; fills in each record's id."""
        with self._db:
            for rec in records:
                values = (
                    to_stored(rec.path),
                    rec.size,
                    rec.mtime_ns,
                    rec.sha256,
                    rec.width,
                    rec.height,
                    rec.status,
                    rec.error,
                    rec.detector,
                    json.dumps(rec.faces),
                    json.dumps(list(rec.head_box)) if rec.head_box else None,
                    int(rec.fallback),
                )
                cur = self._db.execute(
                    """INSERT INTO files (path, size, mtime_ns, sha256, width, height, status,
                           error, detector, faces, head_box, fallback)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT(path) DO UPDATE SET
                           size=excluded.size, mtime_ns=excluded.mtime_ns,
                           sha256=excluded.sha256, width=excluded.width,
                           height=excluded.height, status=excluded.status,
                           error=excluded.error, detector=excluded.detector,
                           faces=excluded.faces, head_box=excluded.head_box,
                           fallback=excluded.fallback, updated_at=julianday('now')
                       RETURNING id""",
                    values,
                )
                rec.id = cur.fetchone()[0]

    def delete_paths(self, paths: Iterable[str]) -> None:
        with self._db:
            self._db.executemany(
                "DELETE FROM files WHERE path = ?", [(to_stored(p),) for p in paths]
            )

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))

    def iter_errors(self) -> Iterator[FileRecord]:
        yield from self.by_status("error")
