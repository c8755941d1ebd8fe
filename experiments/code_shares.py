"""How a collection's blocks are kept, scored: P@4 and feel of `default` over k-means seeds.

Each collection's `default` blocks are computed again from its pictures (the stored head
boxes, nothing detected again; float16, as a collection under 20 pictures stores them),
then fused by `default` as they are after each VARIANT:

- `float16`: as computed;
- `stored`: as the collection stores them (its codes decoded, as `evaluate` reads them);
- `product`: coded as `index` codes a collection of this size (store/codec.py);
- `SHARE[;PART:SHARE...]`: every block coded on SHARE of its components (in proportion
  under 500 pictures, as the product), then the blocks whose key contains PART on theirs;
- `mirrored:KEYS`: the blocks whose key contains any of the comma-separated KEYS ("all":
  every one) replaced by the mean of the picture's and its mirror image's unit rows.

`--variance` first prints, per block, the share of its variance held on 6 % of its
components and on those `index` keeps (`code_share`; in proportion under 500 pictures).

P@4 is leave-one-out among the labelled pictures, exact cosine, the mean over `--seeds`
k-means seeds (the pseudo-label LDA's draw, quality_dense.py); with `--group LABEL ...` it
is also given for the queries of those labels and of the others apart (anime-full-dev:
its four anime characters against the Pokemon and Doraemon). Feel is `evaluate`'s.

    python experiments/code_shares.py --seeds 16 --group ahagon_umiko sakura_nene \\
        suzukaze_aoba yagami_kou --collections full.coll faces.coll \\
        demo/collection:labels.csv:character --variants float16 product "0.06;avg_g3:0.18"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import ImageOps
from quality_dense import LdaVariant

from lookalike.config import PipelineConfig
from lookalike.embed.extractor import FeatureExtractor
from lookalike.evaluate.evaluation import (
    FEEL_BLOCK,
    exact_top_k,
    feel_score,
    labelled_rows,
    preset_like,
)
from lookalike.fuse import fuser as fuser_module
from lookalike.fuse.expansion import expand_collection
from lookalike.fuse.fuser import Fuser
from lookalike.fuse.pseudo_lda import PseudoLabelLDA
from lookalike.load.images import load_image
from lookalike.load.labels import load_labels
from lookalike.store import codec
from lookalike.store.blocks import blocks_for
from lookalike.store.collection import Collection
from lookalike.vectors import l2_normalize

Blocks = dict[str, np.ndarray]


def computed(coll: Collection, config: PipelineConfig, mirrored: bool) -> Blocks:
    """The blocks of every picture of the collection, from its images and stored head boxes
    (of their mirror images with `mirrored`), float16 as stored."""
    gen = coll.require_generation()
    extractor, keys = FeatureExtractor(config), list(config.block_keys)
    records = coll.catalog.get_many(gen.ids.tolist())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    ids = gen.ids.tolist()
    for start in range(0, len(ids), 32):
        views = []
        for row in range(start, min(start + 32, len(ids))):
            image = load_image(coll.root / records[ids[row]].path)
            views.append(extractor.views_from_box(image, gen.head_boxes[row]))
        if mirrored:
            views = [{v: ImageOps.mirror(im) for v, im in view.items()} for view in views]
        for key, array in extractor.compute(views, keys).items():
            parts[key].append(array)
    return {k: np.concatenate(v).astype(np.float16).astype(np.float32) for k, v in parts.items()}


def coded(blocks: Blocks, shares: str) -> Blocks:
    """`blocks` coded as the SHARE[;PART:SHARE...] variant says (see the module)."""
    out = dict(blocks)
    for part in shares.split(";"):
        name, share = part.split(":") if ":" in part else ("", part)
        chosen = {k: v for k, v in blocks.items() if name in k}
        for key, block in chosen.items():
            basis = codec.BlockBasis.fit(block, float(share))
            out[key] = np.asarray(codec.CodedBlock(basis, *basis.encode(block)))
    return out


def scored(
    config: PipelineConfig,
    blocks: Blocks,
    rows: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    feel: np.ndarray,
    seeds: int,
) -> np.ndarray:
    """Per seed: P@4, P@4 of the group's queries and of the others, feel."""
    out = []
    for seed in range(seeds):
        fuser_module.PseudoLabelLDA = LdaVariant().seeded(seed, config)
        try:
            fused = Fuser(config.blocks, config.fusion).fit_transform(blocks)
        finally:
            fuser_module.PseudoLabelLDA = PseudoLabelLDA
        top = exact_top_k(expand_collection(fused, config)[rows].astype(np.float32), 4)
        hits = (y[top] == y[:, None]).mean(axis=1)
        inside = hits[group].mean() if group.any() else np.nan
        outside = hits[~group].mean() if (~group).any() else np.nan
        out.append((hits.mean(), inside, outside, feel_score(feel, top)))
    return np.array(out)


