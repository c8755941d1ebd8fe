"""An indexed collection switched to other settings (`index -c C --preset photo`).

What is stored is re-used where it is still right:
  * the same detection (detector, its options, head margin, fallback): the stored head
    boxes hold, so every feature block the collection stores or has cached (by `evaluate`,
    or by an earlier switch) is re-used, and only the missing blocks are computed from the
    images, on the stored boxes; the fusion is fitted again and the index rebuilt;
  * another detection: the head crops change, so every image is detected and embedded
    again by the index run (ids stay); the cached blocks, computed on the old crops, go.

The blocks of the settings switched away from are kept in the cache, so switching back
computes nothing. A collection kept in Milvus is not switched (its store is updated in
place; a new collection is the clean way there).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from lookalike.config import PipelineConfig
from lookalike.embed import Backbone
from lookalike.embed.extractor import FeatureExtractor
from lookalike.errors import IncompatibleCollectionError
from lookalike.fuse.fitting import fit_fused_index
from lookalike.store.blocks import Computed, blocks_for, keep_in_cache
from lookalike.store.codec import bases_of, code_blocks
from lookalike.store.collection import Collection
from lookalike.store.staging import Staging

log = logging.getLogger(__name__)

DETECTION = ("detector", "detector_options", "head_margin", "fallback")
EXTERNAL_STORES = ("milvus",)
NOTHING_COMMITTED = "nothing committed yet"


@dataclass
class SwitchReport:
    old_preset: str
    new_preset: str
    redetect: list[str] = field(default_factory=list)  # the detection settings that changed
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    items: int = 0  # pictures decoded for the computed blocks

    @property
    def why(self) -> str:
        """Why every image is embedded again."""
        if self.redetect == [NOTHING_COMMITTED]:
            return NOTHING_COMMITTED
        return f"{', '.join(self.redetect)} changed"

    def lines(self) -> list[str]:
        head = f"settings switched: preset {self.old_preset} -> {self.new_preset}"
        if self.redetect:
            return [
                f"{head}; {self.why}: new head crops, so every image was detected and "
                "embedded again (ids kept)"
            ]
        return [
            f"{head}; re-used the stored blocks {', '.join(self.reused) or '(none)'}",
            f"  computed from the images: {', '.join(self.computed) or 'nothing'}"
            + (f" ({self.items} images)" if self.computed else ""),
            "  fusion fitted again, index rebuilt",
        ]


def redetect_reasons(coll: Collection, wanted: PipelineConfig) -> list[str]:
    """Why the stored head boxes do not hold for `wanted` (none: they do)."""
    stored = coll.config
    changed = [f for f in DETECTION if getattr(stored, f) != getattr(wanted, f)]
    return changed or ([] if coll.generation() is not None else [NOTHING_COMMITTED])


def check_switchable(coll: Collection, wanted: PipelineConfig) -> None:
    """Refuses a switch from or to an external store (see the module's note)."""
    stored = coll.config
    if {stored.index.backend, wanted.index.backend} & set(EXTERNAL_STORES):
        raise IncompatibleCollectionError(
            f"{coll.path}: keeps its vectors in {stored.index.backend}; index into a new "
            "--collection folder for other settings"
        )


def switch_settings(
    coll: Collection, wanted: PipelineConfig, extractor: FeatureExtractor, progress: bool = True
) -> SwitchReport:
    """Switch `coll` (its writer holds the lock) to `wanted`, which `extractor` computes.

    Same detection: a new generation is committed from the stored, cached and missing
    blocks. Other detection: the manifest's settings change in memory only, and the
    caller's index run embeds every image again and commits them (a run killed before its
    commit leaves the last generation answering queries; the next run starts over).
    """
    check_switchable(coll, wanted)
    stored = coll.config
    report = SwitchReport(stored.preset, wanted.preset, redetect_reasons(coll, wanted))
    gen = coll.generation()
    if report.redetect or gen is None:
        log.warning("%s: %s: every image is detected and embedded again", coll.path, report.why)
        shutil.rmtree(coll.cache_dir, ignore_errors=True)  # blocks of the old head crops
        Staging(coll.staging_dir).clear()  # chunks of the old settings
        _adopt(coll, wanted, extractor)
        return report
    keep_in_cache(coll, gen, FeatureExtractor(stored, backbone=shared_backbone(extractor, stored)))
    computed = Computed()
    blocks = blocks_for(
        coll, gen, wanted.block_keys, extractor, progress=progress, computed=computed
    )
    report.computed, report.items = computed.keys, computed.pictures
    report.reused = [k for k in wanted.block_keys if k not in report.computed]
    coded = code_blocks(blocks, gen.bases(), exact=extractor.trained_keys())
    fuser, fused, index = fit_fused_index(wanted, blocks, bases_of(coded))
    _adopt(coll, wanted, extractor)
    counts = coll.manifest["counts"]
    coll.commit(gen.ids, gen.head_boxes, blocks, fuser, fused, index, counts, coded=coded)
    return report


def _adopt(coll: Collection, wanted: PipelineConfig, extractor: FeatureExtractor) -> None:
    """The manifest names the new settings (written by the next commit)."""
    coll.manifest["config"] = wanted.to_dict()
    coll.manifest.update(extractor.fingerprints())


def shared_backbone(extractor: FeatureExtractor, config: PipelineConfig) -> Backbone | None:
    """The extractor's loaded backbone, where `config` runs the same one (same options)."""
    same = (config.backbone, config.backbone_options) == (
        extractor.config.backbone,
        extractor.config.backbone_options,
    )
    return extractor.loaded_backbone if same else None
