"""Contact sheets: layout, head boxes, unreadable files, grids, atomic writes."""

import pytest
from PIL import Image, ImageFont

from lookalike.render.sheets import (
    DETECTED_BOX,
    FALLBACK_BOX,
    PAPER,
    SEPARATOR,
    UNREADABLE,
    Layout,
    SheetItem,
    _ellipsis,
    contact_sheet,
    grid_sheet,
)

BLUE = (20, 40, 200)


def solid(path, size=(100, 100), colour=BLUE):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def items(tmp_path):
    query = SheetItem(solid(tmp_path / "q.png"), "q.png", None, (20, 20, 60, 60), False)
    results = [
        SheetItem(solid(tmp_path / f"r{i}.png"), f"r{i}.png", 0.9 - i / 10, None, False)
        for i in range(4)
    ]
    return query, results


def test_sheet_is_a_png_k_plus_one_tiles_wide(tmp_path, items):
    query, results = items
    tile = 64
    out = contact_sheet(query, results, tmp_path / "out" / "sheet.png", tile=tile).path
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert (width, height) == Layout(tile).strip_size(len(results))
    assert 5 * tile < width < 6 * tile  # five tiles plus margins and the separator
    assert tile < height < 2 * tile  # one row of tiles plus captions
    narrower = contact_sheet(query, results[:3], tmp_path / "three.png", tile=tile).path
    with Image.open(narrower) as im:
        assert width - im.width == tile + Layout(tile).gap
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sheet.png"]  # no temp left


def test_head_box_is_drawn_scaled_to_the_tile(tmp_path, items):
    query, _ = items
    layout = Layout(200)  # the 100 px image doubles: the box (20..60) lands at 40..120
    with Image.open(contact_sheet(query, [], tmp_path / "s.png", tile=200).path) as im:
        x, y = layout.tile_x(0), layout.margin
        assert im.getpixel((x + 40, y + 80)) == DETECTED_BOX  # left edge
        assert im.getpixel((x + 80, y + 40)) == DETECTED_BOX  # top edge
        assert im.getpixel((x + 80, y + 80)) == BLUE  # inside: the image itself
        assert im.getpixel((x + 20, y + 80)) == BLUE  # outside


def test_fallback_box_is_dashed_in_another_colour(tmp_path):
    item = SheetItem(solid(tmp_path / "a.png"), "a.png", 0.5, (20, 20, 80, 80), True)
    layout = Layout(100)
    with Image.open(contact_sheet(item, [], tmp_path / "s.png", tile=100).path) as im:
        x, y = layout.tile_x(0), layout.margin
        top_edge = [im.getpixel((x + i, y + 20)) for i in range(20, 80)]
    assert FALLBACK_BOX in top_edge and BLUE in top_edge  # dashes and gaps
    assert DETECTED_BOX not in top_edge


def test_unreadable_image_becomes_a_grey_tile(tmp_path, items):
    query, _ = items
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    bad = [SheetItem(broken, "broken.png", 0.4), SheetItem(missing, "missing.png", 0.3)]
    layout = Layout(64)
    written = contact_sheet(query, bad, tmp_path / "s.png", tile=64)
    assert written.unreadable == [
        (broken, "not an image (looks like text/HTML)"),
        (missing, "no such file"),
    ]
    with Image.open(written.path) as im:
        for index in (1, 2):
            x, y = layout.tile_x(index), layout.margin
            assert im.getpixel((x + 2, y + 2)) == UNREADABLE
            tile = im.crop((x, y, x + 64, y + 64))
            assert min(sum(c) for c in tile.getdata()) < 200  # the dark "unreadable" text


def test_non_square_images_are_letterboxed(tmp_path):
    item = SheetItem(solid(tmp_path / "wide.png", size=(200, 100)), "wide.png")
    layout = Layout(100)
    with Image.open(contact_sheet(item, [], tmp_path / "s.png", tile=100).path) as im:
        x, y = layout.tile_x(0), layout.margin
        assert im.getpixel((x + 50, y + 5)) == PAPER
        assert im.getpixel((x + 50, y + 50)) == BLUE


def test_separator_follows_the_query(tmp_path, items):
    query, results = items
    layout = Layout(64)
    with Image.open(contact_sheet(query, results, tmp_path / "s.png", tile=64).path) as im:
        rule_x = layout.tile_x(0) + layout.tile + layout.separator // 2
        assert im.getpixel((rule_x, layout.margin + 32)) == SEPARATOR


def test_long_captions_are_shortened_in_the_middle():
    font = ImageFont.load_default(size=12)
    text = "a/very/long/folder/name/that/goes/on/and/on/character/017.png"
    short = _ellipsis(text, font, 100)
    assert font.getlength(short) <= 100
    assert short.startswith("a/") and short.endswith(".png") and "..." in short
    assert _ellipsis("ok.png", font, 100) == "ok.png"


def test_grid_stacks_strips_and_overwrites(tmp_path, items):
    query, results = items
    out = tmp_path / "grid.png"
    out.write_bytes(b"old")
    layout = Layout(48)
    grid_sheet([(query, results[:2]), (query, results)], out, tile=48)
    narrow, wide = layout.strip_size(2), layout.strip_size(4)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (wide[0], narrow[1] + wide[1])
        # The first strip is narrower: the space right of it stays blank paper.
        assert im.getpixel((wide[0] - layout.margin - 5, layout.margin + 5)) == PAPER
    with pytest.raises(ValueError):
        grid_sheet([], tmp_path / "empty.png")