def held_variance(blocks: Blocks) -> dict[str, tuple[float, float]]:
    """Per block, the share of its rows' variance on CODE_FRACTION of its components, and
    on those `index` keeps of it (`code_share`), in proportion under FULL_SHARE_ROWS rows."""
    out = {}
    for key, block in blocks.items():
        centred = (block - block.mean(axis=0)).astype(np.float64)
        variance = np.cumsum(np.linalg.svd(centred, compute_uv=False) ** 2)
        scale = min(1.0, len(block) / codec.FULL_SHARE_ROWS)
        kept = [
            min(max(codec.MIN_CODE_DIMS, round(block.shape[1] * share * scale)), len(variance))
            for share in (codec.CODE_FRACTION, codec.code_share(key))
        ]
        out[key] = (variance[kept[0] - 1] / variance[-1], variance[kept[1] - 1] / variance[-1])
    return out


def variant_blocks(name: str, coll: Collection, config: PipelineConfig, fresh: Blocks) -> Blocks:
    if name == "float16":
        return fresh
    if name == "stored":
        gen = coll.require_generation()
        return {k: np.asarray(gen.block(k), np.float32) for k in config.block_keys}
    if name == "product":
        blocks = dict(fresh)
        codec.code_blocks(blocks, {})  # puts the rows as they decode in `blocks`
        return blocks
    if name.startswith("mirrored:"):
        wanted = name.partition(":")[2].split(",")
        mirror = computed(coll, config, mirrored=True)
        return {
            k: (l2_normalize(fresh[k]) + l2_normalize(mirror[k])) / 2
            if "all" in wanted or any(w in k for w in wanted)
            else fresh[k]
            for k in fresh
        }
    return coded(fresh, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--collections", nargs="+", required=True, help="COLL[:LABELS.csv:TASK] (folders)"
    )
    parser.add_argument("--variants", nargs="+", default=["float16", "product"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--group", nargs="*", default=[], help="labels scored apart")
    parser.add_argument("--variance", action="store_true", help="the variance codes hold")
    args = parser.parse_args()
    print("| collection | variant | P@4 | group / others | feel | P@4 of each seed |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for spec in args.collections:
        path, _, rest = spec.partition(":")
        labels, _, task = rest.partition(":")
        coll = Collection.open(Path(path))
        config = preset_like("default", coll.config)
        paths = [r.path for r in coll.catalog.by_status("ok")]
        given = "folders" if not labels else str(coll.root / labels)
        rows, y = labelled_rows(coll, load_labels(given, paths), task or None)
        y = np.asarray(y)
        group = np.isin(y.astype(str), args.group)
        gen, extractor = coll.require_generation(), FeatureExtractor(config)
        feel = blocks_for(coll, gen, [FEEL_BLOCK], extractor, progress=False)[FEEL_BLOCK]
        fresh = computed(coll, config, mirrored=False)
        if args.variance:
            held = ", ".join(f"{k} {a:.3f} / {b:.3f}" for k, (a, b) in held_variance(fresh).items())
            print(f"{path}: variance held on {codec.CODE_FRACTION:.0%} / as index keeps: {held}")
        for name in args.variants:
            blocks = variant_blocks(name, coll, config, fresh)
            runs = scored(config, blocks, rows, y, group, np.asarray(feel)[rows], args.seeds)
            mean = runs.mean(axis=0)
            each = " ".join(f"{v:.3f}" for v in runs[:, 0])
            print(
                f"| {path} | {name} | {mean[0]:.3f} | {mean[1]:.3f} / {mean[2]:.3f} | "
                f"{mean[3]:.3f} | {each} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
