"""Every layer of EfficientNet-Lite0 fine-tuned on the training half, on the CPU (docs/v5.md).

On an indexed, labelled collection (the default preset): split the labelled images in
halves (stratified, `--seed`, as `evaluate --train-fraction 0.5`), train the whole
backbone but its stem (batch-norm statistics frozen) with a linear classifier on its pooled GeM
features, on the training half's whole images (random 75-100 % crops, mirrored), AdamW
with a one-cycle schedule; then embed all images with the tuned network and measure
precision@4 on the held-out half: the tuned features alone, the classifier's accuracy,
and the tuned features beside the `default` vector (and a label LDA over both).

    .venv/bin/python experiments/v5_full_finetune.py COLL --epochs 30

Options, all off by default (the command above is the recorded run):

- `--semi-rounds N`: semi-supervised, transductive rounds after the supervised epochs. The
  tuned classifier labels the images outside the training half (its flip-averaged softmax;
  their images, never their labels), keeps the most confident of each predicted class
  (`--semi-keep`, a fraction of the class's expected count, by the training half's class
  shares; `--semi-threshold`, a floor on the confidence), and trains `--semi-epochs` more
  epochs on the labelled plus pseudo-labelled images (FixMatch-like: the pseudo-labelled
  ones seen through a stronger augmentation, `--semi-augment`). Pseudo-label accuracy is
  printed against the held-out labels for the report only.
- `--tta`: the rows again with every vector (and the classifier's probabilities) the mean
  of the image's and its mirror's.
- `--backbone efficientnet-lite1|efficientnet-lite2`.
- `--classifier cosine`: a cosine classifier with an additive margin (CosFace: normalised
  GeM and class weights, scale 16, margin `--margin`) instead of the linear one, so that
  training separates classes by the angle that retrieval compares.
- `--augment strong`: the labelled images through `strong_view` too (not only pseudo-labelled
  ones).
- `--save PATH` / `--load PATH`: write the tuned network and classifier (safetensors) after
  training, or start from a saved one instead of the supervised epochs (the semi rounds,
  if asked, still run).

Every run also prints the rows again after alpha-query expansion on the held-out half
(`+ qe`: each vector averaged with its 3 nearest held-out neighbours, weights cos^3, as the
`photo` preset does on the collection), and a `label LDA (train only)` row whose PCA and LDA
are fitted on the training half's tuned features alone (storable with a head).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file
from torch import nn
from v5_transductive import default_vectors, label_lda, precision_at_4, projected

from lookalike.embed import create_backbone
from lookalike.embed.base import to_batch
from lookalike.fuse.expansion import augment_database
from lookalike.fuse.pseudo_lda import lda_directions
from lookalike.load.images import load_image
from lookalike.train import stratified_split
from lookalike.train.augment import strong_view
from lookalike.vectors import l2_normalize

OUTPUTS = ["gem", "avg_g3_s4", "avg_g3_s5"]
BATCH = 32

Augment = Callable[[Image.Image, np.random.Generator], Image.Image]


class CosineClassifier(nn.Module):
    """CosFace: logits = scale * (cos(feature, class) - margin for the true class)."""

    def __init__(self, dim: int, classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) / dim**0.5)
        self.scale, self.margin = scale, margin
        self.target: torch.Tensor | None = None  # set for a training step only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.weight, dim=1).T
        if self.target is not None:
            cos = cos - self.margin * nn.functional.one_hot(self.target, cos.shape[1])
        return self.scale * cos


def train_only_lda(x: np.ndarray, train: np.ndarray, y_train: np.ndarray, dim: int) -> np.ndarray:
    """Rows projected on LDA directions whose PCA and LDA see the training rows only."""
    mean = x[train].mean(axis=0)
    _, _, vt = np.linalg.svd(x[train] - mean, full_matrices=False)
    z = (x - mean) @ vt[:dim].T
    return l2_normalize(z @ lda_directions(z[train], y_train, 0.3))


def expanded(vectors: np.ndarray) -> np.ndarray:
    return augment_database(l2_normalize(vectors), 3, 3.0)


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
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--semi-rounds", type=int, default=0)
    parser.add_argument("--semi-epochs", type=int, default=8)
    parser.add_argument(
        "--semi-keep",
        type=float,
        nargs="+",
        default=[0.8, 1.0],
        help="per round (the last repeats): the fraction of each class's expected count kept",
    )
    parser.add_argument("--semi-threshold", type=float, default=0.0)
    parser.add_argument("--semi-lr", type=float, default=0.5, help="x the supervised max lr")
    parser.add_argument("--semi-augment", choices=["weak", "strong"], default="strong")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument(
        "--augment",
        choices=["weak", "strong"],
        default="weak",
        help="the labelled images' augmentation: crops and mirroring, or `strong_view`",
    )
    parser.add_argument("--classifier", choices=["linear", "cosine"], default="linear")
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--load", type=Path)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    coll, paths, rows, y, plain, unsup = default_vectors(args.collection, args.labels)
    train_part, test_part = stratified_split(y.tolist(), 0.5, args.seed)
    train, test = rows[train_part], rows[test_part]
    images = [load_image(coll.root / p).convert("RGB") for p in paths]
    # The only labels training ever sees: the training half's. The held-out labels are read
    # after training (scores) and, for the report only, to score the pseudo-labels.
    known = {int(r): int(c) for r, c in zip(train, y[train_part], strict=True)}
    assert set(known).isdisjoint(test.tolist())
    n_classes = int(y[train_part].max()) + 1
    shares = np.bincount(y[train_part], minlength=n_classes) / len(train)
    pool = np.setdiff1d(np.arange(len(images)), train)  # unlabelled: images, no labels

    backbone = create_backbone(args.backbone, runtime="torch")
    net = backbone.torch_model()
    net.eval()  # batch-norm statistics stay frozen: 32 images a batch
    for stem in (net._conv_stem, net._bn0):  # the stem stays as ImageNet trained it
        stem.requires_grad_(False)
    tuned_params = [p for p in net.parameters() if p.requires_grad]
    classifier: nn.Module = nn.Linear(backbone.outputs["gem"], n_classes)
    if args.classifier == "cosine":
        classifier = CosineClassifier(backbone.outputs["gem"], n_classes, 16.0, args.margin)

    def fit(samples: np.ndarray, targets: dict[int, int], epochs: int, lr_scale: float) -> None:
        strong = {j for j in targets if j not in known} if args.semi_augment == "strong" else set()
        if args.augment == "strong":
            strong |= set(known)
        optimiser = torch.optim.AdamW(
            [{"params": tuned_params}, {"params": classifier.parameters()}], weight_decay=1e-2
        )
        steps = epochs * -(-len(samples) // BATCH)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=[3e-4 * lr_scale, 3e-3 * lr_scale], total_steps=steps, pct_start=0.15
        )
        for epoch in range(epochs):
            began, total = time.perf_counter(), 0.0
            order = rng.permutation(samples)
            for i in range(0, len(order), BATCH):
                batch = order[i : i + BATCH]
                views = [
                    (strong_view if int(j) in strong else crop_and_mirror)(images[j], rng)
                    for j in batch
                ]
                x = torch.from_numpy(to_batch(views, backbone.preprocess)).permute(0, 3, 1, 2)
                target = torch.tensor([targets[int(j)] for j in batch])
                if isinstance(classifier, CosineClassifier):
                    classifier.target = target
                logits = classifier(backbone.outputs_of(x, ["gem"])["gem"])
                if isinstance(classifier, CosineClassifier):
                    classifier.target = None
                loss = nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(batch)
            seconds = time.perf_counter() - began
            print(f"epoch {epoch}: loss {total / len(samples):.3f}, {seconds:.0f} s", flush=True)

    def embed(indices: np.ndarray, mirror: bool) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {o: [] for o in OUTPUTS}
        with torch.no_grad():
            for i in range(0, len(indices), 64):
                chunk = [images[j] for j in indices[i : i + 64]]
                if mirror:
                    chunk = [ImageOps.mirror(image) for image in chunk]
                x = torch.from_numpy(to_batch(chunk, backbone.preprocess))
                out = backbone.outputs_of(x.permute(0, 3, 1, 2), OUTPUTS)
                for name in OUTPUTS:
                    parts[name].append(out[name].numpy())
        return {o: np.concatenate(v) for o, v in parts.items()}

    def softmax(gem: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(classifier(torch.from_numpy(gem)), 1).numpy()

    def pseudo_label(keep: float) -> tuple[dict[int, int], dict[int, int]]:
        """(the kept, every) guess for the unlabelled pool from the classifier alone (no label
        is read here): flip-averaged softmax, the most confident `keep` of each class's
        expected count kept."""
        probs = (softmax(embed(pool, False)["gem"]) + softmax(embed(pool, True)["gem"])) / 2
        guess, confidence = probs.argmax(1), probs.max(1)
        chosen: dict[int, int] = {}
        for c in range(n_classes):
            members = np.flatnonzero((guess == c) & (confidence >= args.semi_threshold))
            quota = round(keep * float(shares[c]) * len(pool))
            for k in members[np.argsort(-confidence[members], kind="stable")][:quota]:
                chosen[int(pool[k])] = c
        return chosen, dict(zip(pool.tolist(), guess.tolist(), strict=True))

    start = time.perf_counter()
    if args.load:
        state = load_file(args.load)
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        classifier.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("cls.")})
    else:
        fit(train, known, args.epochs, 1.0)
    truth = dict(zip(rows.tolist(), y.tolist(), strict=True))  # for the report only
    for r in range(args.semi_rounds):
        pseudo, guesses = pseudo_label(args.semi_keep[min(r, len(args.semi_keep) - 1)])
        # No leak: the labels trained on are the training half's and the classifier's guesses.
        assert set(pseudo).isdisjoint(known) and set(pseudo) <= set(pool.tolist())
        targets = {**known, **pseudo}
        right = [pseudo[j] == truth[j] for j in pseudo if j in truth]
        overall = [guesses[j] == truth[j] for j in guesses if j in truth]
        print(
            f"round {r}: {len(pseudo)} of {len(pool)} pseudo-labelled, {np.mean(right):.3f} "
            f"of them right; flip-averaged classifier {np.mean(overall):.3f} right on all "
            "(report only)",
            flush=True,
        )
        fit(np.array(sorted(targets)), targets, args.semi_epochs, args.semi_lr)
    seconds = time.perf_counter() - start
    if args.save:
        state = {f"net.{k}": v for k, v in net.state_dict().items()}
        state |= {f"cls.{k}": v for k, v in classifier.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, args.save)

    everything = np.arange(len(images))
    views = [embed(everything, False)]
    if args.tta:
        views.append(embed(everything, True))
    y_test = y[test_part]

    def p4(vectors: np.ndarray) -> float:
        return precision_at_4(vectors, test, y_test)

    def p4_qe(vectors: np.ndarray) -> float:
        return precision_at_4(expanded(vectors[test]), np.arange(len(test)), y_test)

    scores: dict[str, float] = {}
    for name, tuned, probs in (
        ("", views[0], softmax(views[0]["gem"])),
        (
            " (tta)",
            {o: sum(v[o] for v in views) / len(views) for o in OUTPUTS},
            sum(softmax(v["gem"]) for v in views) / len(views),
        ),
    )[: len(views)]:
        gem = l2_normalize(tuned["gem"])
        grid = l2_normalize(np.concatenate([l2_normalize(tuned[o]) for o in OUTPUTS], 1))
        lda = label_lda(projected(np.concatenate([plain, grid], 1), 256), train, y[train_part])
        own_lda = train_only_lda(np.concatenate([gem, grid], 1), train, y[train_part], 256)
        probs = l2_normalize(probs)
        accuracy = round(float((probs[test].argmax(1) == y_test).mean()), 3)
        scores |= {
            f"classifier accuracy{name}": accuracy,
            "default": p4(unsup),
            f"tuned gem{name}": p4(gem),
            f"tuned gem + grids{name}": p4(grid),
            f"default + tuned gem{name}": p4(np.concatenate([unsup, gem], 1)),
            f"default + tuned gem + label LDA{name}": p4(np.concatenate([unsup, gem, lda], 1)),
            f"default + classifier probabilities{name}": p4(np.concatenate([unsup, probs], 1)),
            f"default + tuned gem + label LDA (train only){name}": p4(
                np.concatenate([unsup, gem, own_lda], 1)
            ),
            f"default + tuned gem + label LDA{name} + qe": p4_qe(
                np.concatenate([unsup, gem, lda], 1)
            ),
            f"default + tuned gem + label LDA (train only){name} + qe": p4_qe(
                np.concatenate([unsup, gem, own_lda], 1)
            ),
            f"default + tuned gem{name} + qe": p4_qe(np.concatenate([unsup, gem], 1)),
            f"tuned gem{name} + qe": p4_qe(gem),
        }
    semi = f" + {args.semi_rounds} x {args.semi_epochs} semi" if args.semi_rounds else ""
    print(f"seed {args.seed}, {args.epochs} epochs{semi} in {seconds:.0f} s: {scores}")


if __name__ == "__main__":
    main()
