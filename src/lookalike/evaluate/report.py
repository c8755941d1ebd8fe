"""`lookalike evaluate` as one call: the presets scored on the labels (on a held-out part
when a share of them trains v5), the detection rate over the labelled pictures, and the
table kept beside the collection, where `lookalike serve` shows it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lookalike.config import preset_names_for_evaluation
from lookalike.evaluate.evaluation import (
    HeldOut,
    PresetScore,
    detection_rate,
    evaluate,
    evaluate_held_out,
    markdown_table,
    per_label_tables,
    to_json,
)
from lookalike.fileio import atomic_write_bytes
from lookalike.load.labels import Labels
from lookalike.store.collection import Collection
from lookalike.train.options import TrainOptions

EVALUATION_FILE = "evaluation.json"


@dataclass
class EvaluationReport:
    scores: list[PresetScore]
    detection_rate: float  # over the labelled pictures
    held: HeldOut | None = None  # the split, when a share of the labels trained v5

    def to_json(self) -> str:
        return to_json(self.scores, self.detection_rate)

    def table(self, per_label: bool = False) -> str:
        table = markdown_table(self.scores, self.detection_rate)
        return table + "\n" + per_label_tables(self.scores) if per_label else table


def evaluate_collection(
    coll: Collection,
    labels: Labels,
    presets: Sequence[str] | None = None,
    k: int = 4,
    task: str | None = None,
    train_fraction: float | None = None,
    seed: int = 0,
    options: TrainOptions | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Score `presets` (default: those worth comparing, and v5 when `train_fraction` of the
    labelled pictures trains it, every output of it then) and keep the table in the
    collection's evaluation.json."""
    held = None
    if train_fraction is not None:
        from lookalike.embed.model_files import OUTPUTS

        wanted = list(presets or [*preset_names_for_evaluation(), "v5"])
        held = evaluate_held_out(
            coll,
            labels,
            wanted,
            train_fraction,
            k=k,
            task=task,
            seed=seed,
            options=options,
            outputs=OUTPUTS,
            progress=progress,
        )
        scores = held.scores
    else:
        wanted = list(presets or preset_names_for_evaluation())
        scores = evaluate(coll, labels, wanted, k=k, task=task, progress=progress)
    report = EvaluationReport(scores, detection_rate(coll, labels.column(task)), held)
    atomic_write_bytes(coll.path / EVALUATION_FILE, report.to_json().encode() + b"\n")
    return report
