"""What a score means: the probability that a result shows the query's character.

A cosine score alone says little (0.26 can be the best an unrelated photo gets, or a
fair match in another preset). `benchmarks/calibrate_scores.py` fits, per preset, an
isotonic map from the score of a result to the share of results with that score that
were the same character, on the labelled dev sets (queries whose character is in the
collection and queries whose character is not), and writes the table
`score_calibration.json` beside this module. A table entry applies only to the preset
settings it was fitted with (`fingerprint`): other settings are reported as uncalibrated.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.config import PipelineConfig

TABLE = Path(__file__).with_name("score_calibration.json")
# A best result below this probability is reported as "no good match".
GOOD_MATCH = 0.5
# At most this many (score, probability) points per preset: enough for a smooth map.
MAX_KNOTS = 40


# Fusion settings added after tables were fitted, at the value every collection had before
# them: left out of the fingerprint there, so those collections keep their table.
ADDED_FUSION_SETTINGS = {"pseudo_lda_starts": 1, "pseudo_lda_axes": 128}


def fingerprint(config: PipelineConfig) -> str:
    """What the scores of a config depend on: blocks, fusion, detection and backbone
    (not the index, which only finds the neighbours)."""
    data = config.to_dict()
    data["fusion"] = {
        k: v
        for k, v in data["fusion"].items()
        if k not in ADDED_FUSION_SETTINGS or v != ADDED_FUSION_SETTINGS[k]
    }
    keep = ("blocks", "fusion", "detector", "detector_options", "fallback", "backbone")
    wanted = {k: data[k] for k in keep} | {"backbone_options": data["backbone_options"]}
    text = json.dumps(wanted, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Calibration:
    preset: str
    fingerprint: str
    scores: tuple[float, ...]  # increasing
    probabilities: tuple[float, ...]  # non-decreasing
    source: str  # the dev sets it was fitted on

    def of_scores(self, scores: Sequence[float] | np.ndarray) -> list[float]:
        """P(same) of each score: one interpolation for a whole answer."""
        return np.interp(scores, self.scores, self.probabilities).tolist()

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "fingerprint": self.fingerprint,
            "scores": list(self.scores),
            "probabilities": list(self.probabilities),
            "source": self.source,
        }


def fit_isotonic(scores: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: the non-decreasing step function of `scores` closest (least
    squares) to `hits` (0/1), as (mean score, value) per step, thinned to MAX_KNOTS."""
    order = np.argsort(scores, kind="stable")
    x, y = np.asarray(scores, float)[order], np.asarray(hits, float)[order]
    sums: list[float] = []  # per block: the sum of y, the sum of x, the count
    xs: list[float] = []
    counts: list[int] = []
    for xi, yi in zip(x, y, strict=True):
        sums.append(yi)
        xs.append(xi)
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            y_sum, x_sum, count = sums.pop(), xs.pop(), counts.pop()
            sums[-1] += y_sum
            xs[-1] += x_sum
            counts[-1] += count
    n = np.array(counts, float)
    knots_x, knots_y = np.array(xs) / n, np.array(sums) / n
    if len(knots_x) > MAX_KNOTS:
        picks = np.unique(np.linspace(0, len(knots_x) - 1, MAX_KNOTS).round().astype(int))
        knots_x, knots_y = knots_x[picks], knots_y[picks]
    return knots_x, knots_y


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Calibration]:
    if not TABLE.is_file():
        return {}
    entries = json.loads(TABLE.read_text())["presets"]
    return {
        e["fingerprint"]: Calibration(
            e["preset"],
            e["fingerprint"],
            tuple(e["scores"]),
            tuple(e["probabilities"]),
            e["source"],
        )
        for e in entries
    }


def calibration_for(config: PipelineConfig) -> Calibration | None:
    """The table entry fitted with exactly these settings, or None (uncalibrated)."""
    return _table().get(fingerprint(config))
