"""The collection's catalog: one SQLite row per file seen under the indexed root."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from lookalike.errors import CollectionError
from lookalike.fileio import no_room_left
from lookalike.load.names import from_stored, to_stored

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


class Listed(NamedTuple):
    """The columns of a file that a list of results shows."""

    id: int
    path: str
    width: int | None
    height: int | None
    fallback: bool
    faces: int  # how many faces were found in it


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


# Why a catalog leaves WAL mode when its writer closes it: WAL lets queries read while an
# index run writes (readers never wait for the writer), but a reader of a WAL database must
# open (and create, if missing) the -wal and -shm files beside it. A reader on a read-only
# or full file system, or of another account without write permission on the folder, cannot:
# "unable to open database file", "disk I/O error". So a run writes in WAL mode and switches
# the file back to a rollback journal (journal_mode=DELETE) when done: then readers, which
# open the file read-only (mode=ro) and never write, need nothing but the file itself.
# Where that cannot happen (a reader kept it open during the run, a run was killed, an
# older lookalike wrote it) and mode=ro cannot make the side files, a reader opens it with
# immutable=1, which reads the file without locks and ignores a WAL: only when no writer
# holds the collection's lock, and a WAL left without its -shm has been checkpointed.
_NO_SIDE_FILES = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY)
_DAMAGE = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class _Rows(list):  # type: ignore[type-arg]
    """The rows of one statement, fetched at once (a cursor's fetchone/fetchall)."""

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


class _Connection(sqlite3.Connection):
    """Fetches each statement's rows at once, so that damage SQLite finds in the file, on
    whichever page, is reported as one CollectionError that names it and says what to do."""

    damaged: Callable[[object], str]  # the message for a damaged file, given SQLite's reason

    def execute(self, sql: str, parameters: Any = (), /) -> _Rows:  # type: ignore[override]
        try:
            return _Rows(super().execute(sql, parameters).fetchall())
        except sqlite3.DatabaseError as exc:
            raise _damage_or(exc, self.damaged) from exc

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise _damage_or(exc, self.damaged) from exc


def _code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _damage_or(exc: sqlite3.DatabaseError, damaged: Callable[[object], str]) -> Exception:
    return CollectionError(damaged(exc)) if _code(exc) in _DAMAGE else exc


class Catalog:
    """The catalog file: read-only for readers; writable for the one writer (the lock holder).

    `repair` is the command that rebuilds a collection (named in the messages);
    `writer_active` says whether an index run holds the collection's lock now.
    """

    def __init__(
        self,
        path: Path,
        readonly: bool = False,
        repair: str = "`lookalike index`",
        writer_active: Callable[[], bool] = lambda: False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.created = False  # a writer found no catalog (missing or empty) and made one
        self._repair = repair
        if self.path.is_dir():
            raise CollectionError(
                f"{self.path}: a folder, not the catalog; delete it and run {repair} again"
            )
        if readonly:
            self._db = self._open_for_reading(writer_active)
        else:
            self._db = self._open_for_writing()

    def _connect(self, query: str = "") -> _Connection:
        uri = f"file:{quote(str(self.path))}" + (f"?{query}" if query else "")
        db = sqlite3.connect(
            uri, uri=True, timeout=30, check_same_thread=False, factory=_Connection
        )
        db.damaged = self._damaged
        return db

    def _damaged(self, reason: object) -> str:
        return (
            f"{self.path}: damaged catalog ({reason}); delete it and run {self._repair} again "
            "(every image is embedded again)"
        )

    def _has_table(self, db: _Connection) -> bool:
        return bool(db.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone())

    def _open_for_reading(self, writer_active: Callable[[], bool]) -> _Connection:
        missing = f"run {self._repair} to make it again (every image is embedded again)"
        if not self.path.is_file():
            raise CollectionError(f"{self.path}: the catalog is missing; {missing}")
        db = self._connect("mode=ro")
        try:
            found = self._has_table(db)
        except sqlite3.OperationalError as exc:
            db.close()
            if _code(exc) not in _NO_SIDE_FILES or writer_active():
                raise CollectionError(f"{self.path}: cannot read the catalog ({exc})") from exc
            db = self._connect("immutable=1")
            found = self._has_table(db)
        if not found:
            db.close()
            raise CollectionError(f"{self.path}: the catalog is empty; {missing}")
        return db

    def _open_for_writing(self) -> _Connection:
        try:
            db = self._connect()
            self.created = not self._has_table(db)
            if not self.created:
                problems = [row[0] for row in db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    db.close()
                    raise CollectionError(self._damaged(problems[0]))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.commit()
        except sqlite3.OperationalError as exc:
            # Out of space or inodes, SQLite cannot make the file or its -wal or -shm, and
            # says only "unable to open" or "disk I/O error": reported as a full disk.
            if _code(exc) in _NO_SIDE_FILES and no_room_left(self.path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path)) from exc
            raise
        return db

    def close(self) -> None:
        if not self.readonly:
            try:
                # Back to a rollback journal, checkpointing the WAL (see the note above).
                self._db.execute("PRAGMA busy_timeout=0")
                self._db.execute("PRAGMA journal_mode=DELETE")
            except (sqlite3.OperationalError, CollectionError):
                # A reader has it open now (or a full disk keeps the WAL from being
                # checkpointed): it stays in WAL mode, which readers still read (see above).
                pass
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
        return {row[0]: _row_to_record(row) for row in self._rows_of(_COLUMNS, ids)}

    def listed(self, ids: Iterable[int]) -> dict[int, Listed]:
        """What a list of results shows of each id (no JSON to decode: a query's answer
        reads only these)."""
        rows = self._rows_of("id, path, width, height, fallback, json_array_length(faces)", ids)
        return {r[0]: Listed(r[0], from_stored(r[1]), r[2], r[3], bool(r[4]), r[5]) for r in rows}

    def _rows_of(self, columns: str, ids: Iterable[int]) -> Iterator[tuple[Any, ...]]:
        """`columns` of the rows of `ids`, in statements of at most 500 ids."""
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"SELECT {columns} FROM files WHERE id IN ({marks})", chunk)

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

    def move(self, moves: Iterable[tuple[int, FileRecord]]) -> None:
        """Give rows (by id) the path, size and mtime of the file they are now (a rename or a
        move inside the root): the id, and so the stored vectors, stay."""
        with self._db:
            self._db.executemany(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ?, updated_at = julianday('now') "
                "WHERE id = ?",
                [(to_stored(r.path), r.size, r.mtime_ns, i) for i, r in moves],
            )

    def delete_paths(self, paths: Iterable[str]) -> None:
        with self._db:
            self._db.executemany(
                "DELETE FROM files WHERE path = ?", [(to_stored(p),) for p in paths]
            )

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))

    def face_counts(self) -> dict[str, int]:
        """How many indexed pictures have 0, 1, 2 and 3 or more detected faces."""
        counts = {"0": 0, "1": 0, "2": 0, "3+": 0}
        for rec in self.by_status("ok"):
            n = len(rec.faces or [])
            counts[str(n) if n < 3 else "3+"] += 1
        return counts
