"""`lookalike export`: a collection's items and vectors as files other tools read.

Laid out as clip-retrieval lays out its embeddings, so pandas, DuckDB or another vector
store can take them as they are:

```
OUT/
  img_emb/img_emb_0.npy        the fused vectors (float32, one row per item, L2-normalised:
                               a dot product is the score `query` shows)
  metadata/metadata_0.parquet  one row per item, in the order of the vectors (--format parquet)
  metadata/metadata_0.csv      the same as CSV (--format csv)
  ids.npy                      the item ids, in the same order (--format npy: with the vectors
                               only)
```

A metadata row: id, path (relative to root), root, width, height, bytes, sha256, detector,
faces (JSON: every face found, box and score), n_faces, head box (x0, y0, x1, y1),
fallback, and a column per label task with --labels. pyarrow is needed for parquet only
(`pip install 'lookalike[export]'`); CSV and npy need nothing more.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_save_npy, atomic_write_bytes
from lookalike.load.labels import load_labels
from lookalike.store.collection import Collection

Format = Literal["parquet", "csv", "npy"]
FORMATS: tuple[Format, ...] = ("parquet", "csv", "npy")
VECTORS = Path("img_emb") / "img_emb_0.npy"
IDS = Path("ids.npy")


@dataclass
class ExportSummary:
    out: Path
    items: int
    dims: int
    files: list[Path]

    def lines(self) -> list[str]:
        return [
            f"exported {self.items} items ({self.dims}-d vectors) into {self.out}:",
            *(f"  {p.relative_to(self.out)}" for p in self.files),
        ]


def export_collection(
    collection: Path, out: Path, fmt: Format = "csv", labels: str | None = None
) -> ExportSummary:
    """Write the items of the committed generation of `collection` into `out`."""
    if fmt not in FORMATS:
        raise LookalikeError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        _require_pyarrow()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LookalikeError(f"{out}: not a folder; choose a folder to export into")
    coll = Collection.open(collection)
    gen = coll.require_generation()
    ids = np.asarray(gen.ids, dtype=np.int64)
    vectors = np.asarray(gen.fused(), dtype=np.float32)
    rows = metadata_rows(coll, ids, gen.head_boxes, labels)
    files = [out / VECTORS, out / IDS]
    (out / VECTORS.parent).mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / VECTORS, vectors)
    atomic_save_npy(out / IDS, ids)
    if fmt != "npy":
        target = out / "metadata" / f"metadata_0.{fmt}"
        target.parent.mkdir(parents=True, exist_ok=True)
        (_write_parquet if fmt == "parquet" else _write_csv)(target, rows)
        files.append(target)
    return ExportSummary(out, len(ids), int(vectors.shape[1]), files)


def metadata_rows(
    coll: Collection, ids: np.ndarray, head_boxes: np.ndarray, labels: str | None
) -> list[dict[str, Any]]:
    """One dict per id, in the order of `ids` (the rows of the vectors)."""
    records = coll.catalog.get_many(ids.tolist())
    missing = [int(i) for i in ids if int(i) not in records]
    if missing:
        raise LookalikeError(
            f"{coll.path}: items {missing[:5]} are not in the catalog; run {coll.repair}"
        )
    by_path = load_labels(labels, [r.path for r in records.values()]).by_path if labels else None
    tasks = sorted({t for row in (by_path or {}).values() for t in row})
    rows = []
    for item_id, box in zip(ids.tolist(), head_boxes, strict=True):
        rec = records[item_id]
        x0, y0, x1, y1 = (int(v) for v in box)
        row: dict[str, Any] = {
            "id": item_id,
            "path": rec.path,
            "root": str(coll.root),
            "width": rec.width,
            "height": rec.height,
            "bytes": rec.size,
            "sha256": rec.sha256,
            "detector": rec.detector,
            "n_faces": len(rec.faces),
            "faces": json.dumps(rec.faces),
            "head_x0": x0,
            "head_y0": y0,
            "head_x1": x1,
            "head_y1": y1,
            "fallback": rec.fallback,
        }
        if by_path is not None:
            row.update({f"label_{t}": by_path.get(rec.path, {}).get(t, "") for t in tasks})
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import io

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["id"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode("utf-8", "surrogateescape"))


def _write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows))
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LookalikeError(
            "--format parquet needs pyarrow: pip install 'lookalike[export]' (or use --format "
            "csv, which needs nothing more)"
        ) from None
