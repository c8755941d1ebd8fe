"""`auto`: exact search while it is fast enough, an HNSW graph (usearch) above.

The choice is made at build time from the number of vectors and saved beside the chosen
backend's own files, so a loaded index is the one that was built. Threshold measured by
benchmarks/dense_scale.py (benchmarks/README.md, "Dense collections"): on 256 dims a
`Searcher` top-10 query takes 6.7 ms p50 with exact search at 10k items (growing linearly
with N) and 0.74 ms with hnswlib at 100k, recall@10 1.000; below 10k exact search needs
no build and answers in a few ms. The graph is usearch's (usearch_index.py says why: a
query process memory-maps it); collections whose `auto` chose hnswlib before still load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import CollectionError, LookalikeError
from lookalike.index.base import (
    _CLASSES,
    INDEXES,
    BaseIndex,
    atomic_write,
    check_int,
    index_class,
)
from lookalike.index.usearch_index import check_dtype

EXACT_MAX = 10_000
# The graph: M 32, lookalike's rotated int8 codes walked with ef 64, its 40 best re-scored
# exactly on the float32 rows (usearch_index.py, int8_rotation.py). Measured at 1M items by
# experiments/usearch_dtypes.py (benchmarks/README.md, "usearch at a million"): float32 at
# ef 128 answered in 1.07-1.23 ms p50 with recall@10 0.996; float16 (the graph file 661 B an
# item instead of 1173) at M 16 and ef 96 in 0.46 ms, recall 0.9955; float16 at M 32 and
# ef 64 in 0.32 ms, recall 0.9955 (788 B an item); rotated int8 codes at M 32 and ef 64 in
# 0.22 ms, recall 0.9965 with 40 re-scored (0.992 with 20), 532 B an item. usearch's own int8
# cast lost too much (recall 0.85 with 40 re-scored).
M = 32
EF = 64
DTYPE = "i8-rotated"
RESCORE = 40


class AutoIndex:
    """Exact up to `exact_max` vectors, a usearch HNSW graph (M, ef_construction, ef; its
    vectors `dtype`, re-scored exactly over `rescore` candidates) above."""

    name = "auto"
    query_knobs: ClassVar[dict[str, int]] = {"ef": 1, "rescore": 0}

    def __init__(
        self,
        exact_max: int = EXACT_MAX,
        M: int = M,
        ef_construction: int = 200,
        ef: int = EF,
        dtype: str = DTYPE,
        rescore: int = RESCORE,
    ) -> None:
        self._params = {
            "exact_max": check_int("exact_max", exact_max, 0),
            "M": check_int("M", M, 2),
            "ef_construction": check_int("ef_construction", ef_construction, 1),
            "ef": check_int("ef", ef, 1),
            "dtype": check_dtype(dtype),
            "rescore": check_int("rescore", rescore, 0),
        }
        self.inner: BaseIndex | None = None

    @property
    def dim(self) -> int | None:
        return self.inner.dim if self.inner else None

    @property
    def count(self) -> int:
        return self.inner.count if self.inner else 0

    @property
    def chosen(self) -> str | None:
        return self.inner.name if self.inner else None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def _make_name(self, n: int) -> str:
        return "exact" if n <= self._params["exact_max"] else "usearch"

    def _make(self, n: int) -> BaseIndex:
        if self._make_name(n) == "exact":
            return index_class("exact")()
        p = self._params
        return index_class("usearch")(
            M=p["M"],
            ef_construction=p["ef_construction"],
            ef=p["ef"],
            dtype=p["dtype"],
            rescore=p["rescore"],
        )

    def build(self, vectors: np.ndarray) -> None:
        self.inner = self._make(len(vectors))
        self.inner.build(vectors)

    def extends(self, new: int) -> bool:
        """Yes while the backend chosen for the grown count is the one built (exact search
        grown past `exact_max`, or a graph an older version chose, is built anew)."""
        if self.inner is None or self._make_name(self.count + new) != self.inner.name:
            return False
        return self.inner.extends(new)

    def extend(self, vectors: np.ndarray) -> None:
        if self.inner is None or not self.extends(len(vectors)):
            raise LookalikeError("the auto index cannot add these rows; build it again")
        self.inner.extend(vectors)

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.inner is None:
            raise LookalikeError("the auto index has not been built or loaded")
        return self.inner.query(vectors, k)

    def candidates(self, wanted: int) -> int:
        if self.inner is None:
            raise LookalikeError("the auto index has not been built or loaded")
        return self.inner.candidates(wanted)

    def set_query_params(self, **params: int) -> None:
        for key, value in params.items():
            if key not in self.query_knobs:
                known = ", ".join(self.query_knobs)
                raise LookalikeError(
                    f"the auto index has no query parameter {key!r} (it has: {known})"
                )
            self._params[key] = check_int(key, value, self.query_knobs[key])
            if self.inner is not None and key in self.inner.query_knobs:
                self.inner.set_query_params(**{key: value})

    def save(self, folder: Path) -> None:
        if self.inner is None:
            raise LookalikeError("the auto index has not been built; nothing to save")
        self.inner.save(folder)
        meta = {"backend": self.name, "chosen": self.inner.name, "params": self.params}
        atomic_write(Path(folder) / "auto.json", lambda p: p.write_text(json.dumps(meta)))

    @classmethod
    def load(cls, folder: Path, dim: int) -> AutoIndex:
        chosen, params = saved_choice(folder)
        index = cls(**params)
        index.inner = index_class(chosen).load(folder, dim)
        return index


def saved_choice(folder: Path) -> tuple[str, dict[str, Any]]:
    """(the backend a saved auto index chose, the parameters it was made with), read from
    its auto.json alone: `info` says which index a collection holds without loading it."""
    path = Path(folder) / "auto.json"
    try:
        meta = json.loads(path.read_text())
        chosen, params = str(meta["chosen"]), dict(meta["params"])
    except FileNotFoundError:
        raise CollectionError(f"{folder}: no saved auto index here") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CollectionError(f"{path}: unreadable index metadata ({e})") from e
    if chosen not in ("exact", "usearch", "hnswlib"):
        raise CollectionError(f"{path}: unknown chosen backend {chosen!r}")
    return chosen, params


def describe_choice(chosen: str, params: dict[str, Any]) -> str:
    """What a saved auto index is, in words (`lookalike info`)."""
    if chosen == "exact":
        return f"exact search (up to {params.get('exact_max', EXACT_MAX)} items)"
    graph = {
        "i8-rotated": "rotated int8 codes",
        "i8": "int8 vectors",
        "f16": "float16 vectors",
        "f32": "float32 vectors",
    }
    dtype = params.get("dtype", "f32")
    rescored = f", {params['rescore']} re-scored" if params.get("rescore") else ""
    return (
        f"{chosen} graph: M {params.get('M')}, ef {params.get('ef')}, "
        f"{graph.get(dtype, dtype)}{rescored}"
    )


INDEXES.register(AutoIndex.name)(AutoIndex)
_CLASSES[AutoIndex.name] = AutoIndex  # type: ignore[assignment]
