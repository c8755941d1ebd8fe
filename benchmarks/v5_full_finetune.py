"""Every layer of EfficientNet-Lite0 fine-tuned on the training half, on the CPU (docs/v5.md).

On an indexed, labelled collection (the default preset): split the labelled images in
halves (stratified, `--seed`, as `evaluate --train-fraction 0.5`), train the whole
backbone but its stem (batch-norm statistics frozen) with a linear classifier on its pooled GeM
features, on the training half's whole images (random 75-100 % crops, mirrored), AdamW
with a one-cycle schedule; then embed all images with the tuned network and measure
precision@4 on the held-out half: the tuned features alone, the classifier's accuracy,
and the tuned features beside the `default` vector (and a label LDA over both).

    .venv/bin/python benchmarks/v5_full_finetune.py COLL --epochs 30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from v5_transductive import default_vectors, label_lda, precision_at_4, projected

from lookalike.embed import create_backbone
from lookalike.embed.base import to_batch
from lookalike.images import load_image
from lookalike.train import stratified_split
from lookalike.vectors import l2_normalize

OUTPUTS = ["gem", "avg_g3_s4", "avg_g3_s5"]


def crop_and_mirror(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    s = rng.uniform(0.75, 1.0)
    cw, ch = int(w * s), int(h * s)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x0, y0, x0 + cw, y0 + ch))
    return ImageOps.mirror(image) if rng.random() < 0.5 else image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--labels", default="folders")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    coll, paths, rows, y, plain, unsup = default_vectors(args.collection, args.labels)
    train_part, test_part = stratified_split(y.tolist(), 0.5, args.seed)
    train, test, y_test = rows[train_part], rows[test_part], y[test_part]
    images = [load_image(coll.root / p).convert("RGB") for p in paths]
    label_of = dict(zip(rows.tolist(), y.tolist(), strict=True))

    backbone = create_backbone("efficientnet-lite0", runtime="torch")
    net = backbone.torch_model()
    net.eval()  # batch-norm statistics stay frozen: 32 images a batch
    for stem in (net._conv_stem, net._bn0):  # the stem stays as ImageNet trained it
        stem.requires_grad_(False)
    tuned_params = [p for p in net.parameters() if p.requires_grad]
    classifier = nn.Linear(1280, int(y.max()) + 1)
    optimiser = torch.optim.AdamW(
        [{"params": tuned_params}, {"params": classifier.parameters()}], weight_decay=1e-2
    )
    steps = args.epochs * -(-len(train) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[3e-4, 3e-3], total_steps=steps, pct_start=0.15
    )
    start = time.perf_counter()
    for epoch in range(args.epochs):
        began, total = time.perf_counter(), 0.0
        order = rng.permutation(train)
        for i in range(0, len(order), 32):
            batch = order[i : i + 32]
            views = [crop_and_mirror(images[j], rng) for j in batch]
            x = torch.from_numpy(to_batch(views, backbone.preprocess)).permute(0, 3, 1, 2)
            target = torch.tensor([label_of[int(j)] for j in batch])
            logits = classifier(backbone.outputs_of(x, ["gem"])["gem"])
            loss = nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch}: loss {total / len(train):.3f}, {time.perf_counter() - began:.0f} s")
    seconds = time.perf_counter() - start

    with torch.no_grad():
        parts: dict[str, list[np.ndarray]] = {o: [] for o in OUTPUTS}
        for i in range(0, len(images), 64):
            x = torch.from_numpy(to_batch(images[i : i + 64], backbone.preprocess))
            out = backbone.outputs_of(x.permute(0, 3, 1, 2), OUTPUTS)
            for name in OUTPUTS:
                parts[name].append(out[name].numpy())
        tuned = {o: np.concatenate(v) for o, v in parts.items()}
        logits = classifier(torch.from_numpy(tuned["gem"])).numpy()
    gem = l2_normalize(tuned["gem"])
    grid = l2_normalize(np.concatenate([l2_normalize(tuned[o]) for o in OUTPUTS], 1))
    lda = label_lda(projected(np.concatenate([plain, grid], 1), 256), train, y[train_part])
    probs = l2_normalize(torch.softmax(torch.from_numpy(logits), 1).numpy())

    def p4(vectors: np.ndarray) -> float:
        return precision_at_4(vectors, test, y_test)

    scores = {
        "classifier accuracy": round(float((logits[test].argmax(1) == y_test).mean()), 3),
        "default": p4(unsup),
        "tuned gem": p4(gem),
        "tuned gem + grids": p4(grid),
        "default + tuned gem": p4(np.concatenate([unsup, gem], 1)),
        "default + tuned gem + label LDA": p4(np.concatenate([unsup, gem, lda], 1)),
        "default + classifier probabilities": p4(np.concatenate([unsup, probs], 1)),
    }
    print(f"seed {args.seed}, {args.epochs} epochs in {seconds:.0f} s: {scores}")


if __name__ == "__main__":
    main()
