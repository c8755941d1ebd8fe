"""Decode, detect and embed as a Ray Data pipeline (optional extra `ray`).

The files to process go in as a dataset of catalog records; `map_batches` runs them through
a pool of `_EmbedWorker` actors, each of which loads the backbone once and then calls the
same two functions as the single-process run (`load_record`, `embed_loaded`). One output
row is one processed batch: its records as JSON and its ids and blocks as an `.npz`
(no pickle). Ray's streaming executor holds back the actors when the driver, which stages
each batch and updates the catalog, falls behind (back-pressure), so memory stays bounded.

Without an address a local Ray starts in this process (localhost only, no dashboard); with
one the run joins that cluster, whose nodes must have lookalike installed and see the image
folder at the same path.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.config import PipelineConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import LookalikeError
from lookalike.indexing.prepare import ProcessedBatch, embed_loaded, load_record
from lookalike.load.images import LoadLimits
from lookalike.store.catalog import FileRecord


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise LookalikeError(
            "--engine ray needs Ray, which is not installed: pip install 'lookalike[ray]'"
        ) from e
    return ray


def encode_batch(done: ProcessedBatch) -> dict[str, np.ndarray]:
    """A processed batch as one Ray row: records as JSON text, arrays as npz bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, ids=done.ids, **{f"block:{k}": v for k, v in done.blocks.items()})
    records = json.dumps([dataclasses.asdict(r) for r in done.records])
    return {
        "records": np.array([records], dtype=object),
        "arrays": np.array([buffer.getvalue()], dtype=object),
    }


def decode_batch(row: dict[str, Any]) -> ProcessedBatch:
    records = []
    for fields in json.loads(row["records"]):
        box = fields["head_box"]
        fields["head_box"] = tuple(box) if box else None
        records.append(FileRecord(**fields))
    data = np.load(io.BytesIO(row["arrays"]), allow_pickle=False)
    blocks = {k[6:]: data[k] for k in data.files if k.startswith("block:")}
    return ProcessedBatch(records, data["ids"], blocks)


class _EmbedWorker:
    """A Ray actor: loads the models once, then processes batch after batch."""

    def __init__(self, config: dict[str, Any], root: str, limits: dict[str, int]) -> None:
        import torch

        # One actor per CPU it was given: more torch threads would only fight each other.
        cpus = _ray().get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
        self.extractor = FeatureExtractor(PipelineConfig.from_dict(config))
        self.root = Path(root)
        self.limits = LoadLimits(**limits)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [
            load_record(
                FileRecord(str(path), int(size), int(mtime), "pending", id=int(item_id)),
                self.root,
                self.limits,
                self.extractor,
            )
            for item_id, path, size, mtime in zip(
                batch["id"], batch["path"], batch["size"], batch["mtime_ns"], strict=True
            )
        ]
        return encode_batch(embed_loaded(self.extractor, loaded))


class RayEngine:
    """`workers` actors of `cpus_per_worker` CPUs each, on a local Ray or a cluster."""

    def __init__(
        self, address: str | None = None, workers: int = 2, cpus_per_worker: float = 1
    ) -> None:
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker

    def _start(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            return
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address:
            ray.init(address=self.address, **quiet)
        else:
            ray.init(
                num_cpus=max(2, int(self.workers * self.cpus_per_worker)),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",  # nothing beyond this machine
                **quiet,
            )
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def process(
        self,
        todo: Sequence[FileRecord],
        root: Path,
        config: PipelineConfig,
        limits: LoadLimits,
        batch_size: int,
    ) -> Iterator[ProcessedBatch]:
        self._start()
        ray = _ray()
        items = [{"id": r.id, "path": r.path, "size": r.size, "mtime_ns": r.mtime_ns} for r in todo]
        n_blocks = max(1, min(len(items) // batch_size, 200))
        dataset = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
            _EmbedWorker,
            fn_constructor_kwargs={
                "config": config.to_dict(),
                "root": str(root),
                "limits": dataclasses.asdict(limits),
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=self.cpus_per_worker,
        )
        for row in dataset.iter_rows():
            yield decode_batch(row)
