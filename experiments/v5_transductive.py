"""Can linear methods on the `default` features reach v5's 0.95 target? (docs/v5.md, round 2)

On an indexed, labelled collection (the default preset), split the labelled images in
halves (stratified, seeds 0-2, as `evaluate --train-fraction 0.5`) and measure precision@4
on the held-out half for:

- `default`: the unlabelled default vector (pseudo-label LDA fitted on the collection);
- `lda`: LDA with the training half's real labels, on the default blocks (before their
  pseudo-label LDA), and `default+lda`: both side by side;
- `st`: self-training, LDA re-fitted with the held-out images assigned to their nearest
  class mean (transductive: their features, never their labels), `default+st` likewise.

    .venv/bin/python experiments/v5_transductive.py COLL
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.config import FusionConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import exact_top_k, labelled_rows, precision_and_map, preset_like
from lookalike.fuse.fuser import Fuser
from lookalike.fuse.pseudo_lda import lda_directions
from lookalike.load.labels import load_labels
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection
from lookalike.train import stratified_split
from lookalike.vectors import l2_normalize


def projected(x: np.ndarray, pca_dim: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:pca_dim].T


def label_lda(z: np.ndarray, train: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Every row projected on the LDA directions of the training rows' real labels."""
    return l2_normalize(z @ lda_directions(z[train], y_train, 0.3))


def precision_at_4(vectors: np.ndarray, part: np.ndarray, y_part: np.ndarray) -> float:
    return round(precision_and_map(exact_top_k(l2_normalize(vectors[part]), 4), y_part)[0], 3)


def default_vectors(
    collection: Path, labels_spec: str
) -> tuple[Collection, list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(collection, paths, labelled rows, their class ids, the default blocks fused without
    and with the pseudo-label LDA) of an indexed, labelled collection."""
    coll = Collection.open(collection)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    paths = [records[int(i)].path for i in gen.ids]
    rows, y = labelled_rows(coll, load_labels(labels_spec, paths), None)
    config = preset_like("default", coll.config)
    blocks = blocks_for(coll, gen, list(config.block_keys), FeatureExtractor(config))
    plain = Fuser(config.blocks, FusionConfig()).fit_transform(blocks)
    unsup = Fuser(config.blocks, config.fusion).fit_transform(blocks)
    return coll, paths, rows, np.unique(y, return_inverse=True)[1], plain, unsup


def self_train(z: np.ndarray, train: np.ndarray, y_train: np.ndarray, rounds: int = 3):
    rows, labels = train, y_train
    for _ in range(rounds):
        p = l2_normalize(z @ lda_directions(z[rows], labels, 0.1))
        classes = np.unique(y_train)
        centres = l2_normalize(np.stack([p[train][y_train == c].mean(0) for c in classes]))
        guess = classes[(p @ centres.T).argmax(1)]
        guess[train] = y_train
        rows, labels = np.arange(len(z)), guess
    return p, guess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--labels", default="folders")
    args = parser.parse_args()
    _, _, rows, y, plain, unsup = default_vectors(args.collection, args.labels)
    z = projected(plain, 256)

    for seed in (0, 1, 2):
        train_part, test_part = stratified_split(y.tolist(), 0.5, seed)
        train, test, y_test = rows[train_part], rows[test_part], y[test_part]
        lda = label_lda(z, train, y[train_part])
        st, guess = self_train(z, train, y[train_part])

        def p4(vectors: np.ndarray, test: np.ndarray = test, y_test: np.ndarray = y_test):
            return precision_at_4(vectors, test, y_test)

        scores = {
            "default": p4(unsup),
            "lda": p4(lda),
            "default+lda": p4(np.concatenate([unsup, lda], 1)),
            "self-training accuracy": round(float((guess[test] == y_test).mean()), 3),
            "st": p4(st),
            "default+st": p4(np.concatenate([unsup, st], 1)),
        }
        print(f"seed {seed}: {scores}", flush=True)


if __name__ == "__main__":
    main()
