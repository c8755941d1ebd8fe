"""The on-disk collection.

```
COLL/
  manifest.json       format version, config, backbone + weights hash, live generation, counts
  catalog.sqlite      one row per file seen (see catalog.py)
  staging/            feature chunks of an index run not yet committed (resume from here)
  generations/gen-N/  one complete, immutable state: ids, per-block vectors, fused vectors,
                      fitted fuser, ANN index
  cache/              feature blocks computed later (by `evaluate`) for other presets
  .lock               held (flock) by the one process that writes
```

A run never modifies the live generation: it writes a new one and switches
``manifest.json`` to it with an atomic rename, so a reader (a query) always
sees one complete state, and a run killed at any moment leaves the previous
state usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import __version__
from lookalike.catalog import Catalog
from lookalike.config import PipelineConfig
from lookalike.errors import (
    CollectionBusyError,
    CollectionError,
    IncompatibleCollectionError,
)
from lookalike.fileio import atomic_save_npy, atomic_write_json, fsync_dir
from lookalike.fuse import Fuser
from lookalike.index import VectorIndex, create_index, load_index

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Generation:
    """One committed state of the collection (read-only once written)."""

    path: Path
    config: PipelineConfig

    @property
    def ids(self) -> np.ndarray:
        return np.load(self.path / "ids.npy", allow_pickle=False)

    @property
    def head_boxes(self) -> np.ndarray:
        return np.load(self.path / "head_boxes.npy", allow_pickle=False)

    def block(self, key: str) -> np.ndarray:
        return np.load(self.path / "blocks" / f"{key}.npy", allow_pickle=False, mmap_mode="r")

    def has_block(self, key: str) -> bool:
        return (self.path / "blocks" / f"{key}.npy").exists()

    def fused(self) -> np.ndarray:
        return np.load(self.path / "fused.npy", allow_pickle=False, mmap_mode="r")

    def fuser(self) -> Fuser:
        return Fuser.load(self.path / "fuser.npz", self.config.blocks, self.config.fusion)

    def index(self) -> VectorIndex:
        return load_index(
            self.config.index.backend, self.path / "index", int(self.fused().shape[1])
        )


class Collection:
    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._catalog: Catalog | None = None

    # -- opening -------------------------------------------------------------------
    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def create(
        cls, path: Path, root: Path, config: PipelineConfig, weights_hash: str
    ) -> Collection:
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not cls.exists(path):
            raise CollectionError(
                f"{path}: exists and is not empty, and is not a lookalike collection; "
                "choose a new folder for the collection"
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "root": str(Path(root).resolve()),
            "config": config.to_dict(),
            "weights_hash": weights_hash,
            "generation": None,
            "created": time.time(),
        }
        if path.exists():  # an empty folder the user made (perhaps a mount point)
            atomic_write_json(path / MANIFEST, manifest)
            return cls(path, manifest)
        # Made beside its place and renamed into it, so that no query and no later run
        # (after a kill) ever finds the folder without its manifest.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new"
        tmp.mkdir()
        try:
            atomic_write_json(tmp / MANIFEST, manifest)
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if cls.exists(path):
                raise CollectionBusyError(
                    f"{path}: another `lookalike index` created this collection at the same "
                    "moment; run the command again"
                ) from exc
            raise
        fsync_dir(path.parent)
        return cls(path, manifest)

    @classmethod
    def open(cls, path: Path) -> Collection:
        path = Path(path)
        if not path.exists():
            raise CollectionError(f"{path}: no such collection (run `lookalike index` first)")
        if not cls.exists(path):
            raise CollectionError(
                f"{path}: not a lookalike collection (no {MANIFEST}); "
                "create one with `lookalike index FOLDER --collection PATH`"
            )
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{path / MANIFEST}: unreadable manifest ({exc})") from exc
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleCollectionError(
                f"{path}: collection format version {version}, this lookalike "
                f"({__version__}) reads version {FORMAT_VERSION}; re-index into a new collection"
            )
        return cls(path, manifest)

    def reload(self) -> None:
        self.manifest = json.loads((self.path / MANIFEST).read_text())

    # -- parts -----------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig.from_dict(self.manifest["config"])

    @property
    def weights_hash(self) -> str:
        return str(self.manifest["weights_hash"])

    @property
    def head_fingerprint(self) -> str:
        """The fingerprint of the head that computed the stored v5 blocks ("" for none)."""
        return str(self.manifest.get("head_fingerprint", ""))

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.path / "catalog.sqlite")
        return self._catalog

    @property
    def staging_dir(self) -> Path:
        return self.path / "staging"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def generation(self) -> Generation | None:
        name = self.manifest.get("generation")
        if not name:
            return None
        return Generation(self.path / "generations" / name, self.config)

    def require_generation(self) -> Generation:
        gen = self.generation()
        if gen is None:
            state = "is being built" if self.is_locked() else "has no committed index yet"
            raise CollectionError(f"{self.path}: the collection {state}; try again when done")
        return gen

    def check_compatible(self, config: PipelineConfig, weights_hash: str) -> None:
        stored = self.config
        if stored != config:
            diffs = [k for k, v in config.to_dict().items() if stored.to_dict().get(k) != v]
            raise IncompatibleCollectionError(
                f"{self.path}: was built with preset {stored.preset!r} "
                f"(differs in: {', '.join(diffs)}); use a new --collection folder for "
                "other settings, or omit the options to keep the stored ones"
            )
        if weights_hash != self.weights_hash:
            raise IncompatibleCollectionError(
                f"{self.path}: was built with other backbone weights "
                f"({self.weights_hash[:12]}, now {weights_hash[:12]}); re-index into a new folder"
            )

    # -- the writer's lock -------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self, wait: bool = False) -> Iterator[None]:
        """Held by one writer; flock is released by the kernel if its holder dies."""
        lock_path = self.path / ".lock"
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole block
        try:
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(handle, flags)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise CollectionBusyError(
                    f"{self.path}: another `lookalike index` ({holder}) is writing this "
                    "collection; wait for it to finish, or pass --wait"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.close()

    def is_locked(self) -> bool:
        lock_path = self.path / ".lock"
        if not lock_path.exists():
            return False
        with open(lock_path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    # -- committing a generation ----------------------------------------------------------
    def commit(
        self,
        ids: np.ndarray,
        head_boxes: np.ndarray,
        blocks: dict[str, np.ndarray],
        fuser: Fuser,
        fused: np.ndarray,
        index: VectorIndex,
        counts: dict[str, int],
    ) -> Generation:
        """Write a complete new generation, then switch the manifest to it atomically."""
        gens = self.path / "generations"
        gens.mkdir(exist_ok=True)
        previous = self.manifest.get("generation")
        number = int(previous.split("-")[1]) + 1 if previous else 1
        name = f"gen-{number:06d}"
        tmp = gens / f".{name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "blocks").mkdir(parents=True)
        atomic_save_npy(tmp / "ids.npy", ids.astype(np.int64))
        atomic_save_npy(tmp / "head_boxes.npy", head_boxes.astype(np.int32))
        for key, array in blocks.items():
            atomic_save_npy(tmp / "blocks" / f"{key}.npy", np.asarray(array, np.float32))
        atomic_save_npy(tmp / "fused.npy", np.asarray(fused, np.float32))
        fuser.save(tmp / "fuser.npz")
        (tmp / "index").mkdir()
        index.save(tmp / "index")
        final = gens / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(gens)

        manifest = dict(self.manifest)
        manifest.update(
            generation=name,
            package_version=__version__,
            counts=counts,
            dims={"fused": int(fused.shape[1]), **{k: int(v.shape[1]) for k, v in blocks.items()}},
            index_params=index.params,
            committed=time.time(),
        )
        atomic_write_json(self.path / MANIFEST, manifest)
        fsync_dir(self.path)
        self.manifest = manifest
        # The previous generation stays one run longer: a query that read the old
        # manifest a moment ago may still be loading it.
        self._remove_old_generations(keep={name, previous})
        return Generation(final, self.config)

    def _remove_old_generations(self, keep: set[str | None]) -> None:
        for old in (self.path / "generations").iterdir():
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def new_index(config: PipelineConfig) -> VectorIndex:
    return create_index(config.index.backend, **config.index.params)
