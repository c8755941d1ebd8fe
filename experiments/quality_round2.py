"""Round 2 of the quality experiments (issue 3): spatial CNN pooling, soft colour
histograms, pseudo-label LDA, diffusion. Leave-one-out precision@4, labels for scoring only.

    .venv/bin/python experiments/quality_spatial.py --size 224 --size 320   # CNN cache
    .venv/bin/python experiments/quality_round2.py --sections spatial,colour,lda,diffusion

Reads the caches of quality_experiments.py (<set>-lite0-embed.npz) and of
quality_spatial.py (<set>-lite0-spatial<size>.npz) under --cache; colour histograms are
computed once and cached as <set>-colour2.npz.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import quality_unsup as qu
from quality_experiments import (
    alpha_qe,
    fuse,
    k_reciprocal_scores,
    knn_whiten,
    load_dataset,
    precision_at_k,
)

from lookalike.embed.descriptors import DESCRIPTORS

SETS = ("anime", "orl")

COLOUR: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hsv_grid3": DESCRIPTORS["hsv_grid3"].fn,
    "hair": DESCRIPTORS["hair"].fn,
    "soft_grid3": lambda a: qu.soft_hsv_hist(a, (18, 4, 4), (3, 3)),
    "soft_grid3_sat": lambda a: qu.soft_hsv_hist(a, (18, 4, 4), (3, 3), sat_weight=1.0),
    "soft_36x4x4_grid3": lambda a: qu.soft_hsv_hist(a, (36, 4, 4), (3, 3)),
    "soft_12x3x3_grid3": lambda a: qu.soft_hsv_hist(a, (12, 3, 3), (3, 3)),
    "soft_grid4": lambda a: qu.soft_hsv_hist(a, (18, 4, 4), (4, 4)),
    "soft_bands6": lambda a: qu.soft_hsv_hist(a, (18, 4, 4), (6, 1)),
    "soft_grid3x6": lambda a: qu.soft_hsv_hist(a, (18, 4, 4), (6, 3)),
}


def load_all(cache: Path, roots: dict[str, Path]) -> tuple[dict, dict]:
    data: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    for key, root in roots.items():
        images, labels[key] = load_dataset(root)
        feats: dict[str, np.ndarray] = {}
        with np.load(cache / f"{key}-lite0-embed.npz") as z:
            feats |= {k: z[k] for k in z.files if k != "seconds"}
        for path in sorted(cache.glob(f"{key}-lite0-spatial*.npz")):
            tag = path.stem.split("-spatial")[1]  # "224", "320", "224-flip"
            with np.load(path) as z:
                feats |= {f"{k}@{tag}": z[k] for k in z.files if k != "seconds"}
        cpath = cache / f"{key}-colour2.npz"
        col: dict[str, np.ndarray] = {}
        if cpath.exists():
            with np.load(cpath) as z:
                col = {k: z[k] for k in z.files}
        missing = [n for n in COLOUR if n not in col]
        if missing:
            arrays = [np.asarray(im, dtype=np.uint8) for im in images]
            for name in missing:
                t0 = time.perf_counter()
                col[name] = np.stack([COLOUR[name](a) for a in arrays]).astype(np.float32)
                ms = 1000 * (time.perf_counter() - t0) / len(arrays)
                print(f"  {key} {name}: {ms:.1f} ms/image", flush=True)
            np.savez(cpath, **col)
        feats |= col
        data[key] = feats
    return data, labels


def evaluate(x: np.ndarray, labels: np.ndarray, rerank: str = "none") -> float:
    x = qu.l2n(x.astype(np.float64))
    if rerank.startswith("qe"):
        kk, aa = rerank[2:].split("a")
        x = alpha_qe(x, int(kk), float(aa))
    if rerank == "krecip":
        return precision_at_k(k_reciprocal_scores(x), labels)
    if rerank.startswith("diff"):  # "diff<k>a<alpha>"
        kk, aa = rerank[4:].split("a")
        return precision_at_k(qu.diffusion_scores(x, int(kk), float(aa)), labels)
    return precision_at_k(x @ x.T, labels)


class Table:
    def __init__(self, data: dict, labels: dict, sets: Sequence[str] = SETS) -> None:
        self.data, self.labels, self.sets, self.rows = data, labels, tuple(sets), []
        head = " | ".join(f"P@4 {k}" for k in self.sets)
        print(f"| what | {head} | dims |\n|---|{'---|' * len(self.sets)}---|", flush=True)

    def fused(self, key: str, blocks: Sequence[tuple[str, float]]) -> np.ndarray:
        return fuse([(self.data[key][n], w) for n, w in blocks])

    def row(
        self,
        what: str,
        blocks: Sequence[tuple[str, float]],
        rerank: str = "none",
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> list[float]:
        res = []
        dim = 0
        for key in self.sets:
            x = self.fused(key, blocks)
            if transform is not None:
                x = transform(x)
            dim = x.shape[1]
            res.append(evaluate(x, self.labels[key], rerank))
        line = f"| {what} | {' | '.join(f'{v:.3f}' for v in res)} | {dim} |"
        self.rows.append(line)
        print(line, flush=True)
        return res


GEM, MID = "embed_gem", "embed_gem_mid"
S4G3, S5G3 = "s4_avg_g3@224", "s5_avg_g3@224"
BEST3 = [(GEM, 1.0), (MID, 1.0), ("hsv_grid3", 1.0)]
NEW4 = [(GEM, 1.0), (S4G3, 1.0), (S5G3, 1.0), ("soft_grid3", 1.0)]
NEW4_HARD = [(GEM, 1.0), (S4G3, 1.0), (S5G3, 1.0), ("hsv_grid3", 1.0)]


@dataclass(frozen=True)
class Recipe:
    blocks: Sequence[tuple[str, float]]
    rerank: str = "none"
    transform: Callable[[np.ndarray], np.ndarray] | None = None


def plda(x: np.ndarray) -> np.ndarray:
    """The pseudo-LDA setting of the recipe: k-means k = 10, 20, 30, 40, 50, 2 rounds,
    PCA 128, the projection concatenated with the input (weight 1)."""
    return qu.pseudo_lda(x, (10, 20, 30, 40, 50), rounds=2, pca_dim=128, mix=1.0)


RECIPES = {
    "best3 + qe3a3 (round 1)": Recipe(BEST3, "qe3a3"),
    "gem + gem_mid + soft_grid3 + qe3a3": Recipe([(GEM, 1), (MID, 1), ("soft_grid3", 1)], "qe3a3"),
    "new4 + qe3a3": Recipe(NEW4, "qe3a3"),
    "new4 + knn-whiten + qe3a3": Recipe(NEW4, "qe3a3", knn_whiten),
    "new4 + pseudo-LDA": Recipe(NEW4, "none", plda),
    "new4 + pseudo-LDA + qe3a3 (winner)": Recipe(NEW4, "qe3a3", plda),
    "new4-hard + pseudo-LDA + qe3a3": Recipe(NEW4_HARD, "qe3a3", plda),
}


def section_spatial(t: Table) -> None:
    for size in ("224", "320"):
        if f"s4_gem_g1@{size}" not in t.data["anime"]:
            continue
        for layer in ("s3", "s4", "s5", "s6", "final"):
            for pool in ("gem", "avg"):
                for grid in ("g1", "g2", "g3", "b3"):
                    name = f"{layer}_{pool}_{grid}@{size}"
                    if name in t.data["anime"]:
                        t.row(f"lite0@{size} {layer} {pool} {grid}", [(name, 1.0)])


def section_spatial_fusion(t: Table, size: str = "224") -> None:
    s = f"@{size}"
    for grid in ("g2", "g3", "b3"):
        for layer in ("s4", "s5"):
            name = f"{layer}_gem_{grid}{s}"
            t.row(f"best3 + {layer} gem {grid}{s}", [*BEST3, (name, 1.0)])
            t.row(
                f"gem + {layer} gem {grid}{s} + hsv_grid3", [(GEM, 1), (name, 1), ("hsv_grid3", 1)]
            )
    for rr in ("qe3a3",):
        for grid in ("g2", "g3", "b3"):
            t.row(f"best3 + s4 gem {grid}{s} + {rr}", [*BEST3, (f"s4_gem_{grid}{s}", 1.0)], rr)


def section_colour(t: Table) -> None:
    for name in COLOUR:
        t.row(f"colour {name}", [(name, 1.0)])
    for name in COLOUR:
        if name.startswith("soft"):
            t.row(f"gem + gem_mid + {name}", [(GEM, 1), (MID, 1), (name, 1)])
            t.row(f"gem + gem_mid + {name} + qe3a3", [(GEM, 1), (MID, 1), (name, 1)], "qe3a3")


def section_lda(t: Table) -> None:
    for ks, rounds, pca, mix in (
        ((20,), 1, 128, 0.0),
        ((30,), 1, 128, 0.0),
        ((40,), 1, 128, 0.0),
        ((20, 30, 40), 1, 128, 0.0),
        ((20, 30, 40), 2, 128, 0.0),
        ((20, 30, 40), 3, 128, 0.0),
        ((20, 30, 40), 2, 64, 0.0),
        ((20, 30, 40), 2, 128, 1.0),
    ):

        def tf(x, ks=ks, rounds=rounds, pca=pca, mix=mix):
            return qu.pseudo_lda(x, ks, rounds, pca, mix=mix)

        what = f"best3 + pseudo-LDA k={ks} rounds={rounds} pca={pca} mix={mix}"
        t.row(what, BEST3, transform=tf)
        t.row(what + " + qe3a3", BEST3, "qe3a3", transform=tf)


def section_diffusion(t: Table) -> None:
    for k in (5, 10, 20):
        for a in (0.8, 0.9, 0.99):
            t.row(f"best3 + diffusion k={k} alpha={a}", BEST3, f"diff{k}a{a}")
    t.row("best3 + kNN-diff whitening + qe3a3", BEST3, "qe3a3", transform=knn_whiten)


def section_recipes(t: Table) -> None:
    for name, rec in RECIPES.items():
        t.row(name, rec.blocks, rec.rerank, rec.transform)


def section_pseudo_lda_seeds(t: Table) -> None:
    for seed in (0, 1, 2):
        t.row(
            f"new4 + pseudo-LDA k=(20,30,40) seed {seed} + qe3a3",
            NEW4,
            "qe3a3",
            lambda x, s=seed: qu.pseudo_lda(x, (20, 30, 40), 2, 128, mix=1.0, seed=s),
        )


def section_heldout(t: Table, folds: int = 5) -> None:
    """Pseudo-LDA fitted without the queries: for each of 5 folds, fit on the other 80 %,
    map every vector, score only that fold's queries (against all the others)."""
    for key in t.sets:
        x = t.fused(key, NEW4)
        labels = t.labels[key]
        order = np.random.default_rng(0).permutation(len(x))
        hits = {"none": [], "qe3a3": []}
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            fitted = qu.fit_pseudo_lda(x[train], (10, 20, 30, 40, 50), 2, 128, mix=1.0)
            y = fitted(x)
            for rr in hits:
                z = alpha_qe(y, 3, 3.0) if rr == "qe3a3" else y
                sim = z[test] @ z.T
                sim[np.arange(len(test)), test] = -np.inf
                top = np.argpartition(-sim, 4, axis=1)[:, :4]
                hits[rr].append(labels[top] == labels[test][:, None])
        for rr, h in hits.items():
            p4 = float(np.concatenate(h).mean())
            line = (
                f"| new4 + pseudo-LDA fitted on the other folds (5-fold) {rr} [{key}] | {p4:.3f} |"
            )
            t.rows.append(line)
            print(line, flush=True)


SECTIONS = {
    "spatial": section_spatial,
    "spatial_fusion": section_spatial_fusion,
    "colour": section_colour,
    "lda": section_lda,
    "diffusion": section_diffusion,
    "recipes": section_recipes,
    "seeds": section_pseudo_lda_seeds,
    "heldout": section_heldout,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anime", type=Path, default=Path("../shared/datasets/anime-faces-dev"))
    ap.add_argument("--orl", type=Path, default=Path("../shared/datasets/orl-faces-dev"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-quality"))
    ap.add_argument("--sections", default=",".join(SECTIONS))
    args = ap.parse_args(argv)
    data, labels = load_all(args.cache, {"anime": args.anime, "orl": args.orl})
    t = Table(data, labels)
    for name in args.sections.split(","):
        SECTIONS[name](t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
