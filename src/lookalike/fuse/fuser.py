"""Fusion and reduction of feature blocks into the one vector that is indexed.

Estimators in the scikit-learn manner: ``__init__`` stores the configuration,
``fit`` learns from the collection's own (unlabelled) vectors and returns self,
learned state ends in ``_``, and ``transform`` checks it was fitted and that
the feature counts match. The fitted state saves to an ``.npz`` without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lookalike.config import Block, FusionConfig
from lookalike.errors import CollectionError
from lookalike.fileio import atomic_save_npz
from lookalike.fuse.lowrank import sample_index, sample_rows, top_components, varying
from lookalike.fuse.pseudo_lda import PseudoLabelLDA
from lookalike.fuse.spanned import Basis, Segment, compress, expand
from lookalike.vectors import from_int8_rows, int8_rows, l2_normalize

# Rows fused at a time: the intermediate arrays stay this small whatever the collection.
TRANSFORM_CHUNK = 2048


class PCA:
    """Principal components of the centred data (lowrank.py: a sample, truncated SVD), optionally
    whitened."""

    def __init__(self, n_components: int, whiten: bool = False, varying_only: bool = False) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.varying_only = varying_only  # only the components the rows vary along

    def fit(self, x: np.ndarray) -> PCA:
        x = sample_rows(x, seed=0)
        self.mean_ = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        # Never more components than the data supports (small collections): top_components
        # returns at most min(rows, dims).
        s, self.components_ = top_components(x - self.mean_, self.n_components)
        if self.varying_only:  # `varying` keeps a prefix: the values come largest first
            kept = len(varying(s, self.components_))
            s, self.components_ = s[:kept], self.components_[:kept]
        variance = s.astype(np.float64) ** 2 / max(len(x) - 1, 1)
        self.scale_ = (1.0 / np.sqrt(variance + 1e-6 * variance.max() + 1e-12)).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "components_"):
            raise RuntimeError("PCA is not fitted")
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"PCA fitted on {self.mean_.shape[0]} features, got {x.shape[1]}")
        y = (np.asarray(x, dtype=np.float32) - self.mean_) @ self.components_.T
        return y * self.scale_ if self.whiten else y


class DenseReducer:
    """The dense final vector: PCA to `dim`, then (with `ks`) a second pseudo-label LDA round
    on the reduced vector and PCA to `dim` again; unit-length out.

    Fitted on the collection without labels. Measured (experiments/quality_dense.py): the
    PCA alone loses 0.003 P@4 on anime-faces-dev at 256 dims; the second LDA round on the
    dense vector gains it back and more, which the same round on 8000 dims cannot afford.
    """

    def __init__(self, dim: int, ks: Sequence[int] = ()) -> None:
        self.dim = dim
        self.ks = tuple(ks)

    def fit(self, x: np.ndarray) -> DenseReducer:
        self.first_ = PCA(self.dim).fit(x)
        self.lda_ = self.last_ = None
        if self.ks:
            y = l2_normalize(self.first_.transform(x), in_place=True)
            self.lda_ = PseudoLabelLDA(self.ks).fit(y)
            self.last_ = PCA(self.dim).fit(self.lda_.transform(y))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        y = l2_normalize(self.first_.transform(x), in_place=True)
        if self.lda_ is not None and self.last_ is not None:
            y = l2_normalize(self.last_.transform(self.lda_.transform(y)), in_place=True)
        return y

    @property
    def output_dim(self) -> int:
        last = self.last_ if self.last_ is not None else self.first_
        return int(last.components_.shape[0])

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}/first/mean": self.first_.mean_}
        arrays[f"{prefix}/first/components"] = self.first_.components_
        if self.lda_ is not None and self.last_ is not None:
            arrays.update(self.lda_.to_arrays(f"{prefix}/lda"))
            arrays[f"{prefix}/last/mean"] = self.last_.mean_
            arrays[f"{prefix}/last/components"] = self.last_.components_
        return arrays

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> DenseReducer:
        reducer = cls(0)
        reducer.first_ = _pca_from(data, f"{prefix}/first")
        reducer.lda_ = reducer.last_ = None
        if f"{prefix}/last/mean" in data:
            reducer.lda_ = PseudoLabelLDA.from_arrays(data, f"{prefix}/lda")
            reducer.last_ = _pca_from(data, f"{prefix}/last")
        return reducer


class SpanReducer:
    """A collection's unit vectors turned onto the span of the vectors themselves (uncentred),
    with one more dimension for what lies outside it: at most one dimension a picture plus
    one, and every cosine with a collection's vector, a query's from outside too, is the wide
    one's (to the int8 matrix's rounding). For a collection too small to fit a PCA to `dim`.
    """

    # A vector whose part outside the span is under this share of its square gets none: the
    # collection's own, whose int8-stored matrix moves their squared norm by up to ~0.01 (a
    # residual of 0.1 each would add up to 0.01 to their cosines, and more to a query's).
    RESIDUAL_FLOOR = 0.02

    def fit(self, x: np.ndarray) -> SpanReducer:
        self.components_ = varying(*top_components(x, len(x)))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, np.float32) @ self.components_.T
        outside = 1 - np.einsum("ij,ij->i", y, y)
        residual = np.where(outside > self.RESIDUAL_FLOOR, np.sqrt(np.maximum(outside, 0)), 0)
        return l2_normalize(np.hstack([y, residual[:, None].astype(np.float32)]), in_place=True)

    @property
    def output_dim(self) -> int:
        return int(self.components_.shape[0]) + 1

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}/span/components": self.components_}

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> SpanReducer:
        reducer = cls()
        reducer.components_ = data[f"{prefix}/span/components"]
        return reducer


def _pca_from(data: Mapping[str, np.ndarray], prefix: str) -> PCA:
    pca = PCA(0)
    pca.mean_ = data[f"{prefix}/mean"]
    pca.components_ = data[f"{prefix}/components"]
    return pca


class Fuser:
    """Turns per-block vectors into the fused vector, as the preset says."""

    def __init__(self, blocks: Sequence[Block], fusion: FusionConfig) -> None:
        self.blocks = tuple(blocks)
        self.fusion = fusion

    def _block_reducers(self) -> dict[str, PCA]:
        return {b.key: PCA(b.reduce_dim) for b in self.blocks if b.reduce_dim}

    def _stack(self, vectors: Mapping[str, np.ndarray], fitting: bool) -> np.ndarray:
        parts = []  # the inputs themselves (or their small reductions): no copies yet
        for block in self.blocks:
            if block.key not in vectors:
                raise KeyError(f"feature block {block.key!r} is missing")
            x = np.asarray(vectors[block.key], dtype=np.float32)
            expected = self.input_dims_.get(block.key) if not fitting else None
            if expected is not None and x.shape[1] != expected:
                raise ValueError(f"block {block.key}: fitted on {expected} dims, got {x.shape[1]}")
            reducer = self.reducers_.get(block.key)
            if reducer is not None:
                if fitting:
                    reducer.fit(x)
                x = reducer.transform(x)
            parts.append(x)
        # Written once into the output, each block scaled there.
        out = np.empty((len(parts[0]), sum(p.shape[1] for p in parts)), dtype=np.float32)
        col = 0
        for block, x in zip(self.blocks, parts, strict=True):
            segment = out[:, col : col + x.shape[1]]
            segment[...] = x
            if self.fusion.mode == "weighted":
                l2_normalize(segment, in_place=True)
                segment *= np.float32(block.weight)
            col += x.shape[1]
        return out

    def fit(
        self,
        vectors: Mapping[str, np.ndarray],
        bases: Mapping[str, Basis] | None = None,
        refitted: bool = True,
    ) -> Fuser:
        """Fitted on `vectors`; `bases`: the codec bases the coded blocks among them were
        decoded from (store/codec.py), on which the fitted matrices are stored (spanned.py).
        `refitted`: whether the collection fits the fuser again as it grows (an external
        store keeps it for good; a small collection then keeps the wide vector)."""
        self.bases_ = dict(bases or {})
        self.input_dims_ = {b.key: int(np.shape(vectors[b.key])[1]) for b in self.blocks}
        self.reducers_ = self._block_reducers()
        # Every fit below reads a sample of rows (the same rows in every block).
        n = len(vectors[self.blocks[0].key])
        self.fitted_rows_ = n  # an index run refits once the collection outgrows it
        rows = sample_index(n, seed=0)
        sample = vectors if len(rows) == n else {b.key: vectors[b.key][rows] for b in self.blocks}
        fused = self._stack(sample, fitting=True)
        self.pca_ = None
        if self.fusion.pca_dim or self.fusion.whiten:
            dim = self.fusion.pca_dim or fused.shape[1]
            self.pca_ = PCA(dim, whiten=self.fusion.whiten).fit(fused)
        unit = self._unit(fused)  # as transform() applies it (in place: one copy of the sample)
        self.lda_ = None
        if self.fusion.pseudo_lda_ks:
            starts = self.fusion.pseudo_lda_starts
            axes = self.fusion.pseudo_lda_axes
            self.lda_ = PseudoLabelLDA(self.fusion.pseudo_lda_ks, pca_dim=axes, starts=starts)
            self.lda_.fit(unit)
        self.final_ = self.feel_ = None
        dim = (self.fusion.out_dim or 0) - (self.fusion.feel_dim if self.fusion.feel_block else 0)
        # A PCA to `dim` needs more pictures than `dim`: fitted on the article's 7 cards it
        # made a cat photo Saber's closest look-alike. A smaller collection's wide vectors are
        # turned onto their own span instead, which keeps their cosines (one dimension a
        # picture, not 8000). Kept for good, that span would lose what the pictures added
        # later bring: an external store keeps the wide vector.
        fits_pca = len(fused) > dim
        if self.fusion.out_dim and (fits_pca or refitted):
            reduced = unit if self.lda_ is None else self.lda_.transform(unit)
            if not fits_pca:
                self.final_ = SpanReducer().fit(reduced)
            else:
                if self.fusion.feel_block:
                    # A colour grid coded on fewer components than feel_dim (under about 410
                    # pictures) varies along those only: the rest would be the solver's
                    # noise, outside the block's span, and store the matrix wide
                    # (spanned.py). The tail then has fewer dims; the rest keeps its.
                    feel = PCA(self.fusion.feel_dim, varying_only=True)
                    self.feel_ = feel.fit(self._feel_input(sample))
                self.final_ = DenseReducer(dim, self.fusion.pseudo_lda_ks).fit(reduced)
        # The state as saved (int8 matrices): what this fuser makes, a loaded one makes.
        stored = Fuser.from_arrays(self.to_arrays(), self.blocks, self.fusion, self.bases_)
        self.__dict__.update(stored.__dict__)
        return self

    def _feel_input(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        key = self.fusion.feel_block
        if key not in self.input_dims_:
            raise KeyError(f"feel block {key!r} is not one of the preset's blocks")
        return l2_normalize(np.asarray(vectors[key], np.float32))  # type: ignore[index]

    def transform(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        if not hasattr(self, "input_dims_"):
            raise RuntimeError("Fuser is not fitted")
        n = len(vectors[self.blocks[0].key]) if self.blocks[0].key in vectors else 0
        out = np.empty((n, self.output_dim), dtype=np.float32)
        for start in range(0, n, TRANSFORM_CHUNK):
            part = {k: v[start : start + TRANSFORM_CHUNK] for k, v in vectors.items()}
            out[start : start + TRANSFORM_CHUNK] = self._transform_rows(part)
        if n == 0:  # still checks the blocks
            self._stack(vectors, fitting=False)
        return out

    def _transform_rows(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        fused = self._unit(self._stack(vectors, fitting=False))
        if self.lda_ is not None:
            fused = self.lda_.transform(fused)
        if self.final_ is not None:
            fused = self.final_.transform(fused)
        if self.feel_ is not None:
            # The whole picture's colour layout, lightly, beside the dense vector: the
            # second LDA round favours identity, and this keeps the feel (quality_dense.py;
            # 64 dims at 0.2 was the one tried setting that held P@4 and feel on every set).
            feel = l2_normalize(self.feel_.transform(self._feel_input(vectors)), in_place=True)
            feel *= np.float32(self.fusion.feel_weight)
            fused = l2_normalize(np.hstack([fused, feel]), in_place=True)
        return fused

    @property
    def reduces(self) -> bool:
        """Whether the fused vector is a dense reduction of a wider one."""
        return getattr(self, "final_", None) is not None

    def wide_transform(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        """The unit-length vector the dense reduction starts from (the 8000-dim `default` of
        before the reduction). Its cosines keep what the reduction drops: how far a picture
        lies from the collection. The reduction keeps 0.93 of a collection picture's
        (centred) energy and 0.69 of a cat photo's, so a cat scores 0.72 against anime faces
        in the dense space and 0.52 in this one, where the score calibration is fitted."""
        fused = self._unit(self._stack(vectors, fitting=False))
        if self.lda_ is not None:
            fused = self.lda_.transform(fused)
        return l2_normalize(fused, in_place=True)

    def _unit(self, stacked: np.ndarray) -> np.ndarray:
        """The stacked blocks (a fresh array, scaled in place) reduced and unit-length."""
        if self.pca_ is not None:
            stacked = self.pca_.transform(stacked)
        return l2_normalize(stacked, in_place=True)

    def fit_transform(self, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.fit(vectors).transform(vectors)

    def select(self, keys: Sequence[str]) -> Fuser:
        """A fitted Fuser over some of this one's blocks, sharing their per-block state
        (no fused PCA: it mixes all blocks)."""
        blocks = [b for b in self.blocks if b.key in keys]
        part = Fuser(blocks, FusionConfig(mode=self.fusion.mode))
        part.input_dims_ = {b.key: self.input_dims_[b.key] for b in blocks}
        part.bases_ = self.bases_
        part.stored_ = None  # its own state is not what this fuser stored
        part.fitted_rows_ = self.fitted_rows_
        part.reducers_ = {b.key: self.reducers_[b.key] for b in blocks if b.key in self.reducers_}
        part.pca_ = None
        part.lda_ = None
        part.final_ = part.feel_ = None
        return part

    @property
    def output_dim(self) -> int:
        if self.final_ is not None:
            feel = self.feel_.components_.shape[0] if self.feel_ is not None else 0
            return self.final_.output_dim + int(feel)
        if self.lda_ is not None:
            return self.lda_.output_dim
        if self.pca_ is not None:
            return int(self.pca_.components_.shape[0])
        dims = [
            self.reducers_[k].components_.shape[0] if k in self.reducers_ else d
            for k, d in self.input_dims_.items()
        ]
        return int(sum(dims))

    # -- persistence without pickle -------------------------------------------------
    def _layouts(self) -> dict[str, tuple[int, list[Segment]]]:
        """Which columns of each fitted array lie over which coded block (spanned.py), and
        along which axis: the arrays that may be stored on the blocks' bases."""
        stacked: list[Segment] = []
        for block in self.blocks:
            reducer = self.reducers_.get(block.key)
            if reducer is None and block.key in self.bases_:
                stacked.append(("basis", block.key))
            else:
                width = reducer.components_.shape[0] if reducer else self.input_dims_[block.key]
                stacked.append(("free", int(width)))
        layouts: dict[str, tuple[int, list[Segment]]] = {}
        for key in self.reducers_:
            if key in self.bases_:
                for part in ("mean", "components"):
                    layouts[f"block/{key}/{part}"] = (-1, [("basis", key)])
        wide = stacked
        if self.pca_ is not None:
            layouts["fused/mean"] = layouts["fused/components"] = (-1, stacked)
            wide = [("free", int(self.pca_.components_.shape[0]))]
        if self.lda_ is not None:
            layouts["lda/mean"] = (-1, wide)
            layouts["lda/basis"] = (0, wide)
            extra = self.lda_.output_dim - int(self.lda_.mean_.shape[0])
            wide = [("free", extra), *wide] if extra else wide
        if isinstance(self.final_, SpanReducer):
            layouts["final/span/components"] = (-1, wide)
        elif self.final_ is not None:
            layouts["final/first/mean"] = layouts["final/first/components"] = (-1, wide)
        key = self.fusion.feel_block
        if self.feel_ is not None and key in self.bases_:
            layouts["feel/mean"] = layouts["feel/components"] = (-1, [("basis", str(key))])
        return layouts

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays, its matrices int8 as saved (`stored_form`), those
        over coded blocks on the blocks' bases (spanned.py)."""
        arrays: dict[str, np.ndarray] = {}
        for key, pca in self.reducers_.items():
            arrays[f"block/{key}/mean"] = pca.mean_
            arrays[f"block/{key}/components"] = pca.components_
            arrays[f"block/{key}/scale"] = pca.scale_
        if self.pca_ is not None:
            arrays["fused/mean"] = self.pca_.mean_
            arrays["fused/components"] = self.pca_.components_
            arrays["fused/scale"] = self.pca_.scale_
        if self.lda_ is not None:
            arrays.update(self.lda_.to_arrays("lda"))
        if self.final_ is not None:
            arrays.update(self.final_.to_arrays("final"))
        if self.feel_ is not None:
            arrays["feel/mean"] = self.feel_.mean_
            arrays["feel/components"] = self.feel_.components_
        spanned = {}
        for name, (axis, layout) in self._layouts().items():
            if all(kind == "free" for kind, _ in layout):
                continue
            coefficients = compress(arrays[name], layout, self.bases_, axis)
            if coefficients is not None:
                arrays[name] = coefficients
                keys = [str(v) for k, v in layout if k == "basis"]
                spanned[name] = {
                    "axis": axis,
                    "layout": layout,
                    "bases": {key: self.bases_[key].digest for key in keys},
                }
        meta = {"input_dims": self.input_dims_, "fitted_rows": self.fitted_rows_}
        if spanned:
            meta["spanned"] = spanned
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        return stored_form(arrays)

    def save(self, path: Path) -> None:
        # The arrays it was made from, as they were: a fuser kept by a commit that only adds
        # rows is saved unchanged (coded again, a coefficient at the top of its int8 range
        # could round to the next power-of-two scale).
        stored = getattr(self, "stored_", None)
        atomic_save_npz(path, stored if stored is not None else self.to_arrays(), compressed=True)

    @classmethod
    def from_arrays(
        cls,
        data: Mapping[str, np.ndarray],
        blocks: Sequence[Block],
        fusion: FusionConfig,
        bases: Mapping[str, Basis] | None = None,
    ) -> Fuser:
        """A fuser from `to_arrays`; `bases`: its generation's codec bases, which the arrays
        stored on them need."""
        fuser = cls(blocks, fusion)
        fuser.stored_ = {name: np.asarray(data[name]) for name in data}
        data = computed_form(fuser.stored_)
        fuser.bases_ = dict(bases or {})
        meta = json.loads(bytes(data["meta"]).decode())
        for name, spec in meta.get("spanned", {}).items():
            for key, digest in spec["bases"].items():
                if key not in fuser.bases_:
                    raise ValueError(
                        f"{name} needs the codec basis of {key!r} (blocks/codec.npz), not given"
                    )
                if fuser.bases_[key].digest != digest:
                    raise ValueError(f"{name} was stored on another codec basis of {key!r}")
            data[name] = expand(data[name], spec["layout"], fuser.bases_, spec["axis"])
        fuser.input_dims_ = meta["input_dims"]
        fuser.fitted_rows_ = meta.get("fitted_rows")  # None: saved before it was recorded
        fuser.reducers_ = {}
        for key, pca in fuser._block_reducers().items():
            pca.mean_ = data[f"block/{key}/mean"]
            pca.components_ = data[f"block/{key}/components"]
            pca.scale_ = data[f"block/{key}/scale"]
            fuser.reducers_[key] = pca
        fuser.pca_ = None
        if "fused/mean" in data:
            fuser.pca_ = PCA(0, whiten=fusion.whiten)
            fuser.pca_.mean_ = data["fused/mean"]
            fuser.pca_.components_ = data["fused/components"]
            fuser.pca_.scale_ = data["fused/scale"]
        fuser.lda_ = PseudoLabelLDA.from_arrays(data, "lda") if "lda/mean" in data else None
        fuser.final_ = None
        if "final/first/mean" in data:
            fuser.final_ = DenseReducer.from_arrays(data, "final")
        elif "final/span/components" in data:
            fuser.final_ = SpanReducer.from_arrays(data, "final")
        fuser.feel_ = _pca_from(data, "feel") if "feel/mean" in data else None
        return fuser

    @classmethod
    def load(
        cls,
        path: Path,
        blocks: Sequence[Block],
        fusion: FusionConfig,
        bases: Mapping[str, Basis] | None = None,
    ) -> Fuser:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_arrays(data, blocks, fusion, bases)
        except (OSError, ValueError, KeyError) as exc:
            raise CollectionError(f"{path}: cannot read the fitted fusion state ({exc})") from exc


