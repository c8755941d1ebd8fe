"""v5's network: an EfficientNet-Lite tuned end to end on the collection's labels.

This is the article's v5 network made reproducible on a CPU (docs/v5.md): every layer but
the stem and the first `frozen_blocks` blocks trains (`layers="all"`, or only the last stage
with `"last"`), with one cosine classifier per task on the network's GeM features. The
classifiers compare the L2-normalised GeM with normalised class weights and train with an
additive margin (CosFace, Wang et al. 2018), so training separates the classes by the very
angle that retrieval compares. Batch-norm statistics stay as ImageNet set them (batches of
8 are far too small to re-estimate them), so the batch size only sets the number of steps.

Each epoch sees every training image once, through its head crop or its whole image at
random, through a strong random view (`augment.strong_view`). AdamW with a one-cycle
schedule over a fixed number of epochs. With a validation split, per-task accuracy is
printed each epoch, the best epoch is found (early stopping after `patience` epochs without
progress), and a final round trains on every labelled image for that many epochs: the split
chooses the length without costing the images it held out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from lookalike.config import VIEWS
from lookalike.embed import create_backbone
from lookalike.embed.base import Preprocess, to_batch
from lookalike.embed.efficientnet_lite import EfficientNetLite
from lookalike.embed.trained_model import EMBEDDING, TaskClassifiers
from lookalike.errors import LookalikeError
from lookalike.load.labels import Task
from lookalike.train.augment import strong_view
from lookalike.train.data import Targets, stratified_split
from lookalike.train.options import LAYERS, PRECISIONS, TrainOptions
from lookalike.train.trainer import loss_of, task_accuracy


@dataclass
class NetworkResult:
    classifiers: TaskClassifiers
    backbone_state: dict[str, torch.Tensor]
    epochs: int  # the epochs the returned network trained (the chosen ones, with a split)
    val_accuracy: dict[str, float]  # per task at the chosen epoch (empty: no split)
    seconds: float
    cpu_seconds: float = 0.0  # of the process, every thread: a load-independent figure


def check_trainable(options: TrainOptions) -> None:
    """Fail early (before any image is read) for options this training cannot follow."""
    if not options.network.startswith("efficientnet-lite"):
        raise LookalikeError(
            f"training needs an EfficientNet-Lite network, not {options.network!r}"
        )
    if options.layers not in LAYERS:
        raise LookalikeError(f"unknown layers {options.layers!r}: use one of {LAYERS}")
    if options.precision not in PRECISIONS:
        raise LookalikeError(f"unknown precision {options.precision!r}: use one of {PRECISIONS}")
    if options.epochs < 1:
        raise LookalikeError(f"epochs must be at least 1, got {options.epochs}")
    if options.start_size < 0 or options.frozen_blocks < 0:
        raise LookalikeError("start_size and frozen_blocks must not be negative")
    if options.batch_size < 1:
        raise LookalikeError(f"batch_size must be at least 1, got {options.batch_size}")
    check_device(options.device)


def check_device(name: str) -> None:
    """Fail early for a device torch cannot name or this machine does not have."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LookalikeError(f"unknown device {name!r} ({exc}): use cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LookalikeError(
            f"device {name!r}: torch sees no CUDA GPU on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu"
        )


