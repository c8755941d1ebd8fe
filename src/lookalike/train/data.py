"""Labels as training targets: tasks and their classes, and stratified splits.

numpy only (no torch), so `evaluate` can split a collection without loading a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.errors import LabelsError
from lookalike.load.labels import Labels, Task, label_set

MISSING = -1  # the target of an image that has no label for a task


@dataclass(frozen=True)
class Targets:
    """What each image should be classified as, task by task.

    `hot[t]` is (N, classes of task t): 1 / (number of labels) on each label of the image
    (a picture of two characters is half each), a zero row when it has none. `primary`
    (N, tasks) is the first of them, or MISSING: what the splits are stratified by.
    """

    primary: np.ndarray
    hot: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.primary)

    def __getitem__(self, rows: np.ndarray) -> Targets:
        return Targets(self.primary[rows], tuple(h[rows] for h in self.hot))

    @property
    def labelled(self) -> np.ndarray:
        """(N,) bool: the images with a label for at least one task."""
        return (self.primary != MISSING).any(axis=1)


def encode_targets(
    labels: Labels, paths: Sequence[str], tasks: Sequence[str] | None = None
) -> tuple[list[Task], Targets]:
    """Tasks (default: every label column) and the targets of `paths` for them.

    A cell `a|b` (several characters) labels the image with both classes. Classes are
    counted among `paths` only (the images a model trains on), so a task whose labelled
    images all share one class is an error: there is nothing to tell apart.
    """
    names = list(tasks) if tasks else list(labels.tasks)
    for name in names:
        if name not in labels.tasks:
            raise LabelsError(
                f"no label column {name!r}; the labels have {', '.join(labels.tasks)}"
            )
    if len(set(names)) != len(names):
        raise LabelsError(f"a task is named twice in {', '.join(names)}")
    specs: list[Task] = []
    primary = np.full((len(paths), len(names)), MISSING, dtype=np.int64)
    hot: list[np.ndarray] = []
    for t, name in enumerate(names):
        column = labels.column(name)
        sets = [sorted(label_set(column.get(p, ""))) for p in paths]
        classes = tuple(sorted({c for labs in sets for c in labs}))
        if not classes:
            raise LabelsError(f"task {name!r}: none of the {len(paths)} images has a label")
        if len(classes) == 1:
            raise LabelsError(
                f"task {name!r}: every labelled image is {classes[0]!r}; a task needs at least "
                "two classes to learn anything (drop it with --tasks)"
            )
        ids = {c: i for i, c in enumerate(classes)}
        share = np.zeros((len(paths), len(classes)), dtype=np.float32)
        for row, labs in enumerate(sets):
            if labs:
                share[row, [ids[c] for c in labs]] = 1.0 / len(labs)
                primary[row, t] = ids[labs[0]]
        hot.append(share)
        specs.append(Task(name, classes))
    return specs, Targets(primary, tuple(hot))


def stratified_split(
    strata: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (chosen, rest): `fraction` of every stratum, rounded, in the first part.

    A stratum of two or more rows keeps at least one row on each side, so every class is
    both learned and scored. Same strata and seed give the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise LabelsError(f"the fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata, dtype=object)
    chosen: list[int] = []
    for value in sorted(set(strata.tolist())):
        rows = np.flatnonzero(strata == value)
        rows = rows[rng.permutation(len(rows))]
        n = round(fraction * len(rows))
        if len(rows) >= 2:
            n = min(max(n, 1), len(rows) - 1)
        chosen.extend(rows[:n].tolist())
    first = np.array(sorted(chosen), dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(strata)), first)
    return first, rest
