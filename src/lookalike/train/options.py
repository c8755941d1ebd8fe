"""What a training run is asked to do (no torch: the CLI reads the defaults at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

LAYERS = ("last", "all")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainOptions:
    # The network tuned on the labelled images (network.py), whatever backbone the
    # collection was indexed with; Lite2 measured best (docs/v5.md).
    network: str = "efficientnet-lite2"
    epochs: int = 14
    # What trains: "all" (every layer but the stem) or "last" (the last stage and head conv).
    layers: str = "all"
    # The training input side (0: the network's own; Lite2 embeds at 260) and arithmetic
    # ("bf16": bfloat16 autocast, fast on CPUs with AVX-512 BF16 and on GPUs): speed knobs.
    # 14 epochs at 192 px: 0.58x the time of 224 px at the same P@4 on anime-faces-dev
    # (0.941 / 0.931 against 0.939 / 0.933 on two seeds) and at least 0.90 on full pictures
    # (0.905 / 0.902 against 0.932 / 0.907): docs/v5.md, round 7.
    input_size: int = 192
    precision: str = "fp32"
    # Progressive resizing: the first epoch's input side, rising to `input_size` by the last
    # (0: every epoch at `input_size`).
    start_size: int = 0
    # The leading MBConv blocks that stay as ImageNet trained them, beside the stem (with
    # layers="all"): no backward pass through them. Lite2's first 7 (its stages at 1/2 to
    # 1/8 of the input, 2 % of its weights) cost a quarter of a training step.
    frozen_blocks: int = 7
    # One-cycle peak learning rates (the pretrained layers slower) and the warm-up share.
    backbone_lr: float = 3e-4
    classifier_lr: float = 3e-3
    warmup: float = 0.15
    # Pictures per optimiser step (batch-norm statistics stay frozen, so it only sets how
    # many steps an epoch takes). Batches of 8 with 7 frozen blocks: anime-faces-dev 0.956 /
    # 0.943 on two seeds against 0.942 / 0.931 for batches of 32 with none, in 0.83x the CPU
    # seconds (docs/v5.md, round 8).
    batch_size: int = 8
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    # A stratified share held out to report per-epoch accuracy and choose the epoch; a final
    # round then trains on every labelled image for that many epochs (docs/v5.md).
    val_fraction: float = 0.0
    patience: int = 30
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
