"""Spatially pooled EfficientNet-Lite0 features for the quality experiments (issue 3).

For each stage end (s3..s7) and the final 1280-ch head conv, the feature map is pooled
(mean or GeM p=3) on a grid: `g1` global, `g2` 2x2, `g3` 3x3, `b3` three horizontal bands
(top / middle / bottom). Cells come from torch's adaptive pooling (on a 14x14 map a 3x3
grid has cells of 4-5 rows/columns, neighbouring cells share one row/column). The cell
vectors are concatenated cell-major: key `s4_gem_g3` is (N, 9 * 80).

    .venv/bin/python experiments/quality_spatial.py --size 224 --size 320

Writes <cache>/<set>-lite0-spatial<size>.npz; quality_experiments.py --spatial reads them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_experiments import LITE_STAGE_ENDS, hooked_lite, load_dataset

GRIDS = {"g1": (1, 1), "g2": (2, 2), "g3": (3, 3), "b3": (3, 1)}


def spatial_features(
    images: Sequence[Image.Image], size: int, batch: int = 25, flip: bool = False
) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    model, grabbed = hooked_lite("efficientnet-lite0")
    ends = LITE_STAGE_ENDS["efficientnet-lite0"]
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        ims = images[start : start + batch]
        if flip:
            ims = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in ims]
        arrs = [
            np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
            for im in ims
        ]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        x = (x - 0.498) / 0.502
        with torch.no_grad():
            maps = {"final": model.extract_features(x)}
            maps |= {f"s{s}": grabbed[i] for s, i in zip((3, 4, 5, 6, 7), ends, strict=True)}
            for layer, fmap in maps.items():
                for gname, grid in GRIDS.items():
                    if layer == "final" and gname == "g3":
                        continue  # 11520-d, not worth the cache space
                    avg = F.adaptive_avg_pool2d(fmap, grid)
                    gem = F.adaptive_avg_pool2d(fmap.clamp(min=1e-6).pow(3), grid).pow(1 / 3)
                    for pname, val in (("avg", avg), ("gem", gem)):
                        # cell-major: (N, cells, C) flattened
                        v = val.flatten(2).transpose(1, 2).flatten(1)
                        out.setdefault(f"{layer}_{pname}_{gname}", []).append(v.numpy())
        print(f"  {start + len(ims)}/{len(images)}", flush=True)
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anime", type=Path, default=Path("../shared/datasets/anime-faces-dev"))
    ap.add_argument("--orl", type=Path, default=Path("../shared/datasets/orl-faces-dev"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-quality"))
    ap.add_argument("--size", type=int, action="append", help="input size(s), default 224")
    ap.add_argument("--flip", action="store_true", help="also the horizontally flipped images")
    args = ap.parse_args(argv)
    for key, root in (("anime", args.anime), ("orl", args.orl)):
        images, _ = load_dataset(root)
        for size in args.size or [224]:
            for flip in (False, True) if args.flip else (False,):
                path = args.cache / f"{key}-lite0-spatial{size}{'-flip' if flip else ''}.npz"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                feats = spatial_features(images, size, flip=flip)
                feats["seconds"] = np.asarray(time.perf_counter() - t0)
                np.savez(path, **feats)
                print(f"{path}: {float(feats['seconds']):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
