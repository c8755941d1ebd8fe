"""The on-disk collection.

```
COLL/
  manifest.json       format version, config, backbone + weights hash, live generation, counts
  catalog.sqlite      one row per file seen (see catalog.py)
  staging/            feature chunks of an index run not yet committed (resume from here)
  generations/gen-N/  one complete, immutable state: ids, per-block vectors, fused vectors,
                      fitted fuser, ANN index
  cache/              feature blocks computed later (by `evaluate`) for other presets,
                      kept from 1,000 pictures on (store/blocks.py)
  .lock               held (filelock: flock) by the one process that writes
```

A run never modifies the live generation: it writes a new one and switches
``manifest.json`` to it with an atomic rename, so a reader (a query) always
sees one complete state, and a run killed at any moment leaves the previous
state usable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from lookalike.config import PipelineConfig
from lookalike.errors import (
    CollectionBusyError,
    CollectionError,
    DamagedPartError,
    IncompatibleCollectionError,
)
from lookalike.fileio import (
    UNREADABLE_NPZ,
    atomic_save_npy,
    atomic_write_json,
    fsync_dir,
    link_if_identical,
)
from lookalike.fuse.fuser import Fuser
from lookalike.index import VectorIndex, load_index
from lookalike.store.catalog import Catalog
from lookalike.store.codec import (
    CODEC_FILE,
    BlockBasis,
    CodedBlock,
    bases_of,
    load_bases,
    save_bases,
    save_coded,
)
from lookalike.store.faces import FaceItems, head_keys
from lookalike.vectors import ROW_BLOCK, rounded_in_place, stored_losslessly
from lookalike.version import __version__

# 2: feature blocks stored as float16, the dense default (issue 16). A version-1 collection
# is refused with a message that says to re-index (its 8337-dim vectors and Annoy trees
# take about 108 KB per picture).
# 3: the codec's bases as int8 rows and the fuser stored on them (fuse/spanned.py), which a
# reader of version 2 would misread. Version 2 is still read, and a commit to it writes 3.
# 4: the fused vectors as float16 (vectors.as_stored), and a face item's head blocks coded
# on its generation's bases; a reader of version 3 took the float16 exact index for damage.
# Versions 2 and 3 are still read, and a commit to them writes 4.
# 5: the settings name the pseudo-label LDA's k-means starts (`pseudo_lda_starts`), which a
# reader of version 4 cannot parse. Versions 2 to 4 are read as fitted with one start, and
# a commit to them writes 5.
# 6: the settings name the axes of the pseudo-label LDA (`pseudo_lda_axes`), which a reader
# of version 5 cannot parse. Versions 2 to 5 are read as fitted on 128, and a commit to them
# writes 6.
FORMAT_VERSION = 6
READ_VERSIONS = (2, 3, 4, 5, 6)
# Feature blocks (the sources of re-fusion, `evaluate` and the web slider) are kept as
# float16: half the disk, no change in precision@4 (benchmarks/README.md, "Dense").
BLOCK_DTYPE = np.float16


def round_to_stored(block: np.ndarray, rows: int = ROW_BLOCK) -> np.ndarray:
    """`block` (float32) rounded in place to what the generation stores, so the fused vectors
    are made from exactly the stored values (a later re-fusion, the web slider agree)."""
    return rounded_in_place(block, BLOCK_DTYPE, rows)


log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
# In each generation: a process that reads it holds a shared lock on this empty file, and a
# commit deletes an older generation only when it can lock it alone (no reader left).
READERS = ".readers"


@dataclass
class Generation:
    """One committed state of the collection (read-only once written).

    Every part is checked as it is read: a missing or damaged one is a CollectionError that
    names it and says what repairs it (`repair`).
    """

    path: Path
    config: PipelineConfig
    repair: str  # what to run: "run `lookalike index ...` to repair it"
    _bases: dict[str, BlockBasis] | None = field(default=None, init=False, repr=False)
    # Memory maps opened once: a query reads a few rows of each block, and opening the
    # files again for every query cost more than the search (the files never change).
    _maps: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    # The reader's lock on it (Collection._hold), held as long as this object lives.
    _readers: Any = field(default=None, init=False, repr=False)

    @property
    def ids(self) -> np.ndarray:
        return self._array("ids.npy", 1)

    @property
    def head_boxes(self) -> np.ndarray:
        return self._array("head_boxes.npy", 2)

    def block(self, key: str) -> np.ndarray | CodedBlock:
        """A stored block's rows as float32 (memory-mapped float16 or int8 codes: codec.py)."""
        basis = self.bases().get(key)
        if basis is None:
            return self._array(f"blocks/{key}.npy", 2, mmap=True)
        return self._coded(f"blocks/{key}", basis)

    def _coded(self, stem: str, basis: BlockBasis) -> CodedBlock:
        codes = self._array(f"{stem}.codes.npy", 2, mmap=True)
        scales = self._array(f"{stem}.scales.npy", 1, mmap=True)
        if len(scales) != len(codes) or codes.shape[1] != len(basis.components):
            raise self.damaged(self.path / f"{stem}.codes.npy", "does not fit its codec")
        return CodedBlock(basis, codes, scales)

    def has_block(self, key: str) -> bool:
        blocks = self.path / "blocks"
        return (blocks / f"{key}.npy").exists() or (blocks / f"{key}.codes.npy").exists()

    def bases(self) -> dict[str, BlockBasis]:
        """The bases of the generation's coded blocks ({} where all are float16)."""
        if self._bases is None:
            path = self.path / "blocks" / CODEC_FILE
            try:
                self._bases = load_bases(path)
            except (OSError, ValueError, KeyError, EOFError, *UNREADABLE_NPZ) as exc:
                raise self.damaged(path, f"unreadable ({exc})") from exc
        return self._bases

    def fused(self) -> np.ndarray:
        return self._array("fused.npy", 2, mmap=True)

    def face_items(self) -> FaceItems | None:
        """The face items (`lookalike.store.faces`); None for a generation written without them."""
        if not (self.path / "faces").is_dir():
            return None
        folder = self.path / "faces" / "blocks"
        blocks: dict[str, np.ndarray | CodedBlock] = {}
        for key in head_keys(self.config.block_keys):
            if (folder / f"{key}.codes.npy").exists():  # coded on the picture rows' basis
                basis = self.bases().get(key)
                if basis is None:
                    raise self.damaged(folder / f"{key}.codes.npy", "codes without a codec basis")
                blocks[key] = self._coded(f"faces/blocks/{key}", basis)
            elif (folder / f"{key}.npy").exists():
                blocks[key] = self._array(f"faces/blocks/{key}.npy", 2, mmap=True)
        items = FaceItems(
            self._array("faces/owners.npy", 1),
            self._array("faces/numbers.npy", 1),
            self._array("faces/boxes.npy", 2),
            blocks,  # type: ignore[arg-type]
        )
        rows = {"faces/owners.npy": len(items.owners), "faces/numbers.npy": len(items.numbers)}
        rows["faces/boxes.npy"] = len(items.boxes)
        rows.update({f"faces/blocks/{k}": len(v) for k, v in items.blocks.items()})
        if len(set(rows.values())) > 1:
            raise self.damaged(self.path / "faces", f"parts of unequal rows {rows}")
        return items

    def face_fused(self) -> np.ndarray:
        """The fused vector of each face item (empty without face items)."""
        if not (self.path / "faces").is_dir():
            return np.zeros((0, int(self.fused().shape[1])), np.float32)
        return self._array("faces/fused.npy", 2, mmap=True)

    def fuser(self) -> Fuser:
        path = self._part("fuser.npz")
        bases = self.bases()  # its own errors name codec.npz
        try:
            return Fuser.load(path, self.config.blocks, self.config.fusion, bases)
        except (CollectionError, OSError, ValueError, KeyError, EOFError, *UNREADABLE_NPZ) as e:
            cause = e.__cause__ if isinstance(e, CollectionError) and e.__cause__ else e
            raise self.damaged(path, f"unreadable ({cause})") from e

    def index(self) -> VectorIndex:
        self._part("index")
        try:
            return load_index(
                self.config.index.backend, self.path / "index", int(self.fused().shape[1])
            )
        except DamagedPartError:
            raise
        except CollectionError as exc:  # the index's own messages name its files
            raise DamagedPartError(str(exc), self.repair) from exc

    def damaged(self, path: Path, what: str) -> DamagedPartError:
        return DamagedPartError(f"{path}: {what}", self.repair)

    def check_rows(self, rows: dict[str, int]) -> None:
        """Each part (name -> rows) holds one row per id."""
        n = rows["ids.npy"]
        for name, count in rows.items():
            if count != n:
                raise self.damaged(self.path / name, f"{count} rows, but ids.npy has {n}")

    def check_sources(self) -> None:
        """What a run builds the next generation from: ids, head boxes, feature blocks."""
        rows = {"ids.npy": len(self.ids), "head_boxes.npy": len(self.head_boxes)}
        rows.update({f"blocks/{k}.npy": len(self.block(k)) for k in self.config.block_keys})
        self.check_rows(rows)

    def check_derived(self) -> None:
        """What is computed from the sources: the fused vectors, the fuser and the index."""
        self.fuser()
        rows = {"ids.npy": len(self.ids), "fused.npy": len(self.fused())}
        self.check_rows({**rows, "index": self.index().count})

    def _part(self, name: str) -> Path:
        if not self.path.is_dir():
            raise self.damaged(self.path, "this generation is missing")
        path = self.path / name
        if not path.exists():
            raise self.damaged(path, "missing")
        return path

    def _array(self, name: str, ndim: int, mmap: bool = False) -> np.ndarray:
        if mmap and name in self._maps:
            return self._maps[name]
        path = self._part(name)
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as exc:
            raise self.damaged(path, f"unreadable ({exc})") from exc
        if array.ndim != ndim:
            raise self.damaged(path, f"an array of shape {array.shape}, not {ndim}-D")
        if mmap:
            self._maps[name] = array
        return array


