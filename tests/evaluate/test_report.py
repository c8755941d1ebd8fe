"""evaluate/report.py: `lookalike evaluate` as one library call, its table kept beside the
collection (what `lookalike serve` shows)."""

import json

from lookalike.config import preset_names_for_evaluation
from lookalike.evaluate.report import EVALUATION_FILE, evaluate_collection
from lookalike.load.labels import folder_labels
from lookalike.store.collection import Collection
from tests.end_to_end.test_pipeline import folder, index  # noqa: F401 - the folder fixture


def test_the_report_is_kept_beside_the_collection_and_names_every_preset(folder, tmp_path):  # noqa: F811
    index(folder, tmp_path / "coll")
    coll = Collection.open(tmp_path / "coll")
    gen = coll.require_generation()
    paths = [r.path for r in coll.catalog.get_many(gen.ids.tolist()).values()]
    report = evaluate_collection(coll, folder_labels(paths), progress=False)
    assert [s.preset for s in report.scores] == list(preset_names_for_evaluation())
    assert report.held is None and 0.0 <= report.detection_rate <= 1.0
    kept = (coll.path / EVALUATION_FILE).read_text()
    assert kept == report.to_json() + "\n"
    assert [row["preset"] for row in json.loads(kept)["presets"]] == [
        s.preset for s in report.scores
    ]
    # Colours are the labels here: the default preset finds the same colour.
    default = next(s for s in report.scores if s.preset == "default")
    assert default.precision_at_k > 0.9
    assert "| default |" in report.table()
    # Per label: every colour of the folder, in the JSON kept and in the table on request.
    labels = {row["label"] for row in json.loads(kept)["presets"][0]["per_label"]}
    assert labels == {p.split("/")[0] for p in paths}
    assert "default, per label:" in report.table(per_label=True)
    assert "per label" not in report.table()