SCALE_SUFFIX = "#scale"


def stored_form(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The matrices (2-D float32) as int8 rows with a power-of-two scale each (beside them as
    NAME#scale), the vectors (means, scales) as they are.

    A quarter of the float32 fuser, a fixed 12 MB of every `default` collection before
    (issue 16). `fit` ends by taking this form itself, so the fused vectors it makes are
    those a loaded fuser makes. Measured with `lookalike evaluate` on the dev sets' `default`
    (benchmarks/README.md, "Where issue 16 stands"): P@4 anime-faces-dev 0.911 and
    orl-faces-dev 0.995 as with float16 matrices, anime-full-dev 0.734 (float16: 0.735).
    """
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if a.ndim == 2 and a.dtype == np.float32:
            out[name], out[name + SCALE_SUFFIX] = int8_rows(a)
        else:
            out[name] = a
    return out


def computed_form(data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`stored_form` read back as float32 (also the float16 matrices of earlier fusers)."""
    out: dict[str, np.ndarray] = {}
    for name in data:
        if name.endswith(SCALE_SUFFIX):
            continue
        a = np.asarray(data[name])
        if name + SCALE_SUFFIX in data:
            a = from_int8_rows(a, data[name + SCALE_SUFFIX])
        out[name] = a.astype(np.float32) if a.dtype == np.float16 else a
    return out
