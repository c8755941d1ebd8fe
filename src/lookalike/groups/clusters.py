"""Character groups without labels: the collection's stored fused vectors clustered into
characters (or people, with `photo`), as Immich groups faces into people.

Spectral clustering of a k-nearest-neighbour graph, chosen from the data alone:
the vectors are centred (the common part of a collection says nothing about who is who)
and normalised; for each neighbour count in NEIGHBOURS the graph's normalised affinity
is decomposed, and the number of groups is where its eigenvalues drop most (the
eigengap); the neighbour count with the largest drop wins, and k-means on its
eigenvectors gives the groups. No label is used: they only measure the result
(benchmarks/groups.py, benchmarks/quality.md#character-groups).

Each group has a representative, its medoid (the member most like the others). Groups
smaller than `min_size` are listed as ungrouped. `labels_csv` writes a labels CSV
(`file,character`: group_N or the name given to it) that `train` and `evaluate` read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes
from lookalike.fuse.lowrank import sample_index
from lookalike.fuse.pseudo_lda import kmeans
from lookalike.store.collection import Collection
from lookalike.vectors import l2_normalize

# Neighbour counts tried (the eigengap picks one); 40 as well cost the built-in sample
# (20 pictures a character) 0.10 ARI, benchmarks/quality.md#character-groups.
NEIGHBOURS = (5, 7, 10, 14, 20, 28)
MAX_GROUPS = 60  # most groups the eigengap may choose
KMEANS_RESTARTS = 5
# The graph is decomposed on at most this many rows (dense eigh, O(n^3)); the others join
# the group whose centre they are closest to.
MAX_ROWS = 3000
DEFAULT_MIN_SIZE = 3
TASK = "character"


@dataclass(frozen=True)
class Clustering:
    assign: np.ndarray  # (n,) group number per row, 0..k-1
    neighbours: int  # the chosen neighbour count
    eigengap: float


def _spectral(x: np.ndarray, neighbours: int) -> tuple[np.ndarray, int, float]:
    """(eigenvectors, number of groups, eigengap) of the kNN graph of unit rows x."""
    n = len(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, neighbours, axis=1)[:, :neighbours]
    graph = np.zeros((n, n))
    graph[np.arange(n)[:, None], nearest] = 1.0
    graph = np.maximum(graph, graph.T)
    degree = np.sqrt(graph.sum(axis=1))
    values, vectors = np.linalg.eigh(graph / degree[:, None] / degree[None, :])
    values, vectors = values[::-1], vectors[:, ::-1]
    most = min(MAX_GROUPS, n - 1)
    gaps = values[1:most] - values[2 : most + 1]  # gaps[i]: after eigenvalue i + 2
    k = int(np.argmax(gaps)) + 2
    return vectors[:, :k], k, float(gaps[k - 2])


def _best_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means with restarts; the assignment of least within-group spread."""
    best, best_cost = None, np.inf
    for r in range(KMEANS_RESTARTS):
        assign = kmeans(x, k, seed + r)
        centres = np.stack(
            [x[assign == j].mean(0) if (assign == j).any() else x[0] for j in range(k)]
        )
        cost = float(((x - centres[assign]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = assign, cost
    assert best is not None
    return best


def cluster(
    vectors: np.ndarray, seed: int = 0, neighbour_counts: tuple[int, ...] = NEIGHBOURS
) -> Clustering:
    """Groups of the rows of `vectors` (any fused vectors), without labels."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < 3:
        return Clustering(np.zeros(len(x), dtype=np.int64), 0, 0.0)
    x = l2_normalize(x - x.mean(axis=0))
    rows = sample_index(len(x), seed, MAX_ROWS)
    sample = x[rows]
    best = None
    for neighbours in (m for m in neighbour_counts if m < len(sample) - 1):
        vecs, k, gap = _spectral(sample, neighbours)
        if best is None or gap > best[3]:
            best = (vecs, k, neighbours, gap)
    assert best is not None
    vecs, k, neighbours, gap = best
    assign_sample = _best_kmeans(l2_normalize(vecs.astype(np.float32)), k, seed)
    # Every row (sampled or not) joins the group whose centre it is closest to.
    centres = l2_normalize(np.stack([sample[assign_sample == j].mean(0) for j in range(k)]))
    assign = (x @ centres.T).argmax(axis=1)
    assign[rows] = assign_sample
    return Clustering(_renumber(assign), neighbours, gap)


def _renumber(assign: np.ndarray) -> np.ndarray:
    """Groups numbered from 0 by size, largest first (ties: the first row)."""
    labels, first, counts = np.unique(assign, return_index=True, return_counts=True)
    order = sorted(range(len(labels)), key=lambda i: (-counts[i], first[i]))
    new = np.empty(int(labels.max()) + 1, dtype=np.int64)
    new[labels[order]] = np.arange(len(order))
    return new[assign]


def medoid(x: np.ndarray) -> int:
    """The row most like the others (largest summed cosine similarity)."""
    unit = l2_normalize(np.asarray(x, dtype=np.float32))
    return int(np.argmax(unit @ unit.sum(axis=0)))


@dataclass(frozen=True)
class Member:
    id: int
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path}


@dataclass(frozen=True)
class Group:
    name: str  # group_N, or the name given to it
    representative: Member
    members: list[Member]  # the representative first, then by path

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": len(self.members),
            "representative": self.representative.to_json(),
            "members": [m.to_json() for m in self.members],
        }


@dataclass(frozen=True)
class GroupReport:
    groups: list[Group]
    ungrouped: list[Member]  # in groups smaller than min_size
    min_size: int
    neighbours: int

    def to_json(self) -> dict[str, Any]:
        return {
            "min_size": self.min_size,
            "neighbours": self.neighbours,
            "groups": [g.to_json() for g in self.groups],
            "ungrouped": [m.to_json() for m in self.ungrouped],
        }

    def labels_csv(self, task: str = TASK) -> str:
        """`file,<task>`: every grouped file with its group's name (what `train` reads)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", task])
        rows = sorted((m.path, g.name) for g in self.groups for m in g.members)
        writer.writerows(rows)
        return out.getvalue()


def read_names(path: Path) -> dict[str, str]:
    """A names CSV, `group,name` (e.g. `group_3,Saber`): the names given to groups."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LookalikeError(f"{path}: cannot read the group names ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or {"group", "name"} - {f.strip() for f in reader.fieldnames}:
        raise LookalikeError(f"{path}:1: needs a header 'group,name'")
    names: dict[str, str] = {}
    for row in reader:
        group, name = (row.get("group") or "").strip(), (row.get("name") or "").strip()
        where = f"{path}:{reader.line_num}"
        if not group or not name:
            raise LookalikeError(f"{where}: needs a group (e.g. group_1) and a name")
        if group in names:
            raise LookalikeError(f"{where}: {group} is named twice")
        names[group] = name
    return names


def find_groups(
    collection: Collection | Path,
    min_size: int = DEFAULT_MIN_SIZE,
    names: Mapping[str, str] | None = None,
    seed: int = 0,
) -> GroupReport:
    """The character groups of a collection's indexed files (read only)."""
    if min_size < 1:
        raise LookalikeError(f"--min-size must be at least 1, got {min_size}")
    coll = collection if isinstance(collection, Collection) else Collection.open(collection)
    gen = coll.require_generation()
    ids = gen.ids
    records = coll.catalog.get_many(ids.tolist())
    fused = np.asarray(gen.fused(), dtype=np.float32)
    found = cluster(fused, seed)
    groups, ungrouped = [], []
    for number in range(int(found.assign.max()) + 1 if len(ids) else 0):
        rows = np.flatnonzero(found.assign == number)
        members = [Member(int(ids[r]), records[int(ids[r])].path) for r in rows]
        if len(rows) < min_size:
            ungrouped += members
            continue
        rep = members[medoid(fused[rows])]
        rest = sorted((m for m in members if m != rep), key=lambda m: m.path)
        groups.append(Group(f"group_{len(groups) + 1}", rep, [rep, *rest]))
    unknown = sorted(set(names or {}) - {g.name for g in groups})
    if unknown:
        raise LookalikeError(
            f"names given to groups that do not exist: {', '.join(unknown)} "
            f"(there are group_1 to group_{len(groups)})"
        )
    named = [Group((names or {}).get(g.name, g.name), g.representative, g.members) for g in groups]
    ungrouped.sort(key=lambda m: m.path)
    return GroupReport(named, ungrouped, min_size, found.neighbours)


def write_labels(report: GroupReport, out: Path, task: str = TASK) -> Path:
    atomic_write_bytes(Path(out), report.labels_csv(task).encode())
    return Path(out)


SHEET_ROW = 8  # tiles per row of a group's sheet
SHEET_MOST = 48  # members drawn per group sheet at most (the sheet says how many more)


def write_sheets(report: GroupReport, coll: Collection, folder: Path) -> list[Path]:
    """One contact sheet per group in `folder` (`<name>.png`): the representative first,
    then the members, SHEET_ROW to a row."""
    from lookalike.render.sheets import SheetItem, grid_sheet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = coll.catalog.get_many([m.id for g in report.groups for m in g.members])
    written = []
    for group in report.groups:
        shown = group.members[:SHEET_MOST]
        tiles = []
        for n, m in enumerate(shown):
            rec = records[m.id]
            note = "representative" if n == 0 else ""
            if n == len(shown) - 1 and len(group.members) > len(shown):
                note = f"and {len(group.members) - len(shown)} more"
            tiles.append(
                SheetItem(coll.root / m.path, m.path, None, rec.head_box, rec.fallback, note)
            )
        rows = [tiles[i : i + SHEET_ROW] for i in range(0, len(tiles), SHEET_ROW)]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in group.name)
        out = folder / f"{safe}.png"
        grid_sheet([(row[0], row[1:]) for row in rows], out, tile=160)
        written.append(out)
    return written
