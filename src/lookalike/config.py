"""Pipeline configuration and the named presets.

The article's five versions are presets of one pipeline, not five code paths:
a preset names the feature blocks it fuses (a view and a feature), how they
are fused and reduced, and which index serves the queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from lookalike.registry import Registry

VIEWS = ("whole", "head")
FusionMode = Literal["concat", "weighted"]
Fallback = Literal["salient", "top"]


@dataclass(frozen=True)
class Block:
    """One vector of one view: a backbone output (`pooled`, `logits`, ...) or a descriptor."""

    view: str
    feature: str
    weight: float = 1.0
    # Per-block PCA before fusion (the article's v4 used a smaller vector per view).
    reduce_dim: int | None = None

    @property
    def key(self) -> str:
        return f"{self.view}.{self.feature}"


@dataclass(frozen=True)
class FusionConfig:
    # concat: raw vectors side by side (v3/v4). weighted: each block L2-normalised,
    # multiplied by its weight, then concatenated.
    mode: FusionMode = "weighted"
    # PCA on the fused vector, fitted on the collection itself (no labels).
    pca_dim: int | None = None
    whiten: bool = False
    # Query expansion on the collection (alpha-QE): each vector averaged with its
    # `expand_k` nearest neighbours weighted by cos ** `expand_alpha`; 0 turns it off.
    expand_k: int = 0
    expand_alpha: float = 3.0
    # Pseudo-label LDA (pseudo_lda.py): one k-means + LDA per k, fitted on the collection
    # without labels, appended to the fused vector; () turns it off.
    pseudo_lda_ks: tuple[int, ...] = ()
    # k-means starts per k of that LDA, each its own LDA: one start is a draw whose P@4
    # moves by up to 0.2 between seeds (the built-in sample), several average it out (1: as
    # collections made before format 5 were fitted). The dense round's LDA (`out_dim`) starts once.
    pseudo_lda_starts: int = 1
    # The PCA axes of the fused vector that LDA is fitted on (128: as collections made
    # before format 6 were fitted). The dense round's LDA keeps 128 of its 192.
    pseudo_lda_axes: int = 128
    # The dense final vector (fuse.DenseReducer): a PCA of the whole fused vector (after the
    # pseudo-label LDA) to at most this many dims, with a second pseudo-label LDA round on
    # it when `pseudo_lda_ks`; fitted on the collection without labels. None keeps it all.
    out_dim: int | None = None
    # With `out_dim`: this block (the whole picture's colour layout) reduced by PCA to
    # `feel_dim`, weighted `feel_weight`, beside the dense vector (inside `out_dim`).
    feel_block: str | None = None
    feel_dim: int = 64
    feel_weight: float = 0.2


@dataclass(frozen=True)
class IndexConfig:
    # auto: exact search up to 10k items, usearch HNSW above (index/auto.py, benchmarks/README
    # .md "Dense collections"). Annoy (the article's choice) stays selectable: its default
    # search_k loses recall at a few thousand dims, `--search-k 10000` keeps it near exact.
    backend: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    preset: str
    blocks: tuple[Block, ...]
    detector: str = "animeface"
    # Settings of the detector, e.g. {"sizes": [384, 768]} (animeface's cascade of copies).
    detector_options: dict[str, Any] = field(default_factory=dict)
    # The head view when no face is found: "salient", the square around the strongest
    # part of the backbone's last feature map of the whole picture; "top", the top-centre
    # square (measured in benchmarks/quality.md, "fallback").
    fallback: Fallback = "salient"
    backbone: str = "efficientnet-lite0"
    # Settings of the backbone that change its vectors, e.g. {"mid_stage": 5}.
    backbone_options: dict[str, Any] = field(default_factory=dict)
    fusion: FusionConfig = FusionConfig()
    index: IndexConfig = IndexConfig()
    # How far the head box grows beyond the detected face (fraction of the face size).
    head_margin: float = 0.6
    # The trained model (`lookalike train`) that computes the "v5" feature; None for the
    # presets that need none (manifests written before it existed have no such key).
    model_dir: str | None = None

    @property
    def block_keys(self) -> list[str]:
        return [b.key for b in self.blocks]

    @property
    def views(self) -> list[str]:
        return [v for v in VIEWS if any(b.view == v for b in self.blocks)]

    def with_options(self, **changes: Any) -> PipelineConfig:
        """A copy with the given top-level fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        data = dict(data)
        data["blocks"] = tuple(Block(**b) for b in data["blocks"])
        fusion = dict(data["fusion"])
        fusion["pseudo_lda_ks"] = tuple(fusion.get("pseudo_lda_ks", ()))  # JSON gives a list
        data["fusion"] = FusionConfig(**fusion)
        data["index"] = IndexConfig(**data["index"])
        if "head_dir" in data:  # the name before "head" came to mean the crop only
            data["model_dir"] = data.pop("head_dir")
        # Manifests from before the detector cascade and the salient fallback keep what
        # they were built with, so new files are treated like the indexed ones.
        if "fallback" not in data:
            data["fallback"] = "top"
            if data.get("detector") == "animeface":
                data.setdefault("detector_options", {"sizes": [384]})
        return cls(**data)


def split_key(key: str) -> tuple[str, str]:
    view, _, feature = key.partition(".")
    if view not in VIEWS or not feature:
        raise ValueError(f"bad feature block {key!r}: expected '<view>.<feature>', view in {VIEWS}")
    return view, feature


PRESETS: Registry[PipelineConfig] = Registry("preset")


@PRESETS.register("v1", "whole image only: the 1000 ImageNet logits (the article's v1)")
def _v1() -> PipelineConfig:
    return PipelineConfig("v1", (Block("whole", "logits"),), fusion=FusionConfig("concat"))


