"""Fit the score calibration table (src/lookalike/search/score_calibration.json) on the dev sets.

For each labelled dev set, indexed with its preset (`default` for the anime sets, `photo`
for the ORL photos), every image queries the collection twice, by its stored vector:
  * "in": among all the other images (its character is in the collection): its top 10
    results, each a hit when it shares the query's label;
  * "out": among the images of the other characters only (its character is not in the
    collection, like a cat photo against anime cards): its top 10, all misses.
So half the queries have no right answer. An isotonic map from score to hit rate is fitted
per preset on every set of that preset, and written with the preset's fingerprint.

The report (benchmarks/calibration.md) gives, per set: the Brier score of the table, and at
the "no good match" threshold (probability 0.5 for the best result) the share of "in"
queries whose best result is kept and is right, and the share of "out" queries warned.
For `default` it also fits on one anime set and scores on the other (does it transfer?).

    python benchmarks/calibrate_scores.py [--work /tmp/lookalike-calibration]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lookalike.config import get_preset
from lookalike.evaluate.evaluation import shared_labels
from lookalike.indexing.indexer import index_folder
from lookalike.load.labels import folder_labels
from lookalike.search.calibration import GOOD_MATCH, TABLE, Calibration, fingerprint, fit_isotonic
from lookalike.store.collection import Collection, Generation

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = [("anime-faces-dev", "default"), ("anime-full-dev", "default"), ("orl-faces-dev", "photo")]
TOP = 10
REPORT = Path(__file__).with_name("calibration.md")
NOTES = """
## Reading it, and when to run it again

- "in: best kept": the share of queries whose character is in the collection that get no
  warning; "in: kept and right": of those, the share whose best result is that character;
  "out: warned": the share of queries whose character is not in the collection that get
  the warning. P@1 is the precision of the best result without any threshold.
- The scores of `default` depend on the collection (its pseudo-label LDA is fitted on it):
  the second table shows how far a map fitted on one anime set holds on the other. The
  `photo` scores of the ORL photos lie close to 1 (query expansion on grey faces), so its
  map is steep, and it is fitted on one small set: read it as a rough guide.
- A table entry holds for the settings it was fitted with (`fingerprint` of the blocks,
  fusion, detection and backbone): other settings show no probability. After a change to
  how vectors are fused or stored, run this script again and commit the table with this
  report. The entries of settings no preset has any more are kept, for the collections
  made with them (the `default` of before format 5, one k-means start per k).
"""


def scored_pairs(coll: Path) -> dict[str, np.ndarray]:
    """Scores and hits of every query's top results, "in" and "out" (see above)."""
    collection = Collection.open(coll)
    gen = collection.require_generation()
    records = collection.catalog.get_many(gen.ids.tolist())
    paths = [records[int(i)].path for i in gen.ids]
    label_of = folder_labels(paths).column()
    y = np.array([label_of[p] for p in paths])
    fused = calibration_space(gen)
    sims = fused @ fused.T
    np.fill_diagonal(sims, -np.inf)
    same = shared_labels(y)
    np.fill_diagonal(same, False)
    top_in = np.argsort(-sims, axis=1)[:, :TOP]
    in_scores = np.take_along_axis(sims, top_in, axis=1)
    in_hits = np.take_along_axis(same, top_in, axis=1)
    others = np.where(same, -np.inf, sims)
    top_out = np.argsort(-others, axis=1)[:, :TOP]
    out_scores = np.take_along_axis(others, top_out, axis=1)
    return {"in": in_scores, "in_hits": in_hits, "out": out_scores}


def calibration_space(gen: Generation) -> np.ndarray:
    """Every item's vector in the space its scores are calibrated in: the fused vector, or,
    for a dense reduction, the wide vector it starts from (`Fuser.wide_transform`, as
    `Searcher.probabilities` scores the results)."""
    fuser = gen.fuser()
    if not fuser.reduces:
        return np.asarray(gen.fused(), dtype=np.float32)
    n = len(gen.ids)
    parts = []
    for start in range(0, n, 1024):
        rows = slice(start, min(n, start + 1024))
        blocks = {b.key: np.asarray(gen.block(b.key)[rows], np.float32) for b in fuser.blocks}
        parts.append(fuser.wide_transform(blocks))
    return np.concatenate(parts)


