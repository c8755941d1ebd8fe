"""Compact feature blocks: each block kept as int8 codes on its own principal components.

The per-block sources (re-fusion, `evaluate`, the web slider, a settings switch) were 16 KB
of float16 per picture, most of a collection's disk. Each block is strongly redundant (the
colour layouts above all), so a collection of `CODEC_MIN_ROWS` pictures or more keeps it as
its coordinates on a share (`CODE_FRACTION`) of the block's principal components, fitted
on the collection without labels and then kept (re-used by every later commit, so a stored
row never changes), quantised to int8 with one float32 scale per row: about 0.5 KB a
picture for `default`. Measured in benchmarks/README.md ("Storage per picture"): P@4 the
same as with float16 blocks on anime-faces-dev (0.910) and anime-full-dev (0.745). Smaller
collections keep float16 rows: their disk does not matter, and a basis forced onto the
built-in sample's 240 rows cost 0.045 P@4.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.fileio import atomic_save_npy
from lookalike.fuse.lowrank import sample_rows, top_components

CODEC_MIN_ROWS = 500
CODE_FRACTION = 0.06
MIN_CODE_DIMS = 8
CODEC_FILE = "codec.npz"


@dataclass(frozen=True)
class BlockBasis:
    """One block's mean and components (dims x block width)."""

    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, block: np.ndarray) -> BlockBasis:
        x = sample_rows(block, seed=0)
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        dims = min(max(MIN_CODE_DIMS, round(block.shape[1] * CODE_FRACTION)), block.shape[1])
        _, components = top_components(x - mean, dims)
        # Stored as float16 (save_bases): rounded now, so a commit codes with what it stores.
        return cls(mean, components.astype(np.float16).astype(np.float32))

    def encode(self, block: np.ndarray, rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """int8 codes (N x dims) and each row's float32 scale."""
        codes = np.empty((len(block), len(self.components)), np.int8)
        scales = np.empty(len(block), np.float32)
        for start in range(0, len(block), rows):
            part = (np.asarray(block[start : start + rows], np.float32) - self.mean) @ (
                self.components.T
            )
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
        """The basis as stored (components in float16, as fitted)."""
        return {
            f"{prefix}mean": self.mean,
            f"{prefix}components": self.components.astype(np.float16),
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str = "") -> BlockBasis:
        """A basis read back from `arrays()` (an open npz or a dict)."""
        return cls(
            np.asarray(data[f"{prefix}mean"], np.float32),
            np.asarray(data[f"{prefix}components"], np.float32),
        )


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


def code_blocks(
    blocks: dict[str, np.ndarray],
    kept: Mapping[str, BlockBasis],
    exact: Collection[str] = (),
) -> dict[str, CodedBlock]:
    """A commit's coded blocks (on the bases of `bases_for`), each replaced in `blocks` by
    what the collection will read back of it: the fuser is fitted on exactly that, and the
    commit stores these codes (`save_coded`), not codes of the decoded rows.

    `exact`: blocks kept as float16 rows, those of a model trained on labels (v5): the
    codes were measured on unlabelled features only, and v5's are already task-specific.
    """
    coded = {}
    wanted = {key: block for key, block in blocks.items() if key not in exact}
    for key, basis in bases_for(wanted, kept).items():
        coded[key] = CodedBlock(basis, *basis.encode(blocks[key]))
        blocks[key] = np.asarray(coded[key])
    return coded


def bases_for(
    blocks: Mapping[str, np.ndarray], kept: Mapping[str, BlockBasis]
) -> dict[str, BlockBasis]:
    """The bases of a commit's blocks: the previous generation's where it had one (its rows
    were stored through it), a new one for a block of a collection now large enough."""
    out = {}
    for key, block in blocks.items():
        basis = kept.get(key)
        if basis is not None and basis.mean.shape[0] == block.shape[1]:
            out[key] = basis
        elif len(block) >= CODEC_MIN_ROWS:
            out[key] = BlockBasis.fit(block)
    return out


def save_bases(path: Path, bases: Mapping[str, BlockBasis]) -> None:
    arrays = {}
    for key, basis in bases.items():
        arrays.update(basis.arrays(f"{key}/"))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


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
