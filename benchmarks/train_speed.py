"""How fast v5 trains, recipe against recipe, in one process (a ratio, not a stopwatch).

On an indexed collection, the views of `--images` labelled pictures (from their stored head
boxes, as `lookalike train` makes them) go through real training epochs of each recipe in
turn, `--repeats` times, alternating, so a busy machine slows every recipe alike. Printed:
seconds per trained image (median over the repeats, the first epoch of each recipe
excluded as a warm-up), the projected training time for `--labelled` pictures at that
recipe's epochs, and its ratio to the first recipe (the baseline). A recipe with progressive
resizing (`start_size`) times one epoch at each of its input sides and projects the sum
over its epochs; the ratio is of CPU seconds (a busy machine stretches wall time).

    python benchmarks/train_speed.py COLL --labels folders
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lookalike.embed.extractor import FeatureExtractor
from lookalike.load.images import load_image
from lookalike.load.labels import load_labels
from lookalike.store.collection import Collection
from lookalike.train import TrainOptions, encode_targets
from lookalike.train.network import TrainingRun, epoch_sizes

# Batches of 32 and every block trained: the recipes until round 8 (docs/v5.md).
ROUND7 = {"batch_size": 32, "frozen_blocks": 0}
# name -> the options that differ from TrainOptions(); the first is the baseline.
RECIPES = {
    "lite2 260px fp32 x20 (until 2026-12-03)": {**ROUND7, "epochs": 20, "input_size": 260},
    "lite2 224px fp32 x14 (2026-12-03)": {**ROUND7, "input_size": 224},
    "lite2 192px fp32 x14 (round 7)": ROUND7,
    "lite2 192px fp32 x14, batches of 8, 7 blocks frozen (the default)": {},
    "lite2 260px bf16 x20": {**ROUND7, "epochs": 20, "input_size": 260, "precision": "bf16"},
    "lite2 224px bf16 x14": {**ROUND7, "input_size": 224, "precision": "bf16"},
    "lite2 224px bf16 x12": {**ROUND7, "epochs": 12, "input_size": 224, "precision": "bf16"},
    "lite2 224px fp32 x12": {**ROUND7, "epochs": 12, "input_size": 224},
    "lite0 224px fp32 x20": {
        **ROUND7,
        "epochs": 20,
        "input_size": 224,
        "network": "efficientnet-lite0",
    },
    "lite2 128px fp32 x14": {**ROUND7, "input_size": 128},
    "lite2 160px fp32 x14": {**ROUND7, "input_size": 160},
    "lite2 192px fp32 x14, first 4 blocks frozen": {**ROUND7, "frozen_blocks": 4},
    "lite2 192px fp32 x14, first 7 blocks frozen": {**ROUND7, "frozen_blocks": 7},
    "lite2 192px fp32 x14, first 11 blocks frozen": {**ROUND7, "frozen_blocks": 11},
    "lite2 224px fp32 x14, first 7 blocks frozen": {
        **ROUND7,
        "frozen_blocks": 7,
        "input_size": 224,
    },
    "lite2 256px fp32 x14, first 7 blocks frozen": {
        **ROUND7,
        "frozen_blocks": 7,
        "input_size": 256,
    },
    "lite2 128->224px fp32 x18": {**ROUND7, "epochs": 18, "start_size": 128, "input_size": 224},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--labels", default="folders")
    parser.add_argument("--images", type=int, default=64, help="pictures per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labelled", type=int, default=300, help="pictures to project to")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()

    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    records = coll.catalog.get_many(gen.ids.tolist())
    paths = [records[int(i)].path for i in gen.ids]
    rows = np.random.default_rng(0).permutation(len(paths))[: args.images]
    labels = load_labels(args.labels, paths)
    tasks, targets = encode_targets(labels, [paths[r] for r in rows])
    ext = FeatureExtractor(coll.config)
    views = [ext.views_from_box(load_image(coll.root / paths[r]), gen.head_boxes[r]) for r in rows]
    runs = {}
    for name in args.recipes:
        options = TrainOptions(**{**RECIPES[name], "progress": False})
        runs[name] = (options, TrainingRun(views, targets, tasks, options))
    sizes = {
        name: epoch_sizes(options.epochs, run.pre.input_size, options.start_size)
        for name, (options, run) in runs.items()
    }
    seconds: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    everything = np.arange(len(rows))
    for repeat in range(args.repeats + 1):
        for name, (_, run) in runs.items():
            final = run.pre
            for size in sorted(set(sizes[name])):
                run.pre = replace(final, input_size=size)
                optimiser = torch.optim.AdamW(run.params, lr=1e-5)
                schedule = torch.optim.lr_scheduler.ConstantLR(optimiser, 1.0)
                start, start_cpu = time.perf_counter(), time.process_time()
                run.epoch(everything, optimiser, schedule, tqdm(disable=True))
                if repeat:  # the first round warms caches and allocators up
                    wall = (time.perf_counter() - start) / len(rows)
                    seconds.setdefault((name, size), []).append(wall)
                    used = (time.process_time() - start_cpu) / len(rows)
                    cpu.setdefault((name, size), []).append(used)
            run.pre = final
    base = None
    print(f"torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(
        f"| recipe | s per image | CPU s per image | {args.labelled} pictures x epochs "
        "| CPU s of those | CPU ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.recipes:
        wall = [statistics.median(seconds[name, size]) for size in sizes[name]]
        used = [statistics.median(cpu[name, size]) for size in sizes[name]]
        total, total_cpu = sum(wall) * args.labelled, sum(used) * args.labelled
        base = base or total_cpu
        print(
            f"| {name} | {statistics.mean(wall):.3f} | {statistics.mean(used):.3f} | "
            f"{total:.0f} s | {total_cpu:.0f} s | {total_cpu / base:.2f} |"
        )


if __name__ == "__main__":
    main()
