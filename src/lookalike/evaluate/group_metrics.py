"""How well groups found without labels agree with labels: adjusted Rand index and purity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _contingency(found: Sequence[object], truth: Sequence[object]) -> np.ndarray:
    _, a = np.unique(np.asarray(found, dtype=str), return_inverse=True)
    _, b = np.unique(np.asarray(truth, dtype=str), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) // 2).sum())


def adjusted_rand_index(found: Sequence[object], truth: Sequence[object]) -> float:
    """Hubert and Arabie's ARI: 1 for the same partition, about 0 for a random one."""
    table = _contingency(found, truth)
    n = int(table.sum())
    together = _pairs(table)
    rows, cols = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    expected = rows * cols / (n * (n - 1) / 2) if n > 1 else 0.0
    most = (rows + cols) / 2
    if most == expected:  # both partitions trivial (one group, or all apart)
        return 1.0
    return (together - expected) / (most - expected)


def purity(found: Sequence[object], truth: Sequence[object]) -> float:
    """Share of the items whose group's most common label is their own."""
    table = _contingency(found, truth)
    return float(table.max(axis=1).sum() / table.sum())
