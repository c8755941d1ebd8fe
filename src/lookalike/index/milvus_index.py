"""Milvus as the vector store (optional extra `milvus`): Milvus Lite in a local file, or a server.

The same code talks to both: ``uri`` is a local path (Milvus Lite, embedded, no server) or
``http://HOST:PORT`` (a Milvus server or cluster). Two ways to fill the store:

* ``update`` (what `lookalike index` calls): the live Milvus collection ``collection`` keyed by
  the catalog ids. A run inserts (upserts) only the vectors it embedded and deletes the ids
  that went away, so a growing collection is never rebuilt from scratch. Each row also holds
  the path, head box and fallback flag, so a service can answer from Milvus alone.
* ``build`` (the generic index contract, used by `evaluate` and `train`): a new Milvus
  collection of its own, ``<collection>_<random>``, keyed by row, so that it can never clobber
  the live one.

Locally the index folder keeps only the Milvus primary key of each row (8 bytes a vector),
which turns Milvus answers back into the generation's rows.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lookalike.errors import CollectionError, LookalikeError
from lookalike.index.base import BaseIndex, as_unit_vectors, check_int, register_index

INDEX_TYPES = ("HNSW", "FLAT", "IVF_FLAT", "IVF_PQ")
MAX_PATH = 4096
# One insert message stays well under Milvus' 64 MiB gRPC limit.
INSERT_BYTES = 16 * 2**20


@runtime_checkable
class IncrementalIndex(Protocol):
    """An index kept in an external store that takes inserts and deletes (Milvus)."""

    def continues(self, previous_params: Mapping[str, Any] | None) -> bool: ...

    def update(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]],
        fresh: np.ndarray | None,
        removed: np.ndarray,
    ) -> None: ...


def store_params(spec: str, collection_folder: Path) -> dict[str, Any]:
    """`--store milvus:PATH` (Milvus Lite) or `milvus://HOST:PORT` (a server) -> index params."""
    if spec.startswith("milvus://"):
        uri = "http://" + spec[len("milvus://") :]
    elif spec.startswith("milvus:") and len(spec) > len("milvus:"):
        uri = str(Path(spec[len("milvus:") :]).expanduser().resolve())
    else:
        raise LookalikeError(
            f"--store {spec!r}: expected milvus:PATH (Milvus Lite file) or milvus://HOST:PORT"
        )
    name = re.sub(r"[^0-9A-Za-z_]", "_", Path(collection_folder).resolve().name)
    return {"uri": uri, "collection": f"lookalike_{name}"[:200]}


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(uri: str) -> Any:
    """One client per store and process: Milvus Lite lets only one client open its file."""
    with _CLIENTS_LOCK:
        if uri not in _CLIENTS:
            # gRPC's fork handlers restart its poller in every forked child, and a child that
            # closes its file descriptors before exec (subprocess, decode workers) then aborts
            # on epoll EBADF (grpc/grpc#43055); this process never forks a gRPC user.
            os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
            try:
                from pymilvus import MilvusClient
            except ImportError as e:
                raise LookalikeError(
                    "the 'milvus' store needs pymilvus and milvus-lite, which are not installed: "
                    "pip install 'lookalike[milvus]'"
                ) from e
            try:
                _CLIENTS[uri] = MilvusClient(uri)
            except Exception as e:  # pymilvus raises its own and gRPC errors
                raise CollectionError(f"{uri}: cannot open the Milvus store ({e})") from e
        return _CLIENTS[uri]


@dataclass
class _Store:
    client: Any
    collection: str
    ids: np.ndarray  # the Milvus primary key of each generation row
    order: np.ndarray  # argsort of ids, to map keys back to rows

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Generation rows of Milvus keys; -1 for keys this generation does not hold."""
        if not len(self.ids):
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(self.ids, keys, sorter=self.order)
        pos = np.minimum(pos, len(self.ids) - 1)
        rows = self.order[pos]
        return np.where(self.ids[rows] == keys, rows, -1)


