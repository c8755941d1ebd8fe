"""One cached feature block on disk: its rows keyed by picture, compact from 200 rows.

A cache file holds the sha256 and head box of each row's picture (what a row must match to
be re-used) and the rows. Below `KEPT_BASIS_MIN_ROWS` rows they are float16. From that size on
they are int8 codes on the block's principal components with one float32 scale per row
(store/codec.py, as a generation stores its own blocks). The basis is fitted when the cache
first reaches that size, and again when it has grown by a quarter since; in between, the
codes of re-used rows are copied as read, not computed again from their decoded values, so
a cached row does not change. That is 25 KB a
picture of float16 for what an index run caches for `evaluate`, against under 1 KB coded
(benchmarks/README.md, "Storage per picture").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.fileio import UNREADABLE_NPZ, atomic_save_npz
from lookalike.store import codec
from lookalike.store.codec import BlockBasis
from lookalike.store.collection import BLOCK_DTYPE

log = logging.getLogger(__name__)

# A cache's basis is fitted again once it holds this many times the rows it was fitted on
# (as an index run refits the fuser and the generation's bases: indexing/growth.py).
REFIT_GROWTH = 1.25


@dataclass(frozen=True)
class Pictures:
    """Who a generation's rows are: what a cached row must match to be re-used."""

    digests: np.ndarray  # (N,) sha256 of each row's file; "" (unknown) never matches
    boxes: np.ndarray  # (N, 4) int32 head boxes

    def keys(self, head: bool) -> list[tuple[str, ...]]:
        """A row's identity: its bytes, and for a head view the box it was cut from."""
        if not head:
            return [(d,) for d in self.digests.tolist()]
        return [(d, *b) for d, b in zip(self.digests.tolist(), self.boxes.tolist(), strict=True)]


