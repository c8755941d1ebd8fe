"""Pseudo-label LDA (issue 20): scikit-learn's k-means and LDA against pseudo_lda.py's own,
in P@4 of `default` (256 dims) and its spread.

Each dev set's stored blocks (collections as quality_dense.py makes them in WORK) are fused
as `default` fuses them, six times per implementation: with the pseudo-label LDA's seed 0,
1 and 2 (k-means starts), and with seed 0 fitted on all pictures but one (three different
ones; every picture is still scored). The spread of those six is how much a decision on
that set can trust a difference (quality.md: one changed head box of 240 moved the sample
by 0.065).

    python experiments/quality_dense.py --work /tmp/dense --dims 256   # the collections
    python experiments/pseudo_lda_stability.py --work /tmp/dense
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from quality_dense import SETS, folder_of

from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import FEEL_BLOCK, labelled_rows, preset_like, score_vectors
from lookalike.fuse import fuser as fuse
from lookalike.fuse import pseudo_lda
from lookalike.fuse.expansion import expand_collection
from lookalike.load.labels import load_labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection


def sklearn_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn's k-means in pseudo_lda.kmeans's place (one start, one thread)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        fitted = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    return fitted.labels_.astype(np.int64)


def sklearn_lda(x: np.ndarray, ids: np.ndarray, shrink: float) -> np.ndarray:
    """scikit-learn's LDA (eigen solver, the same shrinkage) in pseudo_lda's place."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrink)
    with warnings.catch_warnings():
        # A pseudo-class of one row adds no within-class scatter; scikit-learn warns of it.
        warnings.filterwarnings("ignore", "Only one sample available", UserWarning)
        lda.fit(np.asarray(x, dtype=np.float64), ids)
    return lda.scalings_[:, : len(lda.classes_) - 1]


IMPLEMENTATIONS: dict[str, tuple[Callable, Callable]] = {
    "own (pseudo_lda.py)": (pseudo_lda.kmeans, pseudo_lda.lda_directions),
    "scikit-learn": (sklearn_kmeans, sklearn_lda),
}


def p_at_4(s: dict, seed: int, drop: int | None) -> float:
    cfg = s["config"]
    used = {k: s["blocks"][k] for k in cfg.block_keys}
    fit_on = used if drop is None else {k: np.delete(v, drop, 0) for k, v in used.items()}
    real = fuse.PseudoLabelLDA
    fuse.PseudoLabelLDA = lambda ks: real(ks, seed=seed)  # type: ignore[assignment,misc]
    try:
        fuser = fuse.Fuser(cfg.blocks, cfg.fusion).fit(fit_on)
    finally:
        fuse.PseudoLabelLDA = real  # type: ignore[misc]
    fused = expand_collection(fuser.transform(used), cfg)[s["rows"]]
    feel = s["blocks"][FEEL_BLOCK][s["rows"]]
    return score_vectors(s["preset"], cfg, fused, s["y"], feel, 4).precision_at_k


def load(work: Path, name: str, folder: str, preset: str, labels: str, task) -> dict:
    root = folder_of(work, folder)
    coll = Collection.open(work / f"{name}.{preset}")
    paths = [r.path for r in coll.catalog.by_status("ok")]
    rows, y = labelled_rows(
        coll, load_labels(labels if labels == "folders" else str(root / labels), paths), task
    )
    stored = preset_like(preset, coll.config)
    keys = list(dict.fromkeys([*stored.block_keys, FEEL_BLOCK]))
    gen = coll.require_generation()
    blocks = blocks_for(coll, gen, keys, FeatureExtractor(stored), progress=False)
    blocks = {k: np.asarray(v, np.float32) for k, v in blocks.items()}
    return {"preset": preset, "config": stored, "rows": rows, "y": y, "blocks": blocks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="quality_dense.py's WORK")
    parser.add_argument("--sets", nargs="*", help="only these set names")
    args = parser.parse_args()
    print("| set | k-means and LDA | seeds 0, 1, 2 | one picture left out (x3) | mean | range |")
    print("|---|---|---|---|---:|---:|")
    for name, folder, preset, labels, task in SETS:
        if preset != "default" or (args.sets and name not in args.sets):
            continue
        if not (args.work / f"{name}.{preset}").is_dir():
            print(f"| {name} | (no collection in {args.work}) | | | | |")
            continue
        s = load(args.work, name, folder, preset, labels, task)
        n = len(s["blocks"][s["config"].block_keys[0]])
        for label, (km, lda) in IMPLEMENTATIONS.items():
            pseudo_lda.kmeans, pseudo_lda.lda_directions = km, lda
            seeds = [p_at_4(s, seed, None) for seed in (0, 1, 2)]
            drops = [p_at_4(s, 0, d) for d in (n // 7, n // 2, 5 * n // 6)]
            both = seeds + drops
            print(
                f"| {name} | {label} | {' '.join(f'{p:.3f}' for p in seeds)} | "
                f"{' '.join(f'{p:.3f}' for p in drops)} | {np.mean(both):.3f} | "
                f"{max(both) - min(both):.3f} |",
                flush=True,
            )
        pseudo_lda.kmeans, pseudo_lda.lda_directions = IMPLEMENTATIONS["own (pseudo_lda.py)"]


if __name__ == "__main__":
    main()
