"""`lookalike demo`: the whole job on the built-in, procedurally drawn sample."""

from __future__ import annotations

import csv
import shlex
import sys
from pathlib import Path

from lookalike.config import get_preset, preset_names_for_evaluation
from lookalike.demo.sample import generate_sample
from lookalike.evaluate.evaluation import detection_rate, evaluate, markdown_table, to_json
from lookalike.indexing.indexer import Indexer
from lookalike.invocation import activate_hint, lookalike_command
from lookalike.load.labels import load_labels
from lookalike.render.sheets import SheetItem, grid_sheet
from lookalike.search.searcher import Searcher
from lookalike.store.collection import Collection


# Longer than 60 lines on purpose: the demo's steps in the order it prints them (draw,
# index, query, sheets, evaluate), each a call or two, read best as one script.
def run_demo(
    out: Path,
    characters: int = 12,
    per_character: int = 20,
    seed: int = 0,
    backbone: str | None = None,
    progress: bool = True,
    queries: int = 6,
) -> int:
    out = Path(out)
    sample = out / "sample"
    if not (sample / "labels.csv").exists():
        if progress:
            print(
                f"drawing the sample: {characters} characters x {per_character} images ...",
                file=sys.stderr,
            )
        generate_sample(
            sample, n_characters=characters, images_per_character=per_character, seed=seed
        )
    config = get_preset("default").with_options(backbone=backbone)
    coll_path = out / "collection"
    summary = Indexer(sample, coll_path, config, progress=progress, processes=True).run()
    print("\n".join(summary.lines()))

    coll = Collection.open(coll_path)
    searcher = Searcher(coll)
    with open(sample / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # One query per character, the first few characters.
    firsts: dict[str, str] = {}
    for row in rows:
        firsts.setdefault(row["character"], row["file"])
    strips = []
    for file in list(firsts.values())[:queries]:
        result = searcher.query(file, k=4)
        head = SheetItem(sample / file, file, None, result.query_head_box, result.query_fallback)
        tiles = [
            SheetItem(sample / m.path, m.path, m.score, m.head_box, m.fallback)
            for m in result.matches
        ]
        strips.append((head, tiles))
    sheet = grid_sheet(strips, out / "lookalikes.png").path

    paths = [r.path for r in coll.catalog.by_status("ok")]
    labels = load_labels(str(sample / "labels.csv"), paths)
    scores = evaluate(
        coll,
        labels,
        [*preset_names_for_evaluation()],
        k=4,
        task="character",
        backbone=searcher.extractor.loaded_backbone,
        progress=progress,
    )
    rate = detection_rate(coll)
    table = markdown_table(scores, rate)
    (out / "evaluation.md").write_text(table + "\n")
    (out / "evaluation.json").write_text(to_json(scores, rate) + "\n")
    print()
    print(table)
    print()
    print(f"sample images:   {sample}")
    print(f"collection:      {coll_path}")
    print(f"contact sheets:  {sheet}")
    print(f"evaluation:      {out / 'evaluation.md'}")
    # The command as this shell can run it: `make demo` does not activate .venv.
    query = shlex.join([str(coll_path), next(iter(firsts.values())), "--sheet", "q.png"])
    print(f"try:             {lookalike_command()} query {query}")
    hint = activate_hint()
    if hint:
        print(f"                 (or run `{hint}` first, then type lookalike alone)")
    return 0