@dataclass
class CachedRows:
    """A cached block's rows for a list of pictures, in its order. `have` says which were
    found; `vectors` is what a reader gets (float32, zeros where not found); `codes` and
    `scales` are the stored form of the rows when the cache is coded on `basis`. `compact`:
    whether the cache may be coded (not a trained model's blocks: see codec.code_blocks)."""

    have: np.ndarray
    vectors: np.ndarray
    basis: BlockBasis | None = None
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None
    compact: bool = True
    fitted_rows: int = 0  # the rows `basis` was fitted on
    share: float | None = None  # of the components a basis keeps (codec.code_share)

    @classmethod
    def none(
        cls, count: int, width: int = 0, compact: bool = True, share: float | None = None
    ) -> CachedRows:
        empty = np.zeros((count, width), np.float32)
        return cls(np.zeros(count, bool), empty, compact=compact, share=share)

    def put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Set `rows` to `vectors` as the cache stores them: coded on the basis if it has one.
        A basis is fitted the first time the cache holds KEPT_BASIS_MIN_ROWS rows, and fitted
        again, on the rows as stored and the new ones, once they are REFIT_GROWTH times those
        it was fitted on (a basis kept from the first pictures loses what later ones bring:
        store/codec.py)."""
        if self.vectors.shape[1] != vectors.shape[1]:  # nothing was cached yet
            empty = CachedRows.none(len(self.have), vectors.shape[1])
            self.have, self.vectors = empty.have, empty.vectors
        self.have[rows] = True
        count = int(self.have.sum())
        if self.basis is not None and count < REFIT_GROWTH * self.fitted_rows:
            self._encode(rows, vectors)
            return
        self.vectors[rows] = np.asarray(vectors, BLOCK_DTYPE)
        if self.basis is not None or (
            self.compact
            and codec.worth_coding(count, self.vectors.shape[1], codec.KEPT_BASIS_MIN_ROWS)
        ):
            self._code()

    @property
    def complete(self) -> bool:
        """Whether every picture's row was found (in a cache of this block's width)."""
        return bool(self.have.all()) and self.vectors.shape[1] > 0

    def _code(self) -> None:
        found = np.flatnonzero(self.have)
        self.basis, self.fitted_rows = BlockBasis.fit(self.vectors[found], self.share), len(found)
        self.codes = np.zeros((len(self.have), len(self.basis.components)), np.int8)
        self.scales = np.ones(len(self.have), np.float32)
        self._encode(found, self.vectors[found])

    def _encode(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """`rows` stored as their codes on the basis, read back as they decode."""
        assert self.basis is not None and self.codes is not None and self.scales is not None
        codes, scales = self.basis.encode(vectors)
        self.codes[rows], self.scales[rows] = codes, scales
        self.vectors[rows] = self.basis.decode(codes, scales)


def write_cached(path: Path, pictures: Pictures, cached: CachedRows) -> None:
    """The found rows of `cached` (rows of pictures not found are dropped)."""
    found = np.flatnonzero(cached.have)
    arrays = {"sha256": digest_bytes(pictures.digests[found]), "boxes": pictures.boxes[found]}
    if cached.basis is None:
        arrays["vectors"] = cached.vectors[found].astype(BLOCK_DTYPE)
    else:
        assert cached.codes is not None and cached.scales is not None
        arrays["codes"], arrays["scales"] = cached.codes[found], cached.scales[found]
        arrays["fitted_rows"] = np.array(cached.fitted_rows, np.int64)
        arrays.update(cached.basis.arrays())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, arrays, compressed=True)


def digest_bytes(digests: np.ndarray) -> np.ndarray:
    """sha256 hex strings as their 32 bytes a row ("" as zeros): a quarter of the ASCII."""
    out = np.zeros((len(digests), 32), np.uint8)
    for row, digest in enumerate(digests.tolist()):
        if digest:
            out[row] = np.frombuffer(bytes.fromhex(digest), np.uint8)
    return out


def digest_strings(stored: np.ndarray) -> np.ndarray:
    """`digest_bytes` read back as hex strings; caches written before stored the ASCII (or
    numpy's unicode) strings themselves."""
    if stored.dtype != np.uint8:
        return stored.astype("<U64")
    zero = bytes(32)
    return np.array(["" if row == zero else row.hex() for row in map(bytes, stored)], dtype="<U64")


def read_cached(
    path: Path, pictures: Pictures, head: bool, compact: bool = True, share: float | None = None
) -> CachedRows:
    """The cached rows of `pictures`; none found when the file is missing, of the format keyed
    by ids (see store/blocks.py), or damaged (a cache: computed again, with a warning).
    `share`: of the components a basis fitted on them keeps (None: codec.CODE_FRACTION)."""
    none = CachedRows.none(len(pictures.digests), compact=compact, share=share)
    if not path.exists():
        return none
    try:
        with np.load(path, allow_pickle=False) as data:
            if "sha256" not in data.files:
                return none
            found = _matched(data, pictures, head)
    except (OSError, ValueError, KeyError, EOFError, *UNREADABLE_NPZ) as exc:
        log.warning("%s: damaged cached features (%s); computing them again", path, exc)
        return none
    found.compact, found.share = compact, share
    return found


def _matched(data, pictures: Pictures, head: bool) -> CachedRows:
    stored = Pictures(digest_strings(data["sha256"]), data["boxes"])
    row_of = {k: row for row, k in enumerate(stored.keys(head)) if k[0]}
    rows = np.array([row_of.get(k, -1) for k in pictures.keys(head)], dtype=np.int64)
    have = rows >= 0
    found = rows[have]
    if "codes" not in data.files:
        stored_rows = np.asarray(data["vectors"])
        out = CachedRows.none(len(rows), stored_rows.shape[1])
        out.have, out.vectors[have] = have, stored_rows[found]
        return out
    basis = BlockBasis.from_arrays(data)
    stored_codes, stored_scales = np.asarray(data["codes"]), np.asarray(data["scales"])
    if stored_codes.shape != (len(stored.digests), len(basis.components)):
        raise ValueError(f"codes of shape {stored_codes.shape} for {len(stored.digests)} rows")
    out = CachedRows.none(len(rows), basis.components.shape[1])
    out.basis, out.have = basis, have
    # Caches written before say nothing: counted from the rows they hold.
    fitted = data["fitted_rows"] if "fitted_rows" in data.files else len(stored.digests)
    out.fitted_rows = int(fitted)
    out.codes = np.zeros((len(rows), len(basis.components)), np.int8)
    out.scales = np.ones(len(rows), np.float32)
    out.codes[have], out.scales[have] = stored_codes[found], stored_scales[found]
    out.vectors[have] = basis.decode(out.codes[have], out.scales[have])
    return out
