"""Dense vectors (issue 16): P@4 and feel of a preset at several final dims, on every dev set.

Indexes each set (if its collection is not there yet) with the preset it is evaluated
with, then fuses the stored (or cached) blocks as the preset does, with the final PCA
(`FusionConfig.out_dim`, fitted on the collection without labels) at each dim asked, and
with none (`full`: the vector before this issue). Each row is scored as `lookalike
evaluate --labels folders` scores a preset: leave-one-out, exact cosine top-k.

    python experiments/quality_dense.py --work /tmp/dense --dims full 64 128 256
    python experiments/quality_dense.py --work /tmp/dense --dims 256 --first-dims 192 384 512

`--first-dims`: the dense reduction's first PCA (before its pseudo-label LDA round) to
each of these dims instead of the final vector's own (`out_dim` less the colour tail's),
the last PCA unchanged; `--feel-weights`: the colour tail's weight (`feel_weight`) instead
of the preset's. Variants tried for anime-full-dev (benchmarks/quality.md).

The pseudo-label LDA starts its k-means from one seed, and P@4 moves by up to 0.2 (the
built-in sample) from one seed to another. `--seeds 0 1 2 ...` fits every row once per
seed and prints the mean (and the range of P@4), the figure to decide on; `--ks` other k
values; `--starts N` N k-means starts per k in the wide vector's LDA, each its own LDA,
instead of the preset's (`pseudo_lda_starts`; `--starts-in both`: in the dense round's LDA
too). Two variants measured at 999b244 and dropped: `--fold` (the LDAs folded into one
matrix) and `--average` (one LDA per k on the scatters averaged over the starts).

    python experiments/quality_dense.py --work /tmp/dense --dims full 256 --seeds 0 1 2 3 4 5 6 7 \
        --starts 3

`--code-fraction F`: the preset's blocks coded first, each on F of its principal components
(store/codec.py, forced whatever the collection's size and width; the product codes a
collection of N < 500 pictures on 0.06 N / 500), as a collection of
`CODEC_MIN_ROWS` pictures stores them; `--code-fit-rows N`: those bases fitted on the
first N pictures only and kept (a collection that grew after its bases were fitted), with
`--code-refit-every M` fitted again at each M pictures added, on the rows as stored and
the new ones (as `index` does when it refits the fuser); `--code-shuffled` the pictures
coming in a seeded random order instead of the folders'. Run on a WORK whose collections
keep float16 blocks: the codec's loss against them. `--code-fraction product`: coded as
`index` codes a collection of the set's size (store/codec.py's share, every component under
`LOSSY_MIN_ROWS` pictures).

Sets: anime-faces-dev, orl-faces-dev (default and photo), anime-full-dev (from
../shared/datasets; absent ones are skipped) and the built-in sample (drawn into WORK);
`--folders` adds others (`default`, a label a folder), such as small parts of those.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from lookalike.config import PipelineConfig, get_preset
from lookalike.demo.sample import sample_folder
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import (
    FEEL_BLOCK,
    PresetScore,
    labelled_rows,
    preset_like,
    score_vectors,
)
from lookalike.fuse import fuser as fuser_module
from lookalike.fuse.expansion import expand_collection
from lookalike.fuse.fuser import DenseReducer, Fuser
from lookalike.fuse.pseudo_lda import PseudoLabelLDA
from lookalike.indexing.indexer import Indexer
from lookalike.load.labels import load_labels
from lookalike.store import codec
from lookalike.store.blocks import blocks_for
from lookalike.store.codec import BlockBasis, CodedBlock
from lookalike.store.collection import Collection

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# (name, folder under DATASETS or "sample", preset, labels, task)
SETS = [
    ("anime-faces-dev", "anime-faces-dev", "default", "folders", None),
    ("sample", "sample", "default", "labels.csv", "character"),
    ("orl-faces-dev", "orl-faces-dev", "default", "folders", None),
    ("orl-faces-dev", "orl-faces-dev", "photo", "folders", None),
    ("anime-full-dev", "anime-full-dev", "default", "folders", None),
]


def folder_of(work: Path, folder: str) -> Path:
    return DATASETS / folder if folder != "sample" else sample_folder(work / "sample")


def with_dim(config: PipelineConfig, dim: str) -> PipelineConfig:
    out_dim = None if dim == "full" else int(dim)
    return dataclasses.replace(config, fusion=dataclasses.replace(config.fusion, out_dim=out_dim))


def wider_first(first: int) -> type[DenseReducer]:
    """DenseReducer whose first PCA keeps `first` dims; its last PCA keeps its own."""

    class Wider(DenseReducer):
        def fit(self, x):  # type: ignore[no-untyped-def]
            last, self.dim = self.dim, first
            super().fit(x)
            self.dim = last
            if self.lda_ is not None:
                y = fuser_module.l2_normalize(self.first_.transform(x), in_place=True)
                self.last_ = fuser_module.PCA(last).fit(self.lda_.transform(y))
            return self

    return Wider


@dataclasses.dataclass(frozen=True)
class LdaVariant:
    """How the pseudo-label LDA is fitted: `starts` k-means starts per k (None: the preset's),
    each its own LDA, in the wide vector's LDA alone (`starts_in="wide"`, as the product) or
    in the dense round's LDA too ("both")."""

    starts: int | None = None
    starts_in: str = "wide"
    pca_dim: int | None = None  # the PCA axes an LDA is fitted on (None: the preset's)
    pca_in: str = "both"  # in which LDA: the wide vector's, the dense round's, or both

    def label(self) -> str:
        label = f", {self.starts} k-means starts ({self.starts_in})" if self.starts else ""
        axes = f", LDA on {self.pca_dim} axes ({self.pca_in})" if self.pca_dim else ""
        return label + axes

    def config(self, config: PipelineConfig) -> PipelineConfig:
        if self.starts is None:
            return config
        fusion = dataclasses.replace(config.fusion, pseudo_lda_starts=self.starts)
        return dataclasses.replace(config, fusion=fusion)

    def seeded(self, seed: int, config: PipelineConfig) -> type[PseudoLabelLDA]:
        """PseudoLabelLDA of this variant whose k-means start from `seed` (0: the product's)."""
        # The Fuser names its wide LDA's starts; the dense round's LDA names none.
        dense = config.fusion.pseudo_lda_starts if self.starts_in == "both" else 1
        axes, pca_in = self.pca_dim, self.pca_in

        class Seeded(PseudoLabelLDA):
            def __init__(self, ks=(10, 20, 30, 40, 50), pca_dim=128, starts=None):  # type: ignore[no-untyped-def]
                wide = starts is not None  # the Fuser names its wide LDA's starts and axes
                if axes and pca_in in ("both", "wide" if wide else "dense"):
                    pca_dim = axes
                super().__init__(ks, pca_dim=pca_dim, seed=seed, starts=starts if wide else dense)

        return Seeded


def coded(block: np.ndarray, basis: BlockBasis) -> np.ndarray:
    return np.asarray(CodedBlock(basis, *basis.encode(block)))


def coded_as_grown(block: np.ndarray, fit_rows: int | None, refit_every: int | None) -> np.ndarray:
    """`block` as a collection stores it that grew in order: its bases fitted on the first
    `fit_rows` rows (None: all), then kept for the rest (`refit_every` None) or fitted
    again, on the rows as stored and the new ones, at each `refit_every` rows added."""
    first = len(block) if fit_rows is None else fit_rows
    if refit_every is None:
        return coded(block, BlockBasis.fit(block[:first]))
    stored = coded(block[:first], BlockBasis.fit(block[:first]))
    for start in range(first, len(block), refit_every):
        merged = np.vstack([stored, block[start : start + refit_every]])
        stored = coded(merged, BlockBasis.fit(merged))
    return stored


def mean_score(scores: list[PresetScore]) -> PresetScore:
    """The scores' mean (P@4, mAP, recall and feel over k-means seeds)."""
    fields = ["precision_at_k", "map_at_k", "ann_recall_at_k", "feel"]
    means = {f: float(np.mean([getattr(s, f) for s in scores])) for f in fields}
    return dataclasses.replace(scores[0], **means)


def rows_for(
    work: Path,
    name: str,
    folder: str,
    preset: str,
    labels: str,
    task,
    dims,
    firsts,
    weights,
    seeds,
    variant,
    ks,
    per_seed,
    code_fraction,
    code_fit_rows,
    code_refit_every,
    code_shuffled,
):
    root = folder_of(work, folder)
    coll_path = work / f"{name}.{preset}"
    config = get_preset(preset)
    if not Collection.exists(coll_path) or Collection.open(coll_path).generation() is None:
        Indexer(root, coll_path, config, progress=False, processes=True).run()
    coll = Collection.open(coll_path)
    paths = [r.path for r in coll.catalog.by_status("ok")]
    spec = labels if labels == "folders" else str(root / labels)
    rows, y = labelled_rows(coll, load_labels(spec, paths), task)
    # The preset as it is now, on the collection's own detector and backbone (as `evaluate`).
    stored = preset_like(preset, coll.config)
    keys = list(dict.fromkeys([*stored.block_keys, FEEL_BLOCK]))
    blocks = blocks_for(
        coll, coll.require_generation(), keys, FeatureExtractor(stored), progress=False
    )
    used = {k: blocks[k] for k in stored.block_keys}
    if code_fraction == "product":  # as `index` codes a collection of this size
        used = dict(used)
        codec.code_blocks(used, {})  # puts the rows as they decode in `used`
    elif code_fraction is not None:  # as a collection of CODEC_MIN_ROWS or more stores them
        # Exactly this share, whatever the rows (the product's is less under FULL_SHARE_ROWS).
        kept = codec.CODE_FRACTION, codec.FULL_SHARE_ROWS
        codec.CODE_FRACTION, codec.FULL_SHARE_ROWS = float(code_fraction), 1
        try:
            # The pictures in the folders' order, or (`--code-shuffled`) in a seeded random one.
            count = len(next(iter(used.values())))
            order = np.arange(count)
            if code_shuffled:
                order = np.random.default_rng(0).permutation(count)
            back = np.argsort(order)
            used = {
                k: coded_as_grown(np.asarray(v)[order], code_fit_rows, code_refit_every)[back]
                for k, v in used.items()
            }
        finally:
            codec.CODE_FRACTION, codec.FULL_SHARE_ROWS = kept
    variants = [(f, w) for f in firsts or [None] for w in weights or [None]]
    for dim in dims:
        for first, weight in variants if dim != "full" else [(None, None)]:  # full: no PCA
            config = variant.config(with_dim(stored, dim))
            if ks is not None:
                fusion = dataclasses.replace(config.fusion, pseudo_lda_ks=tuple(ks))
                config = dataclasses.replace(config, fusion=fusion)
            if weight is not None:
                fusion = dataclasses.replace(config.fusion, feel_weight=weight)
                config = dataclasses.replace(config, fusion=fusion)
            scores = []
            for seed in seeds:
                fuser_module.DenseReducer = DenseReducer if first is None else wider_first(first)
                fuser_module.PseudoLabelLDA = variant.seeded(seed, config)
                try:
                    fused = Fuser(config.blocks, config.fusion).fit_transform(used)
                finally:
                    fuser_module.DenseReducer = DenseReducer
                    fuser_module.PseudoLabelLDA = PseudoLabelLDA
                fused = expand_collection(fused, config)[rows]
                scores.append(score_vectors(preset, config, fused, y, blocks[FEEL_BLOCK][rows], 4))
            label = dim if first is None else f"{dim}, first PCA {first}"
            label = label if weight is None else f"{label}, feel {weight}"
            label += variant.label()
            if code_fraction == "product":
                label += ", coded as index codes it"
            elif code_fraction is not None:
                label += f", coded on {float(code_fraction):.1%}"
            label += f" fitted on {code_fit_rows} rows" if code_fit_rows is not None else ""
            label += f", refitted at each {code_refit_every} added" if code_refit_every else ""
            label += ", pictures shuffled" if code_shuffled else ""
            label += f", k {'/'.join(map(str, ks))}" if ks is not None else ""
            if len(seeds) > 1:
                p4 = [s.precision_at_k for s in scores]
                label += f", mean of seeds {seeds[0]}-{seeds[-1]} (P@4 {min(p4):.3f}-{max(p4):.3f})"
                # Each seed's, for a paired comparison of two variants on the same seeds.
                label += f" [{' '.join(f'{v:.4f}' for v in p4)}]" if per_seed else ""
            yield name, preset, label, mean_score(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the collections")
    parser.add_argument("--dims", nargs="+", default=["full", "64", "128", "256"])
    parser.add_argument("--sets", nargs="*", help="only these set names")
    parser.add_argument("--folders", nargs="*", type=Path, default=[], help="more sets")
    parser.add_argument("--first-dims", nargs="*", type=int, help="first PCA dims to try")
    parser.add_argument("--feel-weights", nargs="*", type=float, help="colour tail weights")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="k-means seeds of both LDA rounds"
    )
    parser.add_argument("--starts", type=int, help="k-means starts per k, each an LDA")
    parser.add_argument(
        "--starts-in", choices=["wide", "both"], default="wide", help="which LDA fits start anew"
    )
    parser.add_argument("--ks", nargs="+", type=int, help="the pseudo-label LDA's k values")
    parser.add_argument("--lda-pca-dim", type=int, help="axes an LDA is fitted on (the preset's)")
    parser.add_argument("--lda-pca-in", choices=["both", "wide", "dense"], default="both")
    parser.add_argument("--per-seed", action="store_true", help="print each seed's P@4 too")
    parser.add_argument("--code-fraction", help="blocks coded on this share, or 'product'")
    parser.add_argument("--code-fit-rows", type=int, help="the bases fitted on the first N rows")
    parser.add_argument("--code-refit-every", type=int, help="bases refitted at each N added")
    parser.add_argument(
        "--code-shuffled", action="store_true", help="the pictures come in a random order"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("| set | preset | out_dim | dims | P@4 | mAP@4 | ANN recall@4 | feel |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    extra = [(f.name, str(f.resolve()), "default", "folders", None) for f in args.folders]
    for name, folder, preset, labels, task in SETS + extra:
        if args.sets and name not in args.sets:
            continue
        if folder != "sample" and not (DATASETS / folder).is_dir():
            print(f"| {name} | {preset} | (not in {DATASETS}) | | | | | |")
            continue
        for set_name, preset_name, dim, s in rows_for(
            args.work,
            name,
            folder,
            preset,
            labels,
            task,
            args.dims,
            args.first_dims,
            args.feel_weights,
            args.seeds,
            LdaVariant(args.starts, args.starts_in, args.lda_pca_dim, args.lda_pca_in),
            args.ks,
            args.per_seed,
            args.code_fraction,
            args.code_fit_rows,
            args.code_refit_every,
            args.code_shuffled,
        ):
            print(
                f"| {set_name} | {preset_name} | {dim} | {s.dims} | {s.precision_at_k:.3f} | "
                f"{s.map_at_k:.3f} | {s.ann_recall_at_k:.3f} | {s.feel:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