def pooled(pairs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([np.concatenate([p["in"].ravel(), p["out"].ravel()]) for p in pairs])
    hits = np.concatenate(
        [np.concatenate([p["in_hits"].ravel(), np.zeros(p["out"].size)]) for p in pairs]
    )
    return scores, hits


def report_row(name: str, table: Calibration, pairs: dict[str, np.ndarray]) -> str:
    scores, hits = pooled([pairs])
    probs = np.interp(scores, table.scores, table.probabilities)
    brier = float(np.mean((probs - hits) ** 2))
    best_in = np.interp(pairs["in"][:, 0], table.scores, table.probabilities)
    best_out = np.interp(pairs["out"][:, 0], table.scores, table.probabilities)
    kept = best_in >= GOOD_MATCH
    right = pairs["in_hits"][:, 0]
    kept_right = float(np.mean(right[kept])) if kept.any() else float("nan")
    warned = float(np.mean(best_out < GOOD_MATCH))
    return (
        f"| {name} | {len(pairs['in'])} | {brier:.3f} | {np.mean(right):.3f} | "
        f"{np.mean(kept):.3f} | {kept_right:.3f} | {warned:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-calibration"))
    args = parser.parse_args()
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, preset in SETS:
        coll = args.work / f"{name}-{preset}.coll"
        summary = index_folder(
            DATASETS / name, coll, get_preset(preset), progress=False, processes=True
        )
        print(f"{name}: {summary.total_indexed} indexed ({summary.embedded} embedded now)")
        pairs[name] = scored_pairs(coll)

    tables = []
    for preset in dict.fromkeys(p for _, p in SETS):
        names = [n for n, p in SETS if p == preset]
        x, y = fit_isotonic(*pooled([pairs[n] for n in names]))
        tables.append(
            Calibration(
                preset,
                fingerprint(get_preset(preset)),
                tuple(round(float(v), 5) for v in x),
                tuple(round(float(v), 5) for v in y),
                ", ".join(names),
            )
        )
    # The entries of other settings stay: the collections made with them keep their table.
    fitted = {t.fingerprint for t in tables}
    before = json.loads(TABLE.read_text())["presets"] if TABLE.is_file() else []
    kept = [e for e in before if e["fingerprint"] not in fitted]
    entries = [t.to_json() for t in tables] + kept
    TABLE.write_text(json.dumps({"presets": entries}, indent=1) + "\n")

    header = (
        "| set | queries | Brier | P@1 | in: best kept | in: kept and right | out: warned |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [
        "# Score calibration",
        "",
        f"Written by `python benchmarks/calibrate_scores.py` (table: `{TABLE.name}`).",
        'Per set: every image queries the collection with its character in it ("in") and',
        'without it ("out"); a best result under probability '
        f"{GOOD_MATCH} is reported as no good match.",
        "",
        "## Fitted on every set of the preset",
        "",
        header,
    ]
    by_preset = {t.preset: t for t in tables}
    lines += [report_row(f"{n} ({p})", by_preset[p], pairs[n]) for n, p in SETS]
    lines += ["", "## default: fitted on one anime set, scored on the other", "", header]
    anime = [n for n, p in SETS if p == "default"]
    for fit_on, test_on in (anime, anime[::-1]):
        x, y = fit_isotonic(*pooled([pairs[fit_on]]))
        table = Calibration("default", "", tuple(x), tuple(y), fit_on)
        lines.append(report_row(f"{test_on} (fitted on {fit_on})", table, pairs[test_on]))
    lines += ["", "## The tables (score: probability)", ""]
    for t in tables:
        marks = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        points = ", ".join(f"{s}: {p:.2f}" for s, p in zip(marks, t.of_scores(marks), strict=True))
        lines.append(f"- {t.preset} ({t.source}): {points}")
    REPORT.write_text("\n".join(lines) + "\n" + NOTES)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