def epoch_sizes(epochs: int, final: int, start: int = 0) -> list[int]:
    """The input side of each epoch: progressive resizing from `start` up to `final`.

    The sides `start`, `start` + 32, ... up to `final` each train an equal share of the
    epochs, in that order; the last epoch is always at `final`. `start` 0 (or not below
    `final`): every epoch at `final`. The early, small epochs cost a fraction of the late ones.
    """
    if not start or start >= final:
        return [final] * epochs
    levels = [*range(start, final, 32), final]
    sizes = [levels[e * len(levels) // epochs] for e in range(epochs)]
    return [*sizes[:-1], final]


def trainable_parameters(
    net: nn.Module, layers: str = "all", frozen_blocks: int = 0
) -> list[nn.Parameter]:
    """Freeze the EfficientNet `net` but the layers to train; those parameters.

    "all": every layer but the stem and the first `frozen_blocks` blocks, which stay as
    ImageNet trained them; "last": the last stage and head conv only (with their batch-norm
    affine parameters).
    """
    if layers not in LAYERS:
        raise LookalikeError(f"unknown layers {layers!r}: use one of {LAYERS}")
    blocks = list(net._blocks)
    last = blocks[-1]._block_args
    if layers == "all":
        start = min(frozen_blocks, len(blocks) - 1)
    else:  # the last stage: the trailing blocks that share the last block's output width
        start = len(blocks) - 1
        while start > 0 and blocks[start - 1]._block_args.output_filters == last.output_filters:
            start -= 1
    trained = [*blocks[start:], net._conv_head, net._bn1]
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for module in trained for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def embed(
    backbone: EfficientNetLite,
    images: Sequence[Image.Image],
    device: torch.device,
    preprocess: Preprocess | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """Unit-length GeM of each image, with autograd (the training-time forward pass)."""
    batch = to_batch(images, preprocess or backbone.preprocess)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        gem = backbone.outputs_of(x, [EMBEDDING])[EMBEDDING]
    return nn.functional.normalize(gem.float(), dim=1)


def shrunk(image: Image.Image, size: int) -> Image.Image:
    """`image` with its long side at most twice the input `size`: a random view keeps at
    least half of each side, so it never needs more pixels, and every epoch's crops, turns
    and colour changes then work on a small picture instead of a full illustration."""
    small = image if image.mode == "RGB" else image.convert("RGB")
    if max(small.size) > 2 * size:
        small = small.copy() if small is image else small  # thumbnail works in place
        small.thumbnail((2 * size, 2 * size), Image.BICUBIC, reducing_gap=3.0)
    return small


class TrainingRun:
    """One training run: a fresh ImageNet network and its classifiers, tuned on `rows`."""

    def __init__(
        self,
        views: Sequence[dict[str, Image.Image]],
        targets: Targets,
        tasks: Sequence[Task],
        options: TrainOptions,
    ) -> None:
        torch.manual_seed(options.seed)
        self.rng = np.random.default_rng(options.seed)
        self.options, self.tasks = options, tasks
        self.device = torch.device(options.device)
        self.backbone = cast(EfficientNetLite, create_backbone(options.network, runtime="torch"))
        self.net = self.backbone.torch_model().to(self.device)
        self.params = trainable_parameters(self.net, options.layers, options.frozen_blocks)
        self.net.eval()  # batch-norm statistics stay as trained on ImageNet
        # Training may see smaller inputs than the network embeds with (a speed knob).
        own = self.backbone.preprocess
        self.pre = replace(own, input_size=options.input_size or own.input_size)
        self.bf16 = options.precision == "bf16"
        self.views = [{v: shrunk(view[v], self.pre.input_size) for v in VIEWS} for view in views]
        self.final_size = self.pre.input_size
        dim = self.backbone.outputs[EMBEDDING]
        self.classifiers = TaskClassifiers(dim, [len(t.classes) for t in tasks]).to(self.device)
        self.hot = [torch.from_numpy(h).to(self.device) for h in targets.hot]

    def _targets(self, rows: np.ndarray) -> list[torch.Tensor]:
        index = torch.from_numpy(rows).to(self.device)
        return [h[index] for h in self.hot]

    def train(
        self, rows: np.ndarray, epochs: int, bar: tqdm, val_rows: np.ndarray | None = None
    ) -> tuple[int, dict[str, float]]:
        """Tune on `rows` over a one-cycle schedule of `epochs`; with `val_rows`, stop early
        and return the best epoch and its accuracy (else the last epoch, no accuracy)."""
        optimiser = torch.optim.AdamW(
            [{"params": self.params}, {"params": self.classifiers.parameters()}],
            weight_decay=self.options.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser,
            max_lr=[self.options.backbone_lr, self.options.classifier_lr],
            # At least one warm-up step: below 7 steps the schedule would start at its end.
            total_steps=max(epochs * -(-len(rows) // self.options.batch_size), 7),
            pct_start=self.options.warmup,
        )
        sizes = epoch_sizes(epochs, self.final_size, self.options.start_size)
        best: tuple[float, float] = (-1.0, -np.inf)
        best_epoch, best_acc = epochs, {}
        for epoch in range(1, epochs + 1):
            self.pre = replace(self.pre, input_size=sizes[epoch - 1])
            loss = self.epoch(rows, optimiser, schedule, bar)
            line = f"epoch {epoch}/{epochs}  loss {loss:.3f}"
            if val_rows is None or not len(val_rows):
                if self.options.progress:
                    bar.write(line, file=sys.stderr)
                continue
            acc, val_loss = self.validate(val_rows)
            if self.options.progress:
                shown = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
                bar.write(f"{line}  val acc: {shown}", file=sys.stderr)
            score = (float(np.mean(list(acc.values()))), -val_loss)
            if score >= best:  # ties: the later epoch, further down the one-cycle schedule
                best, best_epoch, best_acc = score, epoch, acc
            if epoch - best_epoch >= self.options.patience:
                bar.total -= (epochs - epoch) * len(rows)  # the ETA drops what is skipped
                break
        return best_epoch, best_acc

    def epoch(
        self,
        rows: np.ndarray,
        optimiser: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        bar: tqdm,
    ) -> float:
        order = self.rng.permutation(rows)
        total = 0.0
        step = self.options.batch_size
        for i in range(0, len(order), step):
            batch = order[i : i + step]
            images = [
                strong_view(self.views[r][VIEWS[self.rng.integers(len(VIEWS))]], self.rng)
                for r in batch
            ]
            hot = self._targets(batch)
            z = embed(self.backbone, images, self.device, self.pre, self.bf16)
            loss = loss_of(self.classifiers(z, hot), hot, self.options.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            bar.update(len(batch))
        return total / len(order)

    def validate(self, rows: np.ndarray) -> tuple[dict[str, float], float]:
        with torch.no_grad():  # in chunks: a large validation split must not fill the memory
            z = torch.cat(
                [
                    embed(
                        self.backbone,
                        [self.views[r][v] for r in rows[i : i + 64]],
                        self.device,
                        self.pre,
                        self.bf16,
                    )
                    for v in VIEWS
                    for i in range(0, len(rows), 64)
                ]
            )
            logits = self.classifiers(z)
        hot = [torch.cat([h] * len(VIEWS)) for h in self._targets(rows)]
        return task_accuracy(logits, hot, self.tasks), float(loss_of(logits, hot, 0.0))


def train_network(
    views: Sequence[dict[str, Image.Image]],
    targets: Targets,
    tasks: Sequence[Task],
    options: TrainOptions,
) -> NetworkResult:
    """Tune a fresh ImageNet network and its task classifiers on the labelled images.

    `views`: the views of each training image; `targets`: what each should be classified as.
    """
    check_trainable(options)
    start, cpu = time.perf_counter(), time.process_time()
    rows = np.arange(len(targets))
    val_rows = np.zeros(0, dtype=np.int64)
    if len(targets) >= 4 and options.val_fraction > 0:
        strata = [str(v) for v in targets.primary[:, 0]]
        val_rows, rows = stratified_split(strata, options.val_fraction, options.seed)
    final = len(targets) * options.epochs if len(val_rows) else 0
    bar = tqdm(
        total=len(rows) * options.epochs + final,
        desc=f"training {options.network}",
        unit="image",
        disable=not options.progress,
        file=sys.stderr,
    )
    run = TrainingRun(views, targets, tasks, options)
    epochs, accuracy = run.train(rows, options.epochs, bar, val_rows)
    if len(val_rows):
        # The final round: every labelled image, for the epochs the split chose.
        bar.total -= len(targets) * (options.epochs - epochs)
        run = TrainingRun(run.views, targets, tasks, options)  # shrunk already: kept as is
        run.train(np.arange(len(targets)), epochs, bar)
    bar.close()
    state = {k: v.detach().cpu().contiguous() for k, v in run.net.state_dict().items()}
    classifiers = run.classifiers.cpu().eval()
    return NetworkResult(
        classifiers,
        state,
        epochs,
        accuracy,
        time.perf_counter() - start,
        time.process_time() - cpu,
    )
