"""The settings an index run is asked for (lookalike.indexing.settings), the animeface
detector's options above all: named ones change, the others stay as the collection has them."""

from __future__ import annotations

import pytest

from lookalike.cli import build_parser
from lookalike.cli.index import _requested
from lookalike.errors import LookalikeError
from lookalike.indexing.settings import Requested, settings_for


def test_detector_options_asked_for_join_the_ones_not_named(tmp_path) -> None:
    config = settings_for(tmp_path / "new", Requested(detector_angles=[45, -45]))
    assert config.detector == "animeface"
    assert config.detector_options["angles"] == [45, -45]
    both = settings_for(
        tmp_path / "new", Requested(detector_sizes=[384], detector_upper=0.6, detector_angles=[])
    )
    assert both.detector_options == {
        **config.detector_options,
        "sizes": [384],
        "upper": 0.6,
        "angles": [],
    }


def test_the_command_line_names_the_same_settings(tmp_path) -> None:
    args = build_parser().parse_args(
        [
            "index",
            str(tmp_path),
            "-c",
            str(tmp_path / "c"),
            "--detector-angles",
            "45,-45",
            "--detector-upper",
            "0.6",
        ]
    )
    requested = _requested(args)
    assert (requested.detector_angles, requested.detector_upper) == ([45, -45], 0.6)
    options = settings_for(tmp_path / "c", requested).detector_options
    assert (options["angles"], options["upper"]) == ([45, -45], 0.6)


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (Requested(detector_upper=0.0), "--detector-upper must be in (0, 1], got 0.0"),
        (Requested(detector="haar", detector_angles=[45]), "--detector-angles: settings of"),
    ],
)
def test_bad_detector_options_are_refused_with_the_flag_named(tmp_path, requested, message):
    with pytest.raises(LookalikeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        settings_for(tmp_path / "new", requested)
