"""The user cache folder, and the sha256 of weight files remembered across processes.

Hashing a weights file (about 19 MB for Lite0, 40 MB for Lite2) on every start costs tens
of milliseconds of a cold query; the hash is therefore remembered in the cache, keyed by
what changes whenever the file does: its resolved path, size, modification and status
change times and inode. A file written in place (any of those changes) is hashed again.
Only JSON is read back from the cache, never pickles.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from platformdirs import user_cache_dir

from lookalike.fileio import atomic_write_bytes
from lookalike.load.images import file_sha256

log = logging.getLogger(__name__)

HASHES_FILE = "weights-sha256.json"


def cache_dir() -> Path:
    """$LOOKALIKE_CACHE_DIR, else the platform's user cache folder (platformdirs: on Linux
    $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike; ~/Library/Caches/lookalike on macOS,
    %LOCALAPPDATA%\\lookalike\\Cache on Windows)."""
    explicit = os.environ.get("LOOKALIKE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(user_cache_dir("lookalike", appauthor=False))


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_hashes(store: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: start again
        return {}
    return data if isinstance(data, dict) else {}


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, hashed once while the file stays the same."""
    path = path.resolve()
    stamp = _stamp(path)
    store = cache_dir() / HASHES_FILE
    hashes = _read_hashes(store)
    entry = hashes.get(str(path))
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        digest = entry.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    digest = file_sha256(path)
    if _stamp(path) != stamp:  # written while we read it: do not remember a torn hash
        return digest
    hashes[str(path)] = {"stamp": stamp, "sha256": digest}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(store, json.dumps(hashes, indent=1, sort_keys=True).encode())
    except OSError as exc:  # a read-only home: hash again next time
        log.debug("cannot remember the weights hash in %s: %s", store, exc)
    return digest
