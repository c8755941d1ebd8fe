"""Compact feature blocks: each block kept as int8 codes on its own principal components.

The per-block sources (re-fusion, `evaluate`, the web slider, a settings switch) were 16 KB
of float16 per picture, most of a collection's disk. Each block is strongly redundant (the
colour layouts above all), so a collection of `CODEC_MIN_ROWS` (20) pictures or more keeps
it as its coordinates on a share of the block's principal components (`code_share`: 6 %,
the CNN's grids 18 %, the whole picture's colour grid 3 %; under `LOSSY_MIN_ROWS`, every
one its rows vary along), fitted on the collection without labels, quantised to int8 with
one float32 scale per row: about 0.6 KB a picture for `default`. Measured (benchmarks/
quality.md, "Coded blocks as the collection grows", "Small collections" and "Code shares
by block", mean P@4 over 8-16 k-means seeds): as float16 blocks on every dev set, the 200
and 240 pictures of orl-faces-dev and the built-in sample included, and above them on
50-150 pictures of each (0.03-0.13). (Every block on 6 %, anime-full-dev lost 0.011.)

The bases are fitted again whenever an index run refits the fuser on new pictures (the
indexer: every run under 1,000 pictures, then at each quarter of growth), on the stored rows
as they decode and the new ones; a run that adds pictures to the committed index keeps
them. Kept for good from the first pictures, they lose what later ones bring: fitted on
the first 200 of anime-faces-dev's 600 (three of its ten characters) P@4 fell from 0.909
to 0.865. A block narrower than `MIN_CODED_WIDTH` stays float16.

The bases themselves are int8 rows (a power-of-two scale each), half the float16 of
before: about 1 MB of a `default` collection, fixed. Their rows are then not quite orthonormal,
so a row is coded by least squares (`encoder`). Measured with `lookalike evaluate` on
collections indexed with them (benchmarks/README.md, "Where issue 16 stands"): P@4 0.907 on
anime-faces-dev (0.912 on float16 bases, the same run's fuser) and 0.736 on anime-full-dev.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.fileio import atomic_save_npy, atomic_save_npz
from lookalike.fuse.lowrank import sample_rows, top_components, varying
from lookalike.vectors import from_int8_rows, int8_rows

CODEC_MIN_ROWS = 20
# A basis kept while rows are added to what it coded is fitted from 200 rows, as before: the
# evaluate cache's (until it grows by a quarter, cache_file.py) and that of a store updated
# in place (Milvus, for good). Fitted on 20, it would code the rows added later on what 20
# pictures vary along; a collection's own bases are fitted again at every run under 1,000.
KEPT_BASIS_MIN_ROWS = 200
CODE_FRACTION = 0.06
# A block's share is CODE_FRACTION times its factor here (`code_share`). The CNN's 3 x 3 grids
# spread their variance over more components than the other blocks (on anime-full-dev 6 % of
# them hold 67 % of it, of a colour grid 87 %), and coded on 6 % anime-full-dev lost 0.011
# P@4 to float16 blocks (mean over 16 k-means seeds); on 18 % it keeps it. The whole
# picture's colour grid, `default`'s colour tail, is coded on 3 %, which pays for that on
# disk at no measured cost (benchmarks/quality.md, "Code shares by block").
SHARE_FACTORS = {"avg_g3_s4": 3.0, "avg_g3_s5": 3.0, "whole.soft_grid3": 0.5}
# Under this many rows a block keeps a share of its components in proportion (2.4 % at 200
# rows, at least MIN_CODE_DIMS): the bases are most of a small collection's disk, and they
# grow as it does (fitted again at every run under 1,000 pictures). On 2.4 % and 2.9 % the
# built-in sample scored 0.849 and 0.857 (float16 blocks 0.842), orl-faces-dev 0.999 and
# 1.000 (0.997); on 50-150 pictures as float16 blocks or better (quality.md).
FULL_SHARE_ROWS = 500
# Under this many rows a block is coded on every component its rows vary along: to int8,
# what float16 rows hold, in half their bytes. On its share (at least MIN_CODE_DIMS) of 19,
# 20 pictures of anime-faces-dev lost 0.062 P@4 and 20 of orl-faces-dev 0.025; from 50 the
# share scored as float16 blocks or better (benchmarks/quality.md).
LOSSY_MIN_ROWS = 50
MIN_CODE_DIMS = 8
# Narrower blocks stay float16 rows (under 1 KB a picture): coded on their share of
# components, too few of them are left. photo's 112-dim stage-5 GeM on its 8 cost P@4
# 0.991 -> 0.915 on orl-faces-dev (experiments/quality_dense.py --code-fraction 0.06).
MIN_CODED_WIDTH = 512
CODEC_FILE = "codec.npz"


@dataclass(frozen=True)
class BlockBasis:
    """One block's mean and components (dims x block width)."""

    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, block: np.ndarray, share: float | None = None) -> BlockBasis:
        """The basis of `block`'s rows, on `share` of its principal components (None:
        CODE_FRACTION), in proportion under FULL_SHARE_ROWS rows."""
        x = sample_rows(block, seed=0)
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        share = (CODE_FRACTION if share is None else share) * min(1.0, len(block) / FULL_SHARE_ROWS)
        dims = min(max(MIN_CODE_DIMS, round(block.shape[1] * share)), block.shape[1])
        if len(block) < LOSSY_MIN_ROWS:
            dims = block.shape[1]  # top_components keeps at most one a row
        # Directions the rows do not vary along (grey photos fill few colour bins) could make
        # the span singular (fuse/spanned.py): left out.
        components = varying(*top_components(x - mean, dims))
        # Stored as int8 rows (save_bases): rounded now, so a commit codes with what it stores.
        return cls(mean, from_int8_rows(*int8_rows(components)))

    @functools.cached_property
    def encoder(self) -> np.ndarray:
        """(width x dims) least-squares coordinates on the components: the int8-rounded
        components are not quite orthonormal, and their transpose alone would code a row
        a little off what it decodes back to."""
        components = np.asarray(self.components, np.float64)
        return np.linalg.pinv(components).astype(np.float32)

    @functools.cached_property
    def span(self) -> np.ndarray:
        """Rows spanning every row this basis decodes (float64): the components, and the
        mean's part outside them, unit length (fuse/spanned.py stores the fuser on them)."""
        components = np.asarray(self.components, np.float64)
        mean = np.asarray(self.mean, np.float64)
        outside = mean - np.linalg.lstsq(components.T, mean, rcond=None)[0] @ components
        norm = np.linalg.norm(outside)
        if norm <= 1e-6 * max(np.linalg.norm(mean), 1e-30):
            return components
        return np.vstack([components, outside / norm])

    @functools.cached_property
    def digest(self) -> str:
        """What names this basis among others: a hash of its values (once: a fuser's
        arrays each name the bases they were stored on)."""
        h = hashlib.sha256(np.ascontiguousarray(self.mean, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.components, np.float32).tobytes())
        return h.hexdigest()[:16]

    def encode(self, block: np.ndarray, rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """int8 codes (N x dims) and each row's float32 scale."""
        codes = np.empty((len(block), len(self.components)), np.int8)
        scales = np.empty(len(block), np.float32)
        for start in range(0, len(block), rows):
            part = (np.asarray(block[start : start + rows], np.float32) - self.mean) @ self.encoder
            scale = np.abs(part).max(axis=1) / 127
            scale[scale == 0] = 1
            codes[start : start + rows] = np.round(part / scale[:, None])
            scales[start : start + rows] = scale
        return codes, scales

    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        # float32 BLAS: a row may differ by an ulp with the rows decoded beside it (the
        # kernel follows the batch's shape); float64 sums doubled a query's decoding time.
        return (np.asarray(codes, np.float32) * scales[:, None]) @ self.components + self.mean

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The basis as stored: components as int8 rows, as fitted. A basis fitted before
        (float16 components), kept by a later commit, stays float16: its stored rows were
        coded on exactly those values."""
        codes, scales = int8_rows(self.components)
        if not np.array_equal(from_int8_rows(codes, scales), self.components):
            return {
                f"{prefix}mean": self.mean,
                f"{prefix}components": self.components.astype(np.float16),
            }
        return {
            f"{prefix}mean": self.mean,
            f"{prefix}components": codes,
            f"{prefix}components_scales": scales,
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str = "") -> BlockBasis:
        """A basis read back from `arrays()` (an open npz or a dict); components stored as
        float16 (before int8 rows) read as they are."""
        components = np.asarray(data[f"{prefix}components"])
        if components.dtype == np.int8:
            components = from_int8_rows(components, data[f"{prefix}components_scales"])
        return cls(np.asarray(data[f"{prefix}mean"], np.float32), components.astype(np.float32))


class CodedBlock:
    """A stored block read as float32 rows, decoded only for the rows asked for (a query
    reads a handful); `np.asarray(block)` decodes every row."""

    dtype = np.dtype(np.float32)

    def __init__(self, basis: BlockBasis, codes: np.ndarray, scales: np.ndarray) -> None:
        self.basis, self.codes, self.scales = basis, codes, scales

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.codes), self.basis.components.shape[1])

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows: np.ndarray | slice | int) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            return self[np.array([rows])][0]
        return self.basis.decode(self.codes[rows], np.asarray(self.scales[rows]))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype, copy=False)


def code_share(key: str) -> float:
    """The share of its principal components block `key` is coded on (`SHARE_FACTORS`)."""
    factor = SHARE_FACTORS.get(key, SHARE_FACTORS.get(key.partition(".")[2], 1.0))
    return CODE_FRACTION * factor


def worth_coding(rows: int, width: int, min_rows: int | None = None) -> bool:
    """Whether a block of `rows` rows `width` wide is stored as codes (on a new basis);
    `min_rows`: the fewest rows (None: `CODEC_MIN_ROWS`)."""
    return rows >= (CODEC_MIN_ROWS if min_rows is None else min_rows) and width >= MIN_CODED_WIDTH


@dataclass(frozen=True)
class CarriedRows:
    """A commit's rows (`rows`, a mask) that are the previous generation's rows `source_rows`
    of its block `source`: where that block's basis is kept, their codes are copied."""

    rows: np.ndarray
    source: CodedBlock
    source_rows: np.ndarray

    def codes_on(self, basis: BlockBasis, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`block` coded on `basis`: the carried rows' stored codes, the others encoded."""
        codes = np.empty((len(block), len(basis.components)), np.int8)
        scales = np.empty(len(block), np.float32)
        codes[self.rows] = self.source.codes[self.source_rows]
        scales[self.rows] = self.source.scales[self.source_rows]
        fresh = ~self.rows
        codes[fresh], scales[fresh] = basis.encode(block[fresh])
        return codes, scales


def code_blocks(
    blocks: dict[str, np.ndarray],
    kept: Mapping[str, BlockBasis],
    exact: Collection[str] = (),
    carried: Mapping[str, CarriedRows] | None = None,
    min_rows: int | None = None,
) -> dict[str, CodedBlock]:
    """A commit's coded blocks (on the bases of `bases_for`), each replaced in `blocks` by
    what the collection will read back of it: the fuser is fitted on exactly that, and the
    commit stores these codes (`save_coded`), not codes of the decoded rows.

    `exact`: blocks kept as float16 rows, those of a model trained on labels (v5): the
    codes were measured on unlabelled features only, and v5's are already task-specific.
    `carried`: rows of the previous generation, whose codes are copied where their basis is
    kept. Coded again from their decoded values, each row's scale moved by an ulp, and with
    it the k-means of a fit that should have been the same (a repaired fuser).
    `min_rows`: the fewest rows a new basis is fitted on (None: `CODEC_MIN_ROWS`;
    `KEPT_BASIS_MIN_ROWS` for a store that keeps its bases).
    """
    coded = {}
    wanted = {key: block for key, block in blocks.items() if key not in exact}
    for key, basis in bases_for(wanted, kept, min_rows).items():
        carry = (carried or {}).get(key)
        if carry is not None and carry.source.basis is basis:
            coded[key] = CodedBlock(basis, *carry.codes_on(basis, blocks[key]))
        else:
            coded[key] = CodedBlock(basis, *basis.encode(blocks[key]))
        blocks[key] = np.asarray(coded[key])
    return coded


def bases_of(coded: Mapping[str, CodedBlock]) -> dict[str, BlockBasis]:
    """The bases of a commit's coded blocks, by block."""
    return {key: block.basis for key, block in coded.items()}


def bases_for(
    blocks: Mapping[str, np.ndarray],
    kept: Mapping[str, BlockBasis],
    min_rows: int | None = None,
) -> dict[str, BlockBasis]:
    """The bases of a commit's blocks: the previous generation's where it had one (its rows
    were stored through it), a new one for a block of a collection now large enough."""
    out = {}
    for key, block in blocks.items():
        basis = kept.get(key)
        if basis is not None and basis.mean.shape[0] == block.shape[1]:
            out[key] = basis
        elif worth_coding(*block.shape, min_rows):
            basis = BlockBasis.fit(block, code_share(key))
            if len(basis.components):  # rows that do not vary (copies of one picture): float16
                out[key] = basis
    return out


def save_bases(path: Path, bases: Mapping[str, BlockBasis]) -> None:
    arrays = {}
    for key, basis in bases.items():
        arrays.update(basis.arrays(f"{key}/"))
    atomic_save_npz(path, arrays, compressed=True)  # int8 components deflate by a fifth


def load_bases(path: Path) -> dict[str, BlockBasis]:
    """The bases of a generation's coded blocks ({} without the file); no pickles."""
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        keys = {name.rsplit("/", 1)[0] for name in data.files}
        return {key: BlockBasis.from_arrays(data, f"{key}/") for key in keys}


def save_coded(folder: Path, key: str, block: CodedBlock) -> None:
    atomic_save_npy(folder / f"{key}.codes.npy", block.codes)
    atomic_save_npy(folder / f"{key}.scales.npy", block.scales)