@register_index
class MilvusIndex(BaseIndex):
    """Milvus (Lite file or server): inserts and deletes in place; HNSW, FLAT, IVF_FLAT, IVF_PQ."""

    name = "milvus"
    file_name = "milvus-ids.npy"
    query_knobs: ClassVar[dict[str, int]] = {"ef": 1, "nprobe": 1}

    def __init__(
        self,
        uri: str = "lookalike-milvus.db",
        collection: str = "lookalike",
        index_type: str = "HNSW",
        M: int = 16,
        ef_construction: int = 200,
        nlist: int = 1024,
        pq_m: int = 0,
        ef: int = 64,
        nprobe: int = 32,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise LookalikeError(
                f"milvus index_type must be one of {INDEX_TYPES}; got {index_type!r}"
            )
        if not re.fullmatch(r"[A-Za-z_][0-9A-Za-z_]{0,254}", str(collection)):
            raise LookalikeError(f"milvus collection name {collection!r}: use letters, digits, _")
        super().__init__(
            {
                "uri": str(uri),
                "collection": collection,
                "index_type": index_type,
                "M": check_int("M", M, 2),
                "ef_construction": check_int("ef_construction", ef_construction, 1),
                "nlist": check_int("nlist", nlist, 1),
                "pq_m": check_int("pq_m", pq_m, 0),  # 0: dim / 4 sub-vectors
            },
            {"ef": ef, "nprobe": nprobe},
        )

    # -- the live, incremental collection -------------------------------------------------
    def continues(self, previous_params: Mapping[str, Any] | None) -> bool:
        """Whether the last generation's store is this one, so that a run can just add to it."""
        return previous_params is not None and dict(previous_params) == self.params

    def update(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]],
        fresh: np.ndarray | None,
        removed: np.ndarray,
    ) -> None:
        """Make the live collection hold exactly `ids` -> `vectors` (rows in that order).

        `fresh`: the ids whose vectors are new or changed (upserted); None rewrites all.
        `removed`: ids to delete. Both are idempotent, so a run killed between the store
        write and the commit is simply repeated by the next run.
        """
        data = as_unit_vectors(vectors)
        ids = np.asarray(ids, np.int64)
        name = self._build_params["collection"]
        client = _client(self._build_params["uri"])
        if fresh is None and client.has_collection(name):
            client.drop_collection(name)
        if not client.has_collection(name):
            self._create(client, name, data.shape[1])
            fresh = ids
        rows = np.flatnonzero(np.isin(ids, fresh))
        self._write(client, name, ids, data, rows, metadata, upsert=True)
        if len(removed):
            client.delete(name, ids=[int(i) for i in removed])
        self._set_store(client, name, ids, data.shape[1])

    # -- the generic contract: a Milvus collection of its own --------------------------------
    def _build(self, data: np.ndarray) -> _Store:
        name = f"{self._build_params['collection']}_{uuid.uuid4().hex[:12]}"
        client = _client(self._build_params["uri"])
        self._create(client, name, data.shape[1])
        ids = np.arange(len(data), dtype=np.int64)
        self._write(client, name, ids, data, ids, None, upsert=False)
        self._build_params["collection"] = name
        return _Store(client, name, ids, ids)

    def _set_store(self, client: Any, name: str, ids: np.ndarray, dim: int) -> None:
        self._native = _Store(client, name, ids, np.argsort(ids, kind="stable"))
        self.dim, self.count = dim, len(ids)

    def _create(self, client: Any, name: str, dim: int) -> None:
        from pymilvus import DataType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
        schema.add_field("head_box", DataType.ARRAY, element_type=DataType.INT32, max_capacity=4)
        schema.add_field("fallback", DataType.BOOL)
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name="vector",
            index_type=self._build_params["index_type"],
            metric_type="IP",  # inner product of unit vectors = cosine similarity
            params=self._native_build_params(dim),
        )
        client.create_collection(
            name, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def _native_build_params(self, dim: int) -> dict[str, int]:
        p = self._build_params
        kind = p["index_type"]
        if kind == "HNSW":
            return {"M": p["M"], "efConstruction": p["ef_construction"]}
        if kind == "IVF_FLAT":
            return {"nlist": p["nlist"]}
        if kind == "IVF_PQ":
            m = p["pq_m"] or max(1, dim // 4)
            if dim % m:
                raise LookalikeError(f"milvus IVF_PQ: pq_m={m} must divide the dimension {dim}")
            return {"nlist": p["nlist"], "m": m, "nbits": 8}
        return {}

    def _write(
        self,
        client: Any,
        name: str,
        ids: np.ndarray,
        data: np.ndarray,
        rows: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None,
        upsert: bool,
    ) -> None:
        step = max(1, INSERT_BYTES // (4 * data.shape[1]))
        send = client.upsert if upsert else client.insert
        for start in range(0, len(rows), step):
            entities = []
            for row in rows[start : start + step]:
                meta = metadata[row] if metadata is not None else {}
                box = meta.get("head_box")
                entities.append(
                    {
                        "id": int(ids[row]),
                        "vector": data[row],
                        "path": str(meta.get("path", ""))[:MAX_PATH],
                        "head_box": [int(v) for v in box] if box else [],
                        "fallback": bool(meta.get("fallback", False)),
                    }
                )
            send(name, entities)

    # -- queries ----------------------------------------------------------------------------
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        store: _Store = self._native
        kind = self._build_params["index_type"]
        params: dict[str, int] = {}
        if kind == "HNSW":
            params = {"ef": max(self._query_params["ef"], k)}  # HNSW needs ef >= k
        elif kind.startswith("IVF"):
            params = {"nprobe": min(self._query_params["nprobe"], self._build_params["nlist"])}
        hits = store.client.search(
            store.collection,
            data=list(queries),
            limit=k,
            anns_field="vector",
            search_params={"metric_type": "IP", "params": params},
            output_fields=[],
        )
        keys = np.full((len(queries), k), -1, np.int64)
        sims = np.full((len(queries), k), -np.inf, np.float32)
        for i, found in enumerate(hits):
            for j, hit in enumerate(found[:k]):
                keys[i, j], sims[i, j] = int(hit["id"]), float(hit["distance"])
        rows = np.where(keys >= 0, store.rows_of(keys), -1)
        # Keys written by a newer run than the generation loaded are not its rows: drop them.
        order = np.argsort(rows < 0, axis=1, kind="stable")
        return np.take_along_axis(rows, order, 1), np.take_along_axis(sims, order, 1)

    # -- persistence: only the keys are local --------------------------------------------------
    def _save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.save(f, np.asarray(self._native.ids, np.int64))

    def _load(self, path: Path, dim: int) -> _Store:
        ids = np.load(path, allow_pickle=False)
        client = _client(self._build_params["uri"])
        name = self._build_params["collection"]
        if not client.has_collection(name):
            raise ValueError(f"the Milvus store {self._build_params['uri']} has no {name!r}")
        # A new process (a query after `index`) finds the collection released: Milvus
        # searches only loaded collections.
        client.load_collection(name)
        return _Store(client, name, ids, np.argsort(ids, kind="stable"))

    def _count(self, native: _Store) -> int:
        return len(native.ids)