@PRESETS.register("v2", "head crop only: the 1000 ImageNet logits (the article's v2)")
def _v2() -> PipelineConfig:
    return PipelineConfig("v2", (Block("head", "logits"),), fusion=FusionConfig("concat"))


@PRESETS.register("v3", "head + whole, raw concatenation of the pooled features (2 x 1280)")
def _v3() -> PipelineConfig:
    blocks = (Block("head", "pooled"), Block("whole", "pooled"))
    return PipelineConfig("v3", blocks, fusion=FusionConfig("concat"))


@PRESETS.register("v4", "head + whole, pooled features reduced by PCA to 512 each (2 x 512)")
def _v4() -> PipelineConfig:
    blocks = (Block("head", "pooled", reduce_dim=512), Block("whole", "pooled", reduce_dim=512))
    return PipelineConfig("v4", blocks, fusion=FusionConfig("concat"))


@PRESETS.register("default", "head: CNN features on a grid + soft colour layout, pseudo-label LDA")
def _default() -> PipelineConfig:
    # Measured without labels (experiments/quality_dense.py, README): 256 dims hold or beat
    # the 8337-dim vector before it on every dev set (anime faces 0.910 against 0.907
    # precision@4, the article's v1 0.443; anime-full-dev 0.745; the built-in sample 0.841).
    blocks = (
        Block("head", "gem"),
        Block("head", "avg_g3_s4"),
        Block("head", "avg_g3_s5"),
        Block("head", "soft_grid3"),
        # The whole image's colour layout, lightly: it keeps the feel and gives the web
        # slider a whole view, at no cost to identity (anime 0.906, built-in sample 0.832).
        Block("whole", "soft_grid3", 0.2),
    )
    return PipelineConfig(
        "default",
        blocks,
        fusion=FusionConfig(
            pseudo_lda_ks=(10, 20, 30, 40, 50),
            pseudo_lda_starts=3,
            # Fewer axes separate the pseudo-classes better, and the colour tail at 0.3 keeps
            # the feel they cost the sample (mean over 8 seeds, 128 axes at 0.2 -> 48 at 0.3:
            # P@4 anime-full-dev 0.735 -> 0.762, the sample 0.857 -> 0.915, anime-faces-dev
            # 0.909 -> 0.916, orl-faces-dev 0.999 -> 1.000, feel up on each; quality.md).
            pseudo_lda_axes=48,
            out_dim=256,
            feel_block="whole.soft_grid3",
            feel_weight=0.3,
        ),
    )


@PRESETS.register("v5", "head + whole through a model trained on your labels (needs --model)")
def _v5() -> PipelineConfig:
    # Each view's task outputs (or embedding), L2-normalised, side by side (2 x 26 = 52 in
    # the article), fused with appearance blocks of both views: class evidence plus look.
    # Measured on anime-faces-dev (held-out half, docs/v5.md): the tuned network 0.957
    # fused, 0.951 its embedding alone (the fusion keeps the feel). The fused vector is
    # then reduced by PCA to 256 dims, fitted on the collection without labels
    # (experiments/v5_dims.py: 0.956 against 0.955 for the 7924 dims, the same head).
    blocks = (
        Block("head", "v5", 1.0),
        Block("whole", "v5", 1.0),
        Block("head", "gem", 0.75),
        Block("head", "gem_mid", 0.75),
        Block("head", "hsv_grid3", 0.75),
        Block("whole", "gem", 0.375),
        Block("whole", "gem_mid", 0.375),
        Block("whole", "hsv_grid3", 0.375),
    )
    return PipelineConfig("v5", blocks, fusion=FusionConfig(out_dim=256))


@PRESETS.register("photo", "photos of people: human face detector, stage-5 GeM features, QE")
def _photo() -> PipelineConfig:
    # Measured on ORL faces (benchmarks/quality.md): stage-5 GeM alone 0.970, with
    # query expansion 0.991; colour adds nothing on grey photos.
    return PipelineConfig(
        "photo",
        (Block("head", "gem_mid"),),
        detector="haar",
        backbone_options={"mid_stage": 5},
        fusion=FusionConfig(expand_k=3),
    )


def get_preset(name: str) -> PipelineConfig:
    return PRESETS.create(name)


def list_presets() -> list[str]:
    return PRESETS.names()


def preset_names_for_evaluation() -> list[str]:
    """The presets `evaluate` compares by default, in the article's order."""
    return ["v1", "v2", "v3", "v4", "default"]


__all__ = [
    "Block",
    "FusionConfig",
    "IndexConfig",
    "PipelineConfig",
    "get_preset",
    "list_presets",
]


# Feel: colour histograms of the whole images, compared by cosine similarity.
FEEL_BLOCK = "whole.hsv"


def preset_like(name: str, base: PipelineConfig) -> PipelineConfig:
    """Preset `name` on the collection's own detections, backbone and trained model (v5 of
    a collection switched to a model scores that model): evaluated presets differ only in what
    they fuse, so the stored boxes and vectors can be reused."""
    return get_preset(name).with_options(
        backbone=base.backbone,
        backbone_options=base.backbone_options,
        detector=base.detector,
        model_dir=base.model_dir,
    )


def blocks_to_compare(base: PipelineConfig, presets: Sequence[str]) -> list[str]:
    """Every block the `presets` need on the collection's settings `base`, and the feel's:
    one pass over the images gives them all (one forward pass gives every output of a
    view)."""
    configs = [preset_like(name, base) for name in presets]
    return list(dict.fromkeys([*(k for c in configs for k in c.block_keys), FEEL_BLOCK]))