class Collection:
    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._catalog: Catalog | None = None
        self._writing = False  # this object holds the write lock
        # The generations this object reads, each with its shared lock (closed with it).
        self._reading: dict[str, Any] = {}

    # -- opening -------------------------------------------------------------------
    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def create(
        cls, path: Path, root: Path, config: PipelineConfig, weights_hash: str
    ) -> Collection:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise CollectionError(f"{path}: not a folder; choose a folder for the collection")
        # A folder with a catalog is a collection that lost its manifest: made again around
        # the catalog (its files keep their ids; every image is embedded again).
        lost_manifest = (path / CATALOG).is_file()
        if path.exists() and any(path.iterdir()) and not lost_manifest:
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
        with _unwritable_is_an_error(path):
            return cls._make(path, manifest)

    @classmethod
    def _make(cls, path: Path, manifest: dict[str, Any]) -> Collection:
        if path.exists():  # an empty folder the user made (perhaps a mount point)
            shutil.rmtree(path / "staging", ignore_errors=True)  # chunks of another config
            Catalog(path / CATALOG).close()  # first: a catalog without manifest is made again
            atomic_write_json(path / MANIFEST, manifest)
            return cls(path, manifest)
        # Made beside its place and renamed into it, so that no query and no later run
        # (after a kill, or out of space or inodes) ever finds the folder without its
        # manifest and its catalog.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new"
        tmp.mkdir()
        try:
            atomic_write_json(tmp / MANIFEST, manifest)
            Catalog(tmp / CATALOG).close()
            os.replace(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and cls.exists(path):
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
        return cls(path, read_manifest(path))

    def reload(self) -> None:
        self.manifest = read_manifest(self.path)

    # -- parts -----------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    def move_root(self, root: Path) -> None:
        """The indexed folder was moved to `root`: the catalog's paths, relative to the root,
        name the same files there (the writer calls it, holding the lock)."""
        self.manifest["root"] = str(Path(root).resolve())
        atomic_write_json(self.path / MANIFEST, self.manifest)
        fsync_dir(self.path)

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig.from_dict(self.manifest["config"])

    @property
    def weights_hash(self) -> str:
        return str(self.manifest["weights_hash"])

    @property
    def fingerprints(self) -> dict[str, str]:
        """What computed the stored blocks, by the manifest keys of the feature sources
        (embed/sources.py): "weights_hash", and "model_fingerprint" for a trained model."""
        out = {k: str(v) for k, v in self.manifest.items() if k.endswith(("_hash", "_fingerprint"))}
        if "head_fingerprint" in out:  # written before "head" came to mean the crop only
            out.setdefault("model_fingerprint", out.pop("head_fingerprint"))
        return out

    @property
    def repair(self) -> str:
        """The command that repairs this collection (named in messages about damage), as
        this shell can run it (`.venv/bin/lookalike` where the venv is not activated)."""
        from lookalike.invocation import lookalike_command

        return f"`{lookalike_command()} index {self.root} --collection {self.path}`"

    @property
    def catalog(self) -> Catalog:
        """Read-only (a reader never creates or changes a file); writable for the writer."""
        if self._catalog is None:
            self._catalog = Catalog(
                self.path / CATALOG,
                readonly=not self._writing,
                repair=self.repair,
                writer_active=self.is_locked,
            )
        return self._catalog

    def close_catalog(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

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
        if not self._hold(name) or not self._generation_path(name).is_dir():
            # A commit replaced it and is removing it (or has): read the one it made.
            self.reload()
            if self.manifest.get("generation") not in (None, name):
                return self.generation()
        return self._generation(name)

    def _generation(self, name: str) -> Generation:
        repair = f"run {self.repair} to repair it"
        self._hold(name)
        gen = Generation(self._generation_path(name), self.config, repair)
        gen._readers = self._reading.get(name)
        return gen

    def _generation_path(self, name: str) -> Path:
        return self.path / "generations" / name

    def _hold(self, name: str) -> bool:
        """A shared lock on the generation for as long as this object or a Generation it
        made lives: no commit deletes a generation that a process still reads (a `serve`,
        a query loading it).
        Generations written before the lock file, and read-only ones, are read unlocked.
        False: a commit holds it alone, removing it."""
        if name in self._reading:
            return True
        try:
            readers = _locked(self._generation_path(name), fcntl.LOCK_SH)
        except OSError:
            return True
        if readers is None:
            return False
        self._reading[name] = readers
        return True

    def _release(self) -> None:
        """This object's reader locks (its Generations' too), before its own commit deletes
        old generations."""
        for readers in self._reading.values():
            readers.close()
        self._reading.clear()

    def require_generation(self) -> Generation:
        gen = self.generation()
        if gen is None and self.is_locked():
            raise CollectionError(
                f"{self.path}: the collection is being built; try again when done"
            )
        if gen is None:
            raise CollectionError(
                f"{self.path}: the collection has no committed index yet: the first `lookalike "
                "index` did not finish, or could index no image (`lookalike info "
                f"{self.path} --errors` lists the files it skipped); run it again"
            )
        return gen

    def check_weights(self, weights_hash: str) -> None:
        """Vectors of other weights (an upgraded model package) are not compared with the
        stored ones. (Other settings are switched to by `index`, see switch.py.)"""
        if weights_hash != self.weights_hash:
            raise IncompatibleCollectionError(
                f"{self.path}: was built with other backbone weights "
                f"({self.weights_hash[:12]}, now {weights_hash[:12]}); re-index into a new folder"
            )

    # -- the writer's lock -------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self, wait: bool = False) -> Iterator[None]:
        """Held by one writer (filelock's flock: the kernel releases it if its holder dies,
        so a run killed with -9 leaves no stale lock).

        The holder gets the catalog writable, closed (out of WAL mode) when it lets go.
        """
        lock_path = self.path / ".lock"
        if lock_path.is_dir():
            raise CollectionError(
                f"{lock_path}: a folder, not the collection's lock file; delete it and run "
                "the same command again"
            )
        lock = FileLock(lock_path, timeout=0)
        try:
            with _unwritable_is_an_error(self.path):
                try:
                    lock.acquire()
                except Timeout:
                    holder = _lock_holder(lock_path)
                    if not wait:
                        raise CollectionBusyError(
                            f"{self.path}: another `lookalike index` ({holder}) is writing this "
                            "collection; wait for it to finish, or pass --wait"
                        ) from None
                    log.info("%s: waiting for %s to finish writing", self.path, holder)
                    lock.acquire(timeout=-1)
            self._check_folders()
            # Who holds it, for the message a second writer gets (filelock leaves the file's
            # content to its user).
            lock_path.write_text(f"pid {os.getpid()}", encoding="utf-8")
            self.close_catalog()
            self._writing = True
            yield
        finally:
            if self._writing:
                self._writing = False
                self.close_catalog()
            lock.release()

    def _check_folders(self) -> None:
        for name in ("generations", "staging", "cache"):
            if (self.path / name).exists() and not (self.path / name).is_dir():
                raise CollectionError(
                    f"{self.path / name}: not a folder; delete it and run the same command again"
                )

    def is_locked(self) -> bool:
        """Whether a writer holds the lock, probed with a shared flock.

        Not filelock: its FileLock is exclusive only, so two readers probing at once would
        each see the other's probe as a writer; its ReadWriteLock is a SQLite database, which
        does not contend with the writer's flock and which a reader would have to create
        (readers never create or change a file). A shared, non-blocking flock on the file the
        writer's FileLock flocks does both.
        """
        lock_path = self.path / ".lock"
        try:
            handle = open(lock_path)  # noqa: SIM115 - closed below
        except OSError:  # none, or not a file: nobody can hold it
            return False
        with handle:
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
        faces: FaceItems | None = None,
        face_fused: np.ndarray | None = None,
        coded: Mapping[str, CodedBlock] | None = None,
    ) -> Generation:
        """Write a complete new generation, then switch the manifest to it atomically; the
        blocks in `coded` are stored as those codes (codec.py), the others as float16."""
        gens = self.path / "generations"
        gens.mkdir(exist_ok=True)
        previous = self.manifest.get("generation")
        number = int(previous.split("-")[1]) + 1 if previous else 1
        name = f"gen-{number:06d}"
        tmp = gens / f".{name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "blocks").mkdir(parents=True)
        (tmp / READERS).touch()
        atomic_save_npy(tmp / "ids.npy", ids.astype(np.int64))
        atomic_save_npy(tmp / "head_boxes.npy", head_boxes.astype(np.int32))
        coded = coded or {}
        for key, array in blocks.items():
            if key in coded:
                save_coded(tmp / "blocks", key, coded[key])
            else:
                atomic_save_npy(tmp / "blocks" / f"{key}.npy", np.asarray(array, BLOCK_DTYPE))
        if coded:
            save_bases(tmp / "blocks" / CODEC_FILE, bases_of(coded))
        atomic_save_npy(tmp / "fused.npy", stored_losslessly(fused))
        if faces is not None and face_fused is not None:
            _save_face_items(tmp / "faces", faces, face_fused)
        fuser.save(tmp / "fuser.npz")
        (tmp / "index").mkdir()
        index.save(tmp / "index")
        for part in (tmp / "index").iterdir():  # exact search saves the fused vectors again
            link_if_identical(tmp / "fused.npy", part)
        final = gens / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(gens)

        manifest = dict(self.manifest)
        manifest.update(
            generation=name,
            format_version=FORMAT_VERSION,
            package_version=__version__,
            counts=counts,
            dims={"fused": int(fused.shape[1]), **{k: int(v.shape[1]) for k, v in blocks.items()}},
            index_params=index.params,
            committed=time.time(),
        )
        atomic_write_json(self.path / MANIFEST, manifest)
        fsync_dir(self.path)
        self.manifest = manifest
        self._release()
        self._remove_old_generations(name, previous)
        return self._generation(name)

    def _remove_old_generations(self, current: str, previous: str | None) -> None:
        """Every generation but `current` that no process reads. One written before the
        readers' lock file stays one run longer if it is `previous`: a query that read the
        old manifest a moment ago may still be loading it."""
        for old in (self.path / "generations").iterdir():
            if old.name == current:
                continue
            if old.name.startswith("."):  # the partial folder of a killed run: never read
                shutil.rmtree(old, ignore_errors=True)
                continue
            try:
                readers = _locked(old, fcntl.LOCK_EX)
            except FileNotFoundError:
                if old.name != previous:
                    shutil.rmtree(old, ignore_errors=True)
                continue
            except OSError:
                continue
            if readers is None:
                continue  # read by a process still: removed by a later commit
            with readers:
                shutil.rmtree(old, ignore_errors=True)


def _locked(generation: Path, mode: int) -> Any:
    """The generation's readers' lock file, open and locked in `mode` (shared or alone), or
    None when another process's lock refuses it; OSError when it cannot be opened."""
    readers = open(generation / READERS, "rb")  # noqa: SIM115 - the caller holds or closes it
    try:
        fcntl.flock(readers, mode | fcntl.LOCK_NB)
    except OSError:
        readers.close()
        return None
    return readers


def _save_face_items(folder: Path, items: FaceItems, fused: np.ndarray) -> None:
    (folder / "blocks").mkdir(parents=True)
    atomic_save_npy(folder / "owners.npy", items.owners.astype(np.int64))
    atomic_save_npy(folder / "numbers.npy", items.numbers.astype(np.int16))
    atomic_save_npy(folder / "boxes.npy", items.boxes.astype(np.int32).reshape(-1, 4))
    for key, array in items.blocks.items():
        if isinstance(array, CodedBlock):
            save_coded(folder / "blocks", key, array)
        else:
            atomic_save_npy(folder / "blocks" / f"{key}.npy", np.asarray(array, BLOCK_DTYPE))
    atomic_save_npy(folder / "fused.npy", stored_losslessly(fused))


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the collection `path`, checked: a CollectionError says what is wrong."""
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        problem = f"unreadable ({exc})"
    else:
        if isinstance(manifest, dict) and "format_version" in manifest:
            version = manifest["format_version"]
            if version not in READ_VERSIONS:
                raise IncompatibleCollectionError(
                    f"{path}: collection format version {version}, this lookalike "
                    f"({__version__}) reads versions {_versions(READ_VERSIONS)}; re-index into "
                    "a new collection: `lookalike index FOLDER --collection NEW_FOLDER`"
                    + (
                        " (version 6 stores dense 256-dim vectors, about 4 KB per picture)"
                        if version == 1
                        else ""
                    )
                )
        problem = _manifest_problem(manifest)
        if not problem:
            return manifest
    raise CollectionError(
        f"{file}: {problem}; delete it and run `lookalike index FOLDER --collection {path}` "
        "with the options the collection was made with (the catalog is kept, every image is "
        "embedded again)"
    )


def _versions(numbers: tuple[int, ...]) -> str:
    """(2, 3, 4) -> "2, 3 and 4"."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _manifest_problem(manifest: Any) -> str:
    if not isinstance(manifest, dict):
        return f"not a manifest (a JSON {type(manifest).__name__}, not an object)"
    missing = [k for k in ("format_version", "root", "config", "weights_hash") if k not in manifest]
    if missing:
        return f"damaged manifest (no {', '.join(missing)})"
    if not isinstance(manifest["root"], str) or not isinstance(manifest["weights_hash"], str):
        return "damaged manifest (root and weights_hash must be text)"
    try:
        PipelineConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"damaged manifest (config: {exc!r})"
    generation = manifest.get("generation")
    if generation is not None and not re.fullmatch(r"gen-\d+", str(generation)):
        return f"damaged manifest (generation {generation!r})"
    return ""


def _lock_holder(lock_path: Path) -> str:
    """What the lock file says of its holder ("pid N"), for the messages of a second writer."""
    try:
        return lock_path.read_text(encoding="utf-8").strip() or "another process"
    except (OSError, UnicodeDecodeError):
        return "another process"


@contextlib.contextmanager
def _unwritable_is_an_error(path: Path) -> Iterator[None]:
    """A collection on a read-only file system, or of another account: one clear line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise CollectionError(
            f"{path}: cannot write the collection ({exc.strerror}: {exc.filename}); "
            "`lookalike index` needs write access to it (a read-only collection still answers "
            "queries)"
        ) from exc
