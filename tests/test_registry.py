"""The name -> factory registry (lookalike.registry) that backbones, detectors, index
backends and presets are looked up in."""

from __future__ import annotations

import pytest

from lookalike.config import PRESETS, get_preset
from lookalike.errors import LookalikeError, UnknownNameError
from lookalike.registry import Registry


def shapes() -> Registry[dict]:
    """A registry of three factories, registered out of alphabetical order."""
    reg: Registry[dict] = Registry("shape")

    @reg.register("square", "four equal sides")
    def square(side: int = 1) -> dict:
        return {"kind": "square", "side": side}

    @reg.register("circle")
    def circle(radius: int = 1) -> dict:
        """A round one.

        Only the first line of the docstring describes it.
        """
        return {"kind": "circle", "radius": radius}

    @reg.register("cube")
    def cube() -> dict:
        return {"kind": "cube"}

    return reg


def test_create_calls_the_factory_registered_under_the_name_with_the_keywords() -> None:
    reg = shapes()
    assert reg.create("square", side=3) == {"kind": "square", "side": 3}
    assert reg.create("circle") == {"kind": "circle", "radius": 1}


def test_register_hands_the_factory_back_unchanged() -> None:
    reg: Registry[int] = Registry("number")

    def one() -> int:
        return 1

    assert reg.register("one")(one) is one
    assert reg.create("one") == 1


def test_names_are_sorted_whatever_the_registration_order_and_filter_by_pattern() -> None:
    reg = shapes()
    assert reg.names() == ["circle", "cube", "square"]
    assert reg.names("c*") == ["circle", "cube"]
    assert reg.names("?quare") == ["square"]
    assert reg.names("triangle*") == []


def test_describe_gives_the_description_or_the_docstrings_first_line_in_name_order() -> None:
    described = shapes().describe()
    assert list(described) == ["circle", "cube", "square"]
    assert described == {"circle": "A round one.", "cube": "", "square": "four equal sides"}


def test_a_name_registered_twice_is_refused_and_the_first_factory_kept() -> None:
    reg = shapes()
    with pytest.raises(ValueError, match="shape 'square' is registered twice"):
        reg.register("square")(lambda: {"kind": "impostor"})
    assert reg.create("square") == {"kind": "square", "side": 1}
    assert reg.names() == ["circle", "cube", "square"]


def test_an_unknown_name_suggests_the_close_ones_and_lists_every_known_name() -> None:
    reg = shapes()
    with pytest.raises(UnknownNameError) as raised:
        reg.create("sqare")
    message = str(raised.value)
    assert message.startswith("unknown shape 'sqare'. Did you mean 'square'?")
    assert message.endswith("Known: circle, cube, square.")
    # A user's mistake: the CLI prints it without a traceback and exits 2.
    assert isinstance(raised.value, LookalikeError) and raised.value.exit_code == 2


def test_an_unknown_name_with_nothing_close_only_lists_the_known_names() -> None:
    with pytest.raises(UnknownNameError) as raised:
        shapes().check("zzzzzz")
    assert str(raised.value) == "unknown shape 'zzzzzz'. Known: circle, cube, square."


def test_check_hands_a_known_name_back_and_an_empty_registry_knows_nothing() -> None:
    assert shapes().check("cube") == "cube"
    with pytest.raises(UnknownNameError, match="unknown shape 'cube'"):
        Registry("shape").check("cube")


def test_the_preset_registry_suggests_the_preset_meant() -> None:
    assert get_preset("v1").preset == "v1"
    assert {"default", "v1", "v2", "v3", "v4", "v5", "photo"} <= set(PRESETS.names())
    with pytest.raises(UnknownNameError, match="Did you mean 'default'"):
        get_preset("defualt")
