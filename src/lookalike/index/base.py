"""The index contract, the backend registry and what every backend shares.

Backends subclass `BaseIndex` and implement only the native parts (`_build`,
`_search`, `_save`, `_load`); validation, L2 normalisation, padding, the
metadata file and atomic saving live here so every backend behaves the same.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from lookalike.errors import CollectionError, IncompatibleCollectionError, LookalikeError
from lookalike.fileio import no_room_left
from lookalike.registry import Registry
from lookalike.vectors import UNIT_TOLERANCE, l2_normalize


class VectorIndex(Protocol):
    name: str
    dim: int | None  # None until built or loaded
    count: int

    @property
    def params(self) -> dict[str, Any]: ...  # build and query parameters, JSON-able

    def build(self, vectors: np.ndarray) -> None: ...

    def extends(self, new: int) -> bool: ...  # whether `extend` can take `new` more rows

    def extend(self, vectors: np.ndarray) -> None: ...  # add rows count, count+1, ...

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def candidates(self, wanted: int) -> int: ...  # how many to ask for the best `wanted`

    def set_query_params(self, **params: int) -> None: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path, dim: int) -> VectorIndex: ...


INDEXES: Registry[VectorIndex] = Registry("index backend")
_CLASSES: dict[str, type[BaseIndex]] = {}

B = TypeVar("B", bound="BaseIndex")


def register_index(cls: type[B]) -> type[B]:
    """Class decorator: register a backend under its `name` (described by its docstring)."""
    INDEXES.register(cls.name)(cls)
    _CLASSES[cls.name] = cls
    return cls


def index_class(name: str) -> type[BaseIndex]:
    return _CLASSES[INDEXES.check(name)]


def create_index(name: str, **params: Any) -> VectorIndex:
    cls = index_class(name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**params)
    except TypeError:
        known = ", ".join(signature.parameters) or "none"
        raise LookalikeError(
            f"index backend {name!r} got parameters {sorted(params)}; it takes: {known}."
        ) from None
    return INDEXES.create(name, **params)


def load_index(name: str, folder: Path, dim: int) -> VectorIndex:
    return index_class(name).load(folder, dim)


def list_indexes(pattern: str = "*") -> list[str]:
    return INDEXES.names(pattern)


def require(module: str, package: str, backend: str) -> ModuleType:
    """Import an optional backend's library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise LookalikeError(
            f"the {backend!r} index backend needs {package}, which is not installed: "
            "pip install 'lookalike[ann]'"
        ) from e


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LookalikeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def as_unit_vectors(
    vectors: np.ndarray, dim: int | None = None, what: str = "vectors"
) -> np.ndarray:
    """Validate an (N, D) array and return it L2-normalised as contiguous float32 (the array
    itself, not a copy, when it is so already: callers must not change it afterwards)."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] == 0:
        raise LookalikeError(f"{what} must be a 2-D array (N, D) with D >= 1; got {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise LookalikeError(
            f"{what} have {array.shape[1]} dimensions but the index holds {dim}-dimensional "
            "vectors (were they made with another model or preset?)"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise LookalikeError(f"{what} must be numbers; got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise LookalikeError(f"{what} contain NaN or infinite values")
    if array.dtype == np.float32 and array.flags.c_contiguous:
        # Fused vectors arrive unit-length already (to their float16 rounding, vectors.py):
        # no copy of the whole collection, and an index holds exactly the stored values.
        norms = np.sqrt(np.einsum("ij,ij->i", array, array))
        if np.all((np.abs(norms - 1) < UNIT_TOLERANCE) | (norms == 0)):
            return array
    return l2_normalize(array)


def angular_to_cosine(distances: np.ndarray) -> np.ndarray:
    """Annoy's angular distance is sqrt(2 - 2 cos) on unit vectors, so cos = 1 - d^2 / 2."""
    d = np.asarray(distances, np.float32)
    return 1 - d * d / 2


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Write `target` via `write(tmp)` so a reader sees the old file or the whole new one."""
    # Same folder, so os.replace is a rename on one file system.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Made here first: out of inodes, Python's error has an errno and a file name, where
        # a native library (Annoy) prints its own complaint and raises an OSError without.
        tmp.touch()
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is None and no_room_left(target.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def widened(wanted: int) -> int:
    """A few times `wanted`: how many results of an approximate search are ranked exactly for
    the best `wanted` (`BaseIndex.candidates`; `Searcher` looks at as many face items)."""
    return max(4 * wanted, 50)


class BaseIndex(ABC):
    name: ClassVar[str]
    file_name: ClassVar[str]  # the native index file inside a save folder
    query_knobs: ClassVar[dict[str, int]] = {}  # query-time parameter -> smallest allowed value

    def __init__(self, build_params: dict[str, Any], query_params: dict[str, int]) -> None:
        self.dim: int | None = None
        self.count = 0
        self._native: Any = None  # the library's index; None while empty
        self._build_params = build_params
        self._query_params: dict[str, int] = {}
        self.set_query_params(**query_params)

    @property
    def params(self) -> dict[str, Any]:
        """Everything the index was made with: `create_index(name, **params)` remakes it."""
        return {**self._build_params, **self._query_params}

    def set_query_params(self, **params: int) -> None:
        for key, value in params.items():
            if key not in self.query_knobs:
                known = ", ".join(self.query_knobs) or "none"
                raise LookalikeError(
                    f"the {self.name} index has no query parameter {key!r} (it has: {known})"
                )
            self._query_params[key] = check_int(key, value, self.query_knobs[key])
        if self._native is not None:
            self._apply_query_params()

    def build(self, vectors: np.ndarray) -> None:
        data = as_unit_vectors(vectors)
        self._native = self._build(data) if len(data) else None
        self.dim, self.count = data.shape[1], len(data)
        if self._native is not None:
            self._apply_query_params()

    def candidates(self, wanted: int) -> int:
        """How many results a ranking asks for to rank the best `wanted` of them exactly
        (`Searcher`): more than it shows where the search is approximate and its effort grows
        with what is asked (Annoy inspects n_trees * k nodes)."""
        return widened(wanted)

    def extends(self, new: int) -> bool:
        """Whether `extend` can add `new` rows to this built or loaded index (a backend
        that cannot add after building, Annoy, says no: the caller builds anew)."""
        return (
            self.dim is not None
            and self._native is not None
            and type(self)._extend is not (BaseIndex._extend)
        )

    def extend(self, vectors: np.ndarray) -> None:
        """Add rows after the built ones (their ids follow: count, count + 1, ...), without
        building again: what an index run that only added pictures does (issue 16)."""
        if not self.extends(len(vectors)):
            raise LookalikeError(f"the {self.name} index cannot add rows to this index")
        data = as_unit_vectors(vectors, self.dim)
        if len(data):
            self._native = self._extend(data)
            self.count += len(data)
            self._apply_query_params()

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.dim is None:
            raise LookalikeError(f"the {self.name} index has not been built or loaded")
        k = check_int("k", k, 1)
        queries = as_unit_vectors(vectors, self.dim, "query vectors")
        ids = np.full((len(queries), k), -1, np.int64)
        sims = np.full((len(queries), k), -np.inf, np.float32)
        if self._native is not None and len(queries):
            found_ids, found_sims = self._search(queries, min(k, self.count))
            width = found_ids.shape[1]
            ids[:, :width] = found_ids
            sims[:, :width] = found_sims
            # Libraries mark missing results with -1 and an arbitrary distance.
            sims[ids < 0] = -np.inf
        return ids, sims

    def save(self, folder: Path) -> None:
        if self.dim is None:
            raise LookalikeError(f"the {self.name} index has not been built; nothing to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._native is not None:
            atomic_write(folder / self.file_name, self._save)
        meta = {"backend": self.name, "dim": self.dim, "count": self.count, "params": self.params}
        # Written last: its presence means the native file is complete.
        atomic_write(self._meta_path(folder), lambda p: p.write_text(json.dumps(meta, indent=2)))

    @classmethod
    def load(cls: type[B], folder: Path, dim: int) -> B:
        folder = Path(folder)
        meta_path = cls._meta_path(folder)
        try:
            meta = json.loads(meta_path.read_text())
            saved_dim, count, params = int(meta["dim"]), int(meta["count"]), meta["params"]
        except FileNotFoundError:
            raise CollectionError(f"{folder}: no saved {cls.name} index here") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CollectionError(f"{meta_path}: unreadable index metadata ({e})") from e
        if saved_dim != dim:
            raise IncompatibleCollectionError(
                f"{folder}: the saved {cls.name} index holds {saved_dim}-dimensional vectors, "
                f"expected {dim}"
            )
        index = cls(**params)
        if count:
            path = folder / cls.file_name
            try:
                native = index._load(path, dim)
            except (OSError, RuntimeError, ValueError) as e:
                raise CollectionError(f"{path}: cannot load the {cls.name} index ({e})") from e
            if index._count(native) != count:
                raise CollectionError(
                    f"{path}: holds {index._count(native)} vectors, its metadata says {count}"
                )
            index._native = native
            index._apply_query_params()
        index.dim, index.count = dim, count
        return index

    @classmethod
    def _meta_path(cls, folder: Path) -> Path:
        return folder / f"{cls.name}.json"

    def _apply_query_params(self) -> None:  # noqa: B027 (an optional hook)
        """Push query parameters into the native index (for libraries that hold them)."""

    @abstractmethod
    def _build(self, data: np.ndarray) -> Any:
        """Make the native index from N >= 1 unit-length float32 rows (row i is id i)."""

    def _extend(self, data: np.ndarray) -> Any:
        """The native index with `data` added as rows count, count + 1, ... (may be a new
        object: a loaded index is often a read-only view of its file)."""
        raise NotImplementedError

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (1 <= k <= count) ids and cosine similarities of unit-length queries."""

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    @abstractmethod
    def _load(self, path: Path, dim: int) -> Any: ...

    @abstractmethod
    def _count(self, native: Any) -> int: ...
