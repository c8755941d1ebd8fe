"""v5: a multi-task head trained on the collection's own labels (imports torch).

data      labels -> tasks and class ids; stratified splits (numpy only)
model     the frozen head: base features -> bottleneck embedding -> one classifier per task
trainer   the frozen head's training loop (validation split, early stopping, progress)
network   the finetune mode: an EfficientNet-Lite tuned with cosine task classifiers
augment   augmented views (the frozen mode's cached ones, the finetune mode's strong ones)
head      save / load a trained head (safetensors + head.json) and apply it
pipeline  from a collection to a head, and from a head to a collection's v5 vectors
"""

from lookalike.train.data import Task, encode_targets, stratified_split
from lookalike.train.head import Head, HeadConfig, HeadError, load_head, save_head
from lookalike.train.model import OUTPUTS, MultiTaskHead, Output
from lookalike.train.pipeline import (
    base_extractor,
    can_switch_in_place,
    head_blocks,
    switch_to_head,
    train_head,
)
from lookalike.train.trainer import TrainOptions, TrainResult, fit_head

__all__ = [
    "OUTPUTS",
    "Head",
    "HeadConfig",
    "HeadError",
    "MultiTaskHead",
    "Output",
    "Task",
    "TrainOptions",
    "TrainResult",
    "base_extractor",
    "can_switch_in_place",
    "encode_targets",
    "fit_head",
    "head_blocks",
    "load_head",
    "save_head",
    "stratified_split",
    "switch_to_head",
    "train_head",
]
